"""ExperimentManager: list, load, compare and rank the runs of a runs directory.

>>> from backend.ml.experiment_config import ExperimentManager
>>> manager = ExperimentManager()                       # experiments/runs  # doctest: +SKIP
>>> comparison = manager.compare_runs(["bert_v1_abc123", "distilbert_v1_def456"])  # doctest: +SKIP
>>> comparison["summary"]["f1_macro"]                   # test macro F1 per run   # doctest: +SKIP
>>> best_run = manager.get_best_run("eval/f1_macro")    # a run id  # doctest: +SKIP
>>> f"experiments/runs/{best_run}/final_model"           # doctest: +SKIP
"""

from __future__ import annotations

import difflib
import fnmatch
import itertools
from pathlib import Path

from ..errors import UserError
from ..run_directory import DEFAULT_RUNS_DIR, RunLayout
from .comparison import SeedGroup, config_differences, higher_is_better, rank_runs, seed_groups
from .predictions import align, load_predictions, slice_metrics
from .rundir import RunInfo
from .statistics import (
    bootstrap_confidence_intervals,
    mcnemar_test,
    paired_bootstrap,
    recipe_bootstrap,
)

CI_METRICS = ("accuracy", "f1_macro", "f1_weighted", "f1_biased")


class ExperimentManager:
    """Reads run directories under ``runs_dir``; never imports or starts the trainer.

    Damaged, failed or unfinished runs are listed with their status and reason, never raised.
    """

    def __init__(self, runs_dir: str | Path = DEFAULT_RUNS_DIR, num_resamples: int = 1000,
                 seed: int = 0):
        self.runs_dir = Path(runs_dir)
        self.num_resamples = num_resamples
        self.seed = seed
        self._predictions_cache: dict[str, tuple] = {}

    # ---- finding runs -------------------------------------------------------------------

    def list_runs(self, tag: str | None = None, name: str | None = None,
                  status: str | list[str] | None = None) -> list[RunInfo]:
        """Top-level runs (CV parents, not their folds), oldest first.

        ``tag``: runs carrying this tag; ``name``: experiment name or run id containing the text,
        or matching it as a glob (``bert_*``); ``status``: one status or a list
        (completed, running, failed, interrupted, crashed, incomplete, corrupt); a run whose
        process died while results.json says running is ``crashed``, never ``running``.

        >>> [run.run_id for run in
        ...  manager.list_runs(tag="baseline", status="completed")]  # doctest: +SKIP
        """
        if not self.runs_dir.is_dir():
            return []
        runs = [RunInfo.read(path) for path in sorted(self.runs_dir.iterdir())
                if path.is_dir() and not path.name.startswith(".")]
        statuses = [status] if isinstance(status, str) else status
        selected = []
        for run in runs:
            if tag is not None and tag not in run.tags:
                continue
            if name is not None and not _name_matches(name, run):
                continue
            if statuses is not None and run.status not in statuses:
                continue
            selected.append(run)
        return sorted(selected, key=lambda run: (run.started_at, run.run_id))

    def load_run(self, run_id: str | Path | RunInfo) -> RunInfo:
        """One run by id (``name_abc123``), unique id prefix, fold id (``parent/fold-2``) or path.

        Raises UserError naming the id and the closest existing ones when it does not exist.
        """
        if isinstance(run_id, RunInfo):
            return run_id
        text = str(run_id)
        path = Path(text)
        if path.is_dir() and RunLayout(path).looks_like_a_run():
            return RunInfo.read(path)
        parent, _, fold = text.partition("/")
        if fold:
            fold = fold.split("/")[-1]
            parent_run = self.load_run(parent)
            for candidate in parent_run.folds:
                if candidate.path.name == fold:
                    return candidate
            raise UserError(f"run {parent_run.run_id} has no fold {fold!r}; folds: "
                            f"{', '.join(item.path.name for item in parent_run.folds) or 'none'}")
        directory = self.runs_dir / text
        if text and directory.is_dir():
            return RunInfo.read(directory)
        known = self._run_ids()
        prefixed = [candidate for candidate in known if candidate.startswith(text)] if text else []
        if len(prefixed) == 1:
            return RunInfo.read(self.runs_dir / prefixed[0])
        raise UserError(unknown_run_message(text, known, self.runs_dir, prefixed))

    def _run_ids(self) -> list[str]:
        if not self.runs_dir.is_dir():
            return []
        return sorted(path.name for path in self.runs_dir.iterdir()
                      if path.is_dir() and not path.name.startswith("."))

    # ---- ranking ------------------------------------------------------------------------

    def get_best_run(self, metric: str = "eval/f1_macro", tag: str | None = None,
                     name: str | None = None, higher_is_better_: bool | None = None
                     ) -> str | None:
        """Id of the completed run with the best ``metric`` (``eval/...`` or ``test/...``), or None.

        The id names the run directory: ``f"experiments/runs/{best_run}/final_model"``;
        ``load_run(best_run)`` gives its config, results and paths.

        Loss metrics are minimised, others maximised. CV parents compete with their fold means.
        Raises UserError when no run has the metric at all, listing the metric names that exist.
        """
        metric = metric if "/" in metric else f"eval/{metric}"
        runs = self.list_runs(tag=tag, name=name, status="completed")
        if not runs:
            return None
        scored = [(value, run) for run in runs if (value := run.metric(metric)) is not None]
        if not scored:
            available = sorted({key for run in runs for key in run.scalar_metrics()})
            raise UserError(f"no completed run has the metric {metric!r}"
                            f"{_close(metric, available)}; available: {', '.join(available)}")
        maximise = higher_is_better(metric) if higher_is_better_ is None else higher_is_better_
        _, best = max(scored, key=lambda pair: pair[0] if maximise else -pair[0])
        return best.run_id

    # ---- comparing ----------------------------------------------------------------------

    def compare_runs(self, run_ids: list, metrics: list[str] | None = None,
                     significance_metric: str = "f1_macro", max_significance_pairs: int = 6
                     ) -> dict:
        """Side-by-side view of runs.

        Returns a dict with
        ``runs`` (ids), ``status``, ``summary`` (``{metric: {run_id: value}}``; bare names such as
        ``f1_macro`` are test metrics, ``eval/...``/``test/...`` are explicit),
        ``std`` (fold std for CV runs), ``config_differences`` (``{field: {run_id: value}}``),
        ``per_class`` (test precision/recall/F1 per class), ``confusion_matrices``,
        ``confidence_intervals`` (bootstrap 95% CI of test metrics), ``slices``
        (F1 per outlet leaning, outlet and topic), ``significance`` (paired tests on
        ``significance_metric`` between every pair of the four best runs by its validation
        value, best first), ``recipe_significance`` (two-level bootstrap between the recipes run
        at several seeds on the same splits, :meth:`recipe_test`), ``best``
        (``{metric: run_id}``) and ``problems`` (why a statistic could not be computed for a run).
        """
        runs = [self.load_run(run_id) for run_id in run_ids]
        summary, std = _summary_and_std(runs, metrics)
        best = {}
        for name in summary:
            ranked = rank_runs(runs, name if "/" in name else f"test/{name}")
            if ranked:
                best[name] = ranked[0].run_id
        problems, confidence_intervals, slices = self._prediction_statistics(runs)
        return {
            "runs": [run.run_id for run in runs],
            "status": {run.run_id: run.status for run in runs},
            "reasons": {run.run_id: run.reason for run in runs if run.reason},
            "summary": summary, "std": std,
            "config_differences": config_differences(runs),
            "per_class": {run.run_id: _per_class(run) for run in runs},
            "confusion_matrices": {run.run_id: _confusion(run) for run in runs},
            "label_names": {run.run_id: run.label_names for run in runs},
            "confidence_intervals": confidence_intervals, "slices": slices,
            "significance": self._top_pairs_tested(runs, significance_metric,
                                                   max_significance_pairs),
            "recipe_significance": self._top_recipes_tested(runs, significance_metric,
                                                            max_significance_pairs),
            "best": best, "problems": problems,
        }

    def _prediction_statistics(self, runs: list[RunInfo]
                               ) -> tuple[dict[str, str | None], dict[str, dict], dict[str, dict]]:
        """(why a run has none, bootstrap intervals, slice metrics) from completed runs'
        test predictions."""
        problems: dict[str, str | None] = {}
        confidence_intervals: dict[str, dict] = {}
        slices: dict[str, dict] = {}
        for run in runs:
            if run.status != "completed":
                continue  # leftover predictions of a failed run would look like results
            predictions, reason = self.predictions(run)
            if predictions is None:
                problems[run.run_id] = reason
                continue
            confidence_intervals[run.run_id] = bootstrap_confidence_intervals(
                predictions.labels, predictions.predictions, predictions.label_names,
                [name for name in CI_METRICS if name != "f1_biased"
                 or "Biased" in predictions.label_names],
                num_resamples=self.num_resamples, seed=self.seed)
            slices[run.run_id] = slice_metrics(predictions)
        return problems, confidence_intervals, slices

    def _top_pairs_tested(self, runs: list[RunInfo], metric: str, max_pairs: int) -> list[dict]:
        """Paired tests on ``metric`` between every pair of the four best runs, best first."""
        ranked = rank_runs(runs, f"eval/{metric}") or rank_runs(runs, f"test/{metric}")
        ranked_ids = [run.run_id for run in ranked]
        # Every pair among the top runs, best first: the best run may be a CV run whose test
        # sentences differ from the single-split runs, which must still be compared together.
        pairs = list(itertools.combinations(ranked_ids[:4], 2))
        return [self._significance_entry(first, second, metric)
                for first, second in pairs[:max_pairs]]

    def predictions(self, run: RunInfo):
        """(Predictions, None) or (None, reason), cached per run directory."""
        key = str(run.path)
        if key not in self._predictions_cache:
            self._predictions_cache[key] = load_predictions(run)
        return self._predictions_cache[key]

    def paired_test(self, run_a, run_b, metric: str = "f1_macro") -> dict:
        """Paired bootstrap on ``metric`` and McNemar on accuracy for two runs' test predictions.

        The runs must have been evaluated on the same test sentences (matched by text);
        otherwise UserError says how many sentences differ.

        >>> result = manager.paired_test("bert_v1_abc123", "distilbert_v1_def456")  # doctest: +SKIP
        >>> result["bootstrap"]["p_value"] < 0.05                                   # doctest: +SKIP
        """
        first, second = self.load_run(run_a), self.load_run(run_b)
        loaded = []
        for run in (first, second):
            predictions, reason = self.predictions(run)
            if predictions is None:
                raise UserError(f"{run.run_id}: cannot run a paired test: {reason}")
            loaded.append(predictions)
        labels, predicted_a, predicted_b = align(*loaded)
        metric = metric.split("/")[-1]
        bootstrap = paired_bootstrap(labels, predicted_a, predicted_b, loaded[0].label_names,
                                     metric, num_resamples=max(self.num_resamples, 1000),
                                     seed=self.seed)
        mcnemar = mcnemar_test(labels, predicted_a, predicted_b)
        return {"run_a": first.run_id, "run_b": second.run_id, "n": int(len(labels)),
                "bootstrap": bootstrap, "mcnemar": mcnemar,
                "significant": bool(bootstrap["p_value"] < 0.05)}

    def _significance_entry(self, first: str, second: str, metric: str) -> dict:
        try:
            return self.paired_test(first, second, metric)
        except UserError as error:
            return {"run_a": first, "run_b": second, "error": str(error)}

    def recipe_test(self, group_a: SeedGroup, group_b: SeedGroup,
                    metric: str = "f1_macro") -> dict:
        """Two recipes, each run at several seeds on the same test sentences: the two-level
        bootstrap of their mean ``metric`` over the seeds (sentences and runs resampled).

        Raises UserError when a run has no predictions or the runs were tested on other
        sentences.
        """
        loaded = []
        for run in (*group_a.runs, *group_b.runs):
            predictions, reason = self.predictions(run)
            if predictions is None:
                raise UserError(f"{run.run_id}: cannot compare recipes: {reason}")
            loaded.append(predictions)
        aligned = [align(loaded[0], other) for other in loaded[1:]]
        labels, reference, _ = aligned[0]
        predicted = [reference, *(other for _, _, other in aligned)]
        metric = metric.split("/")[-1]
        bootstrap = recipe_bootstrap(labels, predicted[:len(group_a.runs)],
                                     predicted[len(group_a.runs):], loaded[0].label_names,
                                     metric, num_resamples=max(self.num_resamples, 1000),
                                     seed=self.seed)
        return {"recipe_a": group_a.recipe, "recipe_b": group_b.recipe,
                "seeds_a": group_a.seeds, "seeds_b": group_b.seeds, "n": int(len(labels)),
                "bootstrap": bootstrap, "significant": bool(bootstrap["p_value"] < 0.05)}

    def _top_recipes_tested(self, runs: list[RunInfo], metric: str, max_pairs: int
                            ) -> list[dict]:
        """Two-level tests between every pair of the four best recipes run at several seeds
        on shared splits (by mean test ``metric``, best first)."""
        tested = f"test/{metric.split('/')[-1]}"
        groups = [group for group in seed_groups(runs, tested) if group.fold_seed is not None]
        groups.sort(key=lambda group: group.mean, reverse=higher_is_better(tested))
        entries = []
        for first, second in list(itertools.combinations(groups[:4], 2))[:max_pairs]:
            try:
                entries.append(self.recipe_test(first, second, metric))
            except UserError as error:
                entries.append({"recipe_a": first.recipe, "recipe_b": second.recipe,
                                "error": str(error)})
        return entries

    def all_pairs_significance(self, run_ids: list, metric: str = "f1_macro") -> list[dict]:
        """Paired tests for every pair of ``run_ids`` (errors recorded, not raised)."""
        return [self._significance_entry(a, b, metric)
                for a, b in itertools.combinations([str(item) for item in run_ids], 2)]


