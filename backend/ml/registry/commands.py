"""``promote`` and ``registry``: move runs between stages and show who did what, when and why."""

from __future__ import annotations

import sys
from pathlib import Path

from ..model_registry import ModelRegistry, RegistryError
from .comparison import compare_with_production, describe_comparison


def resolve_run_dir(reference: str, runs_dir: Path, registry_dir: Path) -> Path:
    """The run directory that ``reference`` names: a stage, a run id or a run directory."""
    from ..inference.loading import resolve_model_path, run_dir_of

    if reference in ("production", "candidate") and not Path(reference).exists():
        return ModelRegistry(registry_dir).run_dir(reference)
    model_path = resolve_model_path(reference, runs_dir)
    run_dir = run_dir_of(model_path)
    if run_dir is None:
        raise RegistryError(f"{reference} is a model directory outside a run; only run "
                            "directories (with results.json and final_model/) can be promoted")
    return run_dir


def promote_command(run_ref: str, stage: str, runs_dir: Path, registry_dir: Path,
                    reason: str = "", require_better: bool = False, metric: str = "f1_macro",
                    alpha: float = 0.05) -> int:
    """Promote a run; with ``require_better`` it must beat production on production's test set.

    >>> promote_command("tiny_3f9a1c", "production", Path("experiments/runs"),
    ...                 Path("experiments/registry"), reason="first model")  # doctest: +SKIP
    0
    """
    run_dir = resolve_run_dir(run_ref, runs_dir, registry_dir).resolve()
    registry = ModelRegistry(registry_dir)
    production = registry.stages().get("production")
    comparison = None
    if production and Path(production["run_dir"]) != run_dir:
        try:
            comparison = compare_with_production(run_dir, registry.run_dir("production"),
                                                 metric, alpha)
            print(describe_comparison(comparison))
        except RegistryError as error:
            if require_better:
                raise
            print(f"warning: no comparison with production recorded: {error}", file=sys.stderr)
        else:
            if require_better and not comparison["candidate_better"]:
                raise RegistryError(f"{run_dir.name} was not promoted to {stage}: it must beat "
                                    f"production {production['run_id']} with p < {alpha} "
                                    "(--require-better); drop the flag to promote it anyway")
    elif require_better and not production:
        print("No production model yet: nothing to beat.")
    entry = registry.promote(run_dir, stage, reason=reason, comparison=comparison)
    replaced = f", replacing {entry['replaced_run_id']}" if entry["replaced_run_id"] else ""
    print(f"{entry['run_id']} is now {stage}{replaced} (by {entry['promoted_by']} at "
          f"{entry['promoted_at']}; registry {registry.path}).")
    return 0


def registry_command(registry_dir: Path) -> int:
    """Print the current stages and the promotion history, newest first."""
    registry = ModelRegistry(registry_dir)
    stages = registry.stages()
    if not stages:
        print(f"The registry {registry.path} is empty: promote a run with "
              "`python run_experiment.py promote RUN_ID --as production`.")
        return 0
    for stage in ("production", "candidate"):
        entry = stages.get(stage)
        test_f1 = entry and entry["metrics"].get("test", {}).get("f1_macro")
        shown = (f"{entry['run_id']}  test F1 macro {test_f1:.4f}" if test_f1 is not None
                 else entry["run_id"]) if entry else "-"
        print(f"{stage:<11} {shown}")
    print("\nhistory (newest first):")
    for entry in reversed(registry.history()):
        reason = f"  \"{entry['reason']}\"" if entry.get("reason") else ""
        print(f"  {entry['promoted_at']}  {entry['stage']:<10} {entry['run_id']}  by "
              f"{entry['promoted_by']}{reason}")
    return 0
