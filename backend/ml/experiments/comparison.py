"""Comparing runs: config differences, headline metrics, a plain-text table, CV aggregation."""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..config import ExperimentConfig
from ..metrics import numeric_items
from .published import is_binary_babe, published_results
from .rundir import RunInfo

# Config fields that always differ between runs and say nothing about the experiment.
IGNORED_CONFIG_FIELDS = ("experiment_name", "description", "output_dir")
TABLE_METRICS = ("test/accuracy", "test/f1_macro", "test/f1_weighted", "test/f1_biased",
                 "eval/f1_macro")


def dotted_fields(config: dict, prefix: str = "") -> dict:
    """``{"training": {"epochs": 3}}`` -> ``{"training.epochs": 3}``, values as they are (lists
    too, so two configs compare field by field; the trackers' ``flatten_config`` turns values
    into scalars for HParams instead).

    >>> dotted_fields({"training": {"epochs": 3}, "tags": ["a"]})
    {'training.epochs': 3, 'tags': ['a']}
    """
    flat = {}
    for key, value in config.items():
        dotted = f"{prefix}{key}"
        if isinstance(value, dict) and value:
            flat.update(dotted_fields(value, dotted + "."))
        else:
            flat[dotted] = value
    return flat


def config_differences(runs: list[RunInfo]) -> dict[str, dict[str, object]]:
    """Only the config fields whose value differs between runs: ``{field: {run_id: value}}``.

    A field one run lacks (older config version) shows as None for it.
    """
    # A run without a readable config.yaml has nothing to compare; it must not make every
    # field look different.
    flat = {run.run_id: dotted_fields(run.config) for run in runs if run.config}
    fields = sorted({key for values in flat.values() for key in values})
    differences = {}
    for name in fields:
        if name.split(".")[0] in IGNORED_CONFIG_FIELDS or name == "sweep":
            continue
        values = {run_id: config.get(name) for run_id, config in flat.items()}
        if len({repr(value) for value in values.values()}) > 1:
            differences[name] = values
    return differences


@dataclass(frozen=True)
class SeedGroup:
    """One recipe run at several seeds: runs whose configs differ only in ``seed`` (and names).

    ``fold_seed`` None: each seed also drew its own splits (the config's seed does unless
    data.split_seed is set), so the spread is what one seed's figure owes to the draw of the
    folds and the training. A number: every run split its data with that seed, so the runs
    share their test sentences and the spread is the training's alone (initialisation, order,
    dropout).
    """

    recipe: str
    metric: str
    runs: tuple[RunInfo, ...]
    """Completed runs that have ``metric``, by seed."""
    fold_seed: int | None = None

    @property
    def seeds(self) -> list[int]:
        return [int(run.config["seed"]) for run in self.runs]

    @property
    def values(self) -> np.ndarray:
        return np.array([run.metric(self.metric) for run in self.runs], dtype=float)

    @property
    def mean(self) -> float:
        return float(self.values.mean())

    @property
    def std(self) -> float:
        """Sample standard deviation over the seeds (ddof=1)."""
        return float(self.values.std(ddof=1))

    @property
    def splits(self) -> str:
        """How the runs' splits relate, in words."""
        if self.fold_seed is None:
            return "splits drawn by each seed"
        return f"the same splits (split seed {self.fold_seed})"