def _test_section(run: RunInfo) -> dict:
    section = run.results.get("test")
    return section if isinstance(section, dict) else {}


def _summary_and_std(runs: list[RunInfo], metrics: list[str] | None
                     ) -> tuple[dict[str, dict], dict[str, dict]]:
    """``{metric: {run_id: value}}`` (bare names are test metrics too) and the fold std of the
    metrics that have one."""
    names = set(metrics or [])
    if not metrics:
        for run in runs:
            names |= set(run.scalar_metrics())
    summary: dict[str, dict] = {}
    for name in sorted(names):
        values = {run.run_id: run.metric(name) for run in runs}
        summary[name] = values
        if name.startswith("test/"):
            summary.setdefault(name[5:], values)
    std = {name: {run.run_id: run.metric_std(name) for run in runs}
           for name in sorted(names) if any(run.metric_std(name) is not None for run in runs)}
    return summary, std


def _per_class(run: RunInfo) -> dict:
    """Test per-class scores; for a CV parent, from the folds' summed confusion matrix."""
    per_class = _test_section(run).get("per_class")
    if isinstance(per_class, dict) and per_class:
        return per_class
    matrix, names = _confusion(run), run.label_names
    if not matrix or len(matrix) != len(names):
        return {}
    scores = {}
    for position, name in enumerate(names):
        true_positive = matrix[position][position]
        support = sum(matrix[position])
        predicted = sum(row[position] for row in matrix)
        precision = true_positive / predicted if predicted else 0.0
        recall = true_positive / support if support else 0.0
        f1 = 2 * true_positive / (support + predicted) if support + predicted else 0.0
        scores[name] = {"precision": precision, "recall": recall, "f1": f1, "support": support}
    return scores


