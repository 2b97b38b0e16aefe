"""Hyperparameter search on Optuna (``run_experiment.py tune``), kept away from test data.

>>> from backend.ml.tuning import StudyPlan, tune
>>> summary = tune(StudyPlan(config, "lr", runs_dir=Path("experiments/runs")))  # doctest: +SKIP

Imports the composition root (``run``) to train trials; nothing imports it but the CLI.
"""

from ..lazy_exports import lazy_exports

__all__ = ["StudyPlan", "tune", "tune_nested", "write_study_page"]
__getattr__, __dir__ = lazy_exports(__name__, {
    "StudyPlan": ".study", "tune": ".study", "tune_nested": ".study",
    "write_study_page": ".report"})