def seed_groups(runs: list[RunInfo], metric: str) -> list[SeedGroup]:
    """The recipes among ``runs`` measured at two or more seeds, in order of first appearance.

    A recipe forms a group over the seeds that drew their own splits and one per split seed
    shared by runs at several seeds; a run whose seed drew its splits can belong to both.

    >>> [(group.recipe, group.seeds) for group in seed_groups(runs, "test/f1_weighted")]
    ... # doctest: +SKIP
    [('babe_minilm_best', [1, 2, 3, 42])]
    """
    # A field added to the schema after a run was made has its default there (new fields
    # default to the earlier behaviour), so the run still matches a newer run of its recipe.
    defaults = dotted_fields(ExperimentConfig().to_dict())
    groups: dict[tuple[str, int | None], list[RunInfo]] = {}
    for run in runs:
        if (run.status != "completed" or not run.config or run.metric(metric) is None
                or not isinstance(run.config.get("seed"), int)):
            continue
        recipe = repr(sorted(
            (name, value) for name, value in {**defaults, **dotted_fields(run.config)}.items()
            if name.split(".")[0] not in (*IGNORED_CONFIG_FIELDS, "seed", "sweep")
            and name != "data.split_seed"))
        if run.fixed_split_seed is None:
            groups.setdefault((recipe, None), []).append(run)
        groups.setdefault((recipe, run.split_seed), []).append(run)
    found = []
    for (_, fold_seed), members in groups.items():
        if len({run.config["seed"] for run in members}) < 2:
            continue
        members.sort(key=lambda run: (run.config["seed"], run.run_id))
        # A seed sweep names its runs <name>__seed-N; the recipe is <name>.
        names = [re.sub(r"__seed-\d+", "", run.experiment_name) for run in members]
        recipe_name = names[0]
        found.append(SeedGroup(recipe_name, metric, tuple(members), fold_seed))
    return found


def describe_seed_group(group: SeedGroup) -> str:
    """``recipe: mean ± sd over N seeds (seeds, splits), lowest to highest``."""
    return (f"{group.recipe}: {group.mean:.4f} ± {group.std:.4f} over {len(group.runs)} seeds "
            f"({', '.join(str(seed) for seed in group.seeds)}; {group.splits}), "
            f"{group.values.min():.4f} to {group.values.max():.4f}")


def describe_recipe_test(test: dict) -> str:
    """One line for a two-level test between recipes (``ExperimentManager.recipe_test``)."""
    if "error" in test:
        return f"{test['recipe_a']} vs {test['recipe_b']}: {test['error']}"
    bootstrap = test["bootstrap"]
    verdict = "significant" if test["significant"] else "not significant"
    return (f"{test['recipe_a']} vs {test['recipe_b']} (seeds "
            f"{', '.join(map(str, test['seeds_a']))} vs {', '.join(map(str, test['seeds_b']))}): "
            f"{bootstrap['difference']:+.4f} [{bootstrap['low']:+.4f}, {bootstrap['high']:+.4f}], "
            f"p = {bootstrap['p_value']:.4f}, {verdict}")


def higher_is_better(metric: str) -> bool:
    """Loss-like metrics are minimised, everything else maximised."""
    return not metric.split("/")[-1].endswith("loss")


def rank_runs(runs: list[RunInfo], metric: str) -> list[RunInfo]:
    """Runs that have ``metric``, best first."""
    scored = [(value, run) for run in runs if (value := run.metric(metric)) is not None]
    sign = -1 if higher_is_better(metric) else 1
    return [run for _, run in sorted(scored, key=lambda pair: (sign * pair[0], pair[1].run_id))]


def format_value(value, std=None, digits: int = 4) -> str:
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "-"
    text = f"{value:.{digits}f}"
    return f"{text}±{std:.{digits}f}" if std is not None else text


def format_comparison_table(run_dirs: list[Path], metrics=TABLE_METRICS,
                            best_metric: str = "eval/f1_macro") -> str:
    """Plain-text table of runs × key metrics and status; ``*`` marks the best run.

    Cross-validation runs show mean±std over folds. Failed or incomplete runs show why.
    Beside binary BABE runs, the published BABE results follow as rows with status
    ``published``.

    >>> print(format_comparison_table([Path("experiments/runs/a_1"), ...]))  # doctest: +SKIP
    """
    runs = [RunInfo.read(Path(path)) for path in run_dirs]
    return format_runs_table(runs, metrics, best_metric)