def _confusion(run: RunInfo) -> list | None:
    matrix = _test_section(run).get("confusion_matrix")
    if isinstance(matrix, list) and matrix:
        return matrix
    matrix = run.cross_validation.get("test_confusion_matrix")
    return matrix if isinstance(matrix, list) and matrix else None


def _name_matches(pattern: str, run: RunInfo) -> bool:
    candidates = (run.experiment_name, run.run_id)
    if any(character in pattern for character in "*?["):
        return any(fnmatch.fnmatchcase(candidate, pattern) for candidate in candidates)
    return any(pattern in candidate for candidate in candidates)


def _close(name: str, candidates) -> str:
    close = difflib.get_close_matches(name, list(candidates), n=3, cutoff=0.5)
    return f" (did you mean {', '.join(repr(item) for item in close)}?)" if close else ""


def unknown_run_message(run_id: str, known: list[str], runs_dir: Path,
                        prefixed: list[str] | None = None) -> str:
    """'unknown run X in DIR', with the closest ids (or every prefix match when ambiguous)."""
    if prefixed and len(prefixed) > 1:
        return (f"run id {run_id!r} is ambiguous in {runs_dir}; it starts "
                f"{', '.join(prefixed[:10])}")
    close = difflib.get_close_matches(run_id, known, n=5, cutoff=0.4)
    close += [item for item in known if run_id and run_id in item and item not in close][:5]
    if close:
        hint = f"; close matches: {', '.join(close)}"
    elif known:
        hint = f"; {len(known)} run(s) exist, e.g. {', '.join(known[:5])}"
    else:
        hint = "; the directory holds no runs yet"
    return f"unknown run {run_id!r} in {runs_dir}{hint}"