def format_runs_table(runs: list[RunInfo], metrics=TABLE_METRICS,
                      best_metric: str = "eval/f1_macro") -> str:
    """:func:`format_comparison_table` for runs already read."""
    if not runs:
        return "(no runs)"
    ranked = rank_runs(runs, best_metric) or rank_runs(runs, "test/f1_macro")
    best = ranked[0].run_id if ranked else None
    header = ["", "run", "status"] + list(metrics)
    rows = []
    for run in runs:
        row = ["*" if run.run_id == best else "", run.run_id,
               run.display_status + (" (cv)" if run.is_cross_validation else "")]
        row += [format_value(run.metric(name), run.metric_std(name)) for name in metrics]
        rows.append(row)
    published = published_results() if any(is_binary_babe(run) for run in runs) else []
    for result in published:
        rows.append(["", result.model, "published"]
                    + [format_value(result.metric(name), digits=3) for name in metrics])
    widths = [max(len(str(line[column])) for line in [header] + rows)
              for column in range(len(header))]
    lines = ["  ".join(str(cell).ljust(width) for cell, width in zip(line, widths)).rstrip()
             for line in [header] + rows]
    lines.insert(1, "  ".join("-" * width for width in widths))
    notes = [f"  {run.run_id}: {run.status}: {run.reason}" for run in runs
             if run.status != "completed" and run.reason]
    if published:
        sources = "; ".join(sorted({result.source for result in published}))
        notes.insert(0, f"published: BABE SG2 binary, 5-fold CV means from papers ({sources}), "
                        f"not runs of this project")
    if best:
        ranked_by = best_metric if rank_runs(runs, best_metric) else "test/f1_macro"
        notes.insert(0, f"* best by {ranked_by}")
    tested = f"test/{best_metric.split('/')[-1]}"
    groups = seed_groups(runs, tested)
    if groups:
        notes.append(f"across seeds ({tested}, mean ± sd over seeds):")
        notes += [f"  {describe_seed_group(group)}" for group in groups]
    return "\n".join(lines + notes)


def aggregate_cross_validation(fold_results: list[dict]) -> dict:
    """Per-fold metrics and mean ± std of every scalar eval/test metric over folds.

    ``fold_results`` are the folds' results.json dicts in fold order; folds without test
    metrics (failed) are listed in ``failed_folds`` and left out of the mean. ``std`` is the
    sample standard deviation (ddof=1), 0 for a single fold. The summed test confusion matrix
    of all folds (every sentence counted once) is kept for reports.

    >>> fold = {"eval": {"f1_macro": 0.7}, "test": {"f1_macro": 0.8, "label_names": ["a", "b"]}}
    >>> summary = aggregate_cross_validation([fold, fold])
    >>> summary["mean"]["test/f1_macro"], summary["std"]["test/f1_macro"], summary["num_folds"]
    (0.8, 0.0, 2)
    """
    folds, failed = [], []
    confusion = None
    label_names = None
    for position, results in enumerate(fold_results, start=1):
        number = results.get("fold", position) if isinstance(results, dict) else position
        test = results.get("test") if isinstance(results, dict) else None
        if not isinstance(test, dict) or not test:
            failed.append({"fold": number, "status": (results or {}).get("status", "unknown"),
                           "error": (results or {}).get("error")})
            continue
        eval_section = results.get("eval")
        folds.append({"fold": number,
                      "eval": numeric_items(eval_section if isinstance(eval_section, dict) else {}),
                      "test": numeric_items(test)})
        matrix = test.get("confusion_matrix")
        if isinstance(matrix, list) and matrix:
            matrix = np.asarray(matrix, dtype=int)
            if confusion is None:
                confusion = matrix
            elif confusion.shape == matrix.shape:
                confusion = confusion + matrix
        label_names = label_names or test.get("label_names")
    names = sorted({f"{split}/{key}" for fold in folds for split in ("eval", "test")
                    for key in fold[split]})
    mean, std = {}, {}
    for name in names:
        split, _, key = name.partition("/")
        values = np.array([fold[split][key] for fold in folds if key in fold[split]], dtype=float)
        mean[name] = float(values.mean())
        std[name] = float(values.std(ddof=1)) if len(values) > 1 else 0.0
    summary = {"folds": folds, "mean": mean, "std": std, "num_folds": len(folds)}
    if failed:
        summary["failed_folds"] = failed
    if confusion is not None:
        summary["test_confusion_matrix"] = confusion.tolist()
        summary["label_names"] = label_names
    return summary
