"""Hyperparameter studies on Optuna whose trials never see the data their result is reported on.

A trial trains a normal run directory (tagged with its study and trial) on the search data: the
config's train and validation splits, with the test split removed before any trial starts, and
its value is a validation metric. ``tune`` then confirms the best config on the untouched test
split with several seeds; ``tune --nested`` searches inside each outer cross-validation fold
and scores the fold's choice on its test fold.

>>> plan = StudyPlan(config, "babe_lr", runs_dir=Path("experiments/runs"))  # doctest: +SKIP
>>> summary = tune(plan, workers=2, confirm_seeds=3)  # doctest: +SKIP
"""

from __future__ import annotations

import contextlib
import dataclasses
import io
import itertools
import os
import shutil
import statistics
import subprocess
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..config import ExperimentConfig
from ..data import DataSplits, prepare_cv_folds, prepare_splits
from ..data.splits import SplitData
from ..errors import UserError, resume_command
from ..fileio import atomic_write_json
from ..run import run_experiment
from ..run_directory import RunLayout, read_results_or_empty
from ..training.interruption import RunPruned
from .report import TEST_METRICS, write_study_page
from .space import (
    build_pruner,
    build_sampler,
    search_direction,
    search_metric,
    suggest,
    with_params,
)


class StudyFull(Exception):
    """This trial was asked for while enough trials had already finished or were running."""


@dataclass
class StudyPlan:
    """What a study searches and where its trials, storage and summary go."""

    config: ExperimentConfig
    name: str
    runs_dir: Path
    storage_url: str | None = None
    """Any Optuna RDB URL; None: an SQLite file in ``studies_dir``."""
    launch_worker: Callable[[int, int], list[str]] | None = None
    """(fold, worker index) -> the command line of one worker process (the CLI's own)."""
    say: Callable[[str], None] = print

    @property
    def studies_dir(self) -> Path:
        return Path(self.runs_dir).parent / "studies"

    @property
    def storage(self) -> str:
        if self.storage_url:
            return self.storage_url
        return f"sqlite:///{(self.studies_dir / f'{self.name}.db').resolve()}"

    def study_name(self, fold: int) -> str:
        return f"{self.name}-fold-{fold}" if fold else self.name

    def run_prefix(self, fold: int) -> str:
        return f"{self.name}_fold-{fold}_" if fold else f"{self.name}_"


# ---- the study and its storage -----------------------------------------------------------------

def _sampler_seed(seed: int, fold: int, worker: int, storage, study_name: str) -> int:
    """A seed per (fold, worker, trials already in the study): a resumed study or a second
    worker must not replay the draws of the first (equal seeds draw equal parameters)."""
    import numpy as np

    try:
        existing = len(storage.get_all_trials(storage.get_study_id_from_name(study_name)))
    except KeyError:  # a new study
        existing = 0
    return int(np.random.SeedSequence([seed, fold, worker, existing]).generate_state(1)[0])


def open_study(plan: StudyPlan, fold: int = 0, worker: int = 0):
    """The study of ``fold`` (0: the only one), created or loaded from the plan's storage, with
    a sampler seeded for this ``worker`` and the trials the study already has."""
    import optuna
    from optuna.storages import RDBStorage, RetryHeartbeatStaleTrialCallback

    # Our own line per trial says what Optuna's INFO log would, and a failing trial's error
    # reaches the CLI's handler, which Optuna's WARNING (with a traceback, even for Ctrl-C)
    # would only repeat. Heartbeats are stable in use though still labelled experimental.
    optuna.logging.set_verbosity(optuna.logging.ERROR)
    warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)
    search = plan.config.search
    if not plan.storage_url:
        plan.studies_dir.mkdir(parents=True, exist_ok=True)
    engine = {"connect_args": {"timeout": 60}} if plan.storage.startswith("sqlite") else {}
    try:
        storage = RDBStorage(plan.storage, engine_kwargs=engine,
                             heartbeat_interval=search.heartbeat_seconds,
                             grace_period=2 * search.heartbeat_seconds,
                             heartbeat_stale_trial_callback=RetryHeartbeatStaleTrialCallback(
                                 max_retry=3))
    except Exception as error:  # noqa: BLE001  (SQLAlchemy's many URL and connection errors)
        raise UserError(f"--storage {plan.storage}: cannot open it as an Optuna RDB storage "
                        f"({type(error).__name__}: {error}); give e.g. sqlite:///study.db or "
                        f"postgresql://user:password@host/database") from None
    seed = search.seed if search.seed is not None else plan.config.seed
    name = plan.study_name(fold)
    return optuna.create_study(study_name=name, storage=storage,
                               sampler=build_sampler(search, _sampler_seed(seed, fold, worker,
                                                                           storage, name)),
                               pruner=build_pruner(search),
                               direction=search_direction(plan.config),  # type: ignore[arg-type]
                               load_if_exists=True)


def finished_trials(study) -> list:
    """Completed and pruned trials: the ones a study's trial budget counts."""
    from optuna.trial import TrialState
    return study.get_trials(deepcopy=False, states=(TrialState.COMPLETE, TrialState.PRUNED))


def _finished_or_running(study) -> list:
    """Trials that count, or will once they end: what decides whether another is needed."""
    from optuna.trial import TrialState
    return study.get_trials(deepcopy=False, states=(TrialState.COMPLETE, TrialState.PRUNED,
                                                    TrialState.RUNNING))


def _trials_ahead(study, number: int) -> int:
    return sum(1 for trial in _finished_or_running(study) if trial.number < number)


# ---- one trial -------------------------------------------------------------------------------

def without_test(splits: DataSplits) -> DataSplits:
    """The search data: ``splits`` with no test sentences, so no trial can read them."""
    return dataclasses.replace(splits, test=SplitData([], []))


def search_splits(config: ExperimentConfig, fold: int) -> DataSplits:
    """The data fold ``fold``'s trials train and validate on (0: the config's own splits)."""
    splits = (prepare_cv_folds(config.data, config.seed)[fold - 1] if fold
              else prepare_splits(config.data, config.seed))
    return without_test(splits)


def _drop_checkpoints(run_dir: Path) -> None:
    # A trial keeps final_model/, results and logs; resumable checkpoints of a finished trial
    # are gigabytes over a study and nothing resumes them.
    shutil.rmtree(RunLayout(run_dir).checkpoints, ignore_errors=True)


def _objective(plan: StudyPlan, fold: int, search_splits: DataSplits):
    import optuna

    config, metric = plan.config, search_metric(plan.config)
    study_name = plan.study_name(fold)

    def objective(trial) -> float:
        if _trials_ahead(trial.study, trial.number) >= config.search.trials:
            trial.study.stop()
            trial.set_user_attr("not_run", "the study already had enough trials")
            raise StudyFull(study_name)
        params = suggest(trial, config.search.space)
        run_id = f"{plan.run_prefix(fold)}trial-{trial.number:03d}"
        trial.set_user_attr("run_id", run_id)
        trial_config = with_params(config, params, f"{study_name}_trial",
                                   tags=[f"study:{study_name}", f"trial:{trial.number}"])
        evaluations = itertools.count(1)

        def report(step: int, metrics: dict) -> None:
            index, value = next(evaluations), metrics[metric]
            trial.report(value, index)
            if trial.should_prune():
                raise RunPruned(step, f"validation {metric} {value:.4f} at evaluation {index} "
                                      f"is worse than the pruner's bar")

        tuning = {"study": study_name, "trial": trial.number, "role": "trial",
                  "params": params, "metric": f"eval/{metric}"}
        run_dir = Path(plan.runs_dir) / run_id
        try:
            # A trial's own summary table would bury the one line per trial; results.json
            # holds it all.
            with contextlib.redirect_stdout(io.StringIO()):
                run_experiment(trial_config, plan.runs_dir, run_id=run_id,
                               splits=search_splits, evaluation_hook=report,
                               results_extra={"tuning": tuning})
        except RunPruned as pruned:
            _drop_checkpoints(run_dir)
            raise optuna.TrialPruned(str(pruned)) from None
        _drop_checkpoints(run_dir)
        return float(read_results_or_empty(run_dir)["eval"][metric])

    return objective


def _format_params(params: dict) -> str:
    def value(number):
        return f"{number:.3g}" if isinstance(number, float) else str(number)
    return " ".join(f"{name.split('.')[-1]}={value(number)}" for name, number in params.items())


def _progress_line(plan: StudyPlan, metric: str):
    from optuna.trial import TrialState

    def callback(study, trial) -> None:
        if trial.state == TrialState.FAIL:
            return  # a surplus or failed trial is not a result
        finished = len(finished_trials(study))
        where = f"trial {trial.number:>3} ({finished}/{plan.config.search.trials})"
        if trial.state == TrialState.PRUNED:
            last = max(trial.intermediate_values) if trial.intermediate_values else 0
            plan.say(f"{where} pruned after {last} evaluation(s)     | "
                     f"{_format_params(trial.params)}")
            return
        best = study.best_trial
        plan.say(f"{where} {metric} {trial.value:.4f} | best {best.value:.4f} (trial "
                 f"{best.number}) | {_format_params(trial.params)}")
    return callback


def _stop_when_enough(plan: StudyPlan):
    """Stop this worker once the finished trials, with those other workers are running, make
    the study's number: it asks for no trial that could only be surplus."""
    def callback(study, _trial) -> None:
        if len(_finished_or_running(study)) >= plan.config.search.trials:
            study.stop()
    return callback


def run_worker(plan: StudyPlan, fold: int, search_splits: DataSplits, worker: int = 0) -> None:
    """Run trials of ``fold``'s study in this process until it has ``search.trials``."""
    study = open_study(plan, fold, worker)
    if len(finished_trials(study)) >= plan.config.search.trials:
        return
    timeout = plan.config.search.timeout_minutes
    study.optimize(_objective(plan, fold, search_splits),
                   timeout=timeout * 60 if timeout else None,
                   callbacks=[_stop_when_enough(plan),
                              _progress_line(plan, search_metric(plan.config))],
                   catch=(StudyFull,), gc_after_trial=True)


def _search(plan: StudyPlan, fold: int, search_splits: DataSplits, workers: int):
    """``fold``'s study with its trials done: here, or in ``workers`` processes at once."""
    study = open_study(plan, fold)
    done = len(finished_trials(study))
    plan.say(f"Study {plan.study_name(fold)}: {done}/{plan.config.search.trials} trials "
             f"finished before this run; storage {_redacted(plan.storage)}")
    if workers <= 1 or plan.launch_worker is None:
        run_worker(plan, fold, search_splits)
    else:
        environment = dict(os.environ, OMP_NUM_THREADS=str(max(1, (os.cpu_count() or 1)
                                                                // workers)))
        processes = [subprocess.Popen(plan.launch_worker(fold, index), env=environment)
                     for index in range(workers)]
        try:
            codes = [process.wait() for process in processes]
        except KeyboardInterrupt:  # the workers got the same Ctrl-C; let them stop cleanly
            for process in processes:
                process.wait()
            raise
        if any(codes):
            raise UserError(f"study {plan.study_name(fold)}: worker exit codes {codes}; run the "
                            f"same command again to continue the study")
    return open_study(plan, fold)


def _redacted(url: str) -> str:
    """A storage URL without its password, for printing."""
    if "@" not in url or "://" not in url:
        return url
    scheme, rest = url.split("://", 1)
    credentials, host = rest.rsplit("@", 1)
    if ":" not in credentials:
        return url
    user = credentials.split(":", 1)[0]
    return f"{scheme}://{user}:***@{host}"


# ---- after the search: scored once on data it never read --------------------------------------

def _scored_run(plan: StudyPlan, params: dict, run_id: str, splits: DataSplits, seed: int,
                role: str, study_name: str) -> dict:
    """A run of the chosen config scored on ``splits.test``; an earlier completed one is reused
    (re-running ``tune`` continues where it stopped)."""
    run_dir = Path(plan.runs_dir) / run_id
    results = read_results_or_empty(run_dir)
    if results.get("status") == "completed":
        return results
    if run_dir.exists():
        raise UserError(f"{run_dir} exists but did not complete ({results.get('status')}); "
                        f"remove it (or resume it with `{resume_command(run_dir)}`) and "
                        f"run tune again")
    config = with_params(plan.config, params, f"{study_name}_{role}",
                         tags=[f"study:{study_name}", role], seed=seed)
    tuning = {"study": study_name, "role": role, "params": params, "seed": seed}
    with contextlib.redirect_stdout(io.StringIO()):
        run_experiment(config, plan.runs_dir, run_id=run_id, splits=splits,
                       results_extra={"tuning": tuning})
    return read_results_or_empty(run_dir)


def _mean_sd(values: list[float]) -> dict:
    return {"mean": statistics.fmean(values),
            "sd": statistics.stdev(values) if len(values) > 1 else 0.0, "n": len(values)}


def _trial_rows(study) -> list[dict]:
    return [{"number": trial.number, "state": trial.state.name.lower(), "value": trial.value,
             "params": trial.params, "run_id": trial.user_attrs.get("run_id"),
             "evaluations": len(trial.intermediate_values),
             "seconds": (trial.duration.total_seconds() if trial.duration else None)}
            for trial in study.get_trials(deepcopy=False)
            if not trial.user_attrs.get("not_run")]


def _importances(study) -> dict[str, float]:
    """fANOVA importances of the parameters; empty while too few trials differ to say."""
    import optuna

    try:
        with warnings.catch_warnings():  # e.g. "importances will be equal" on flat studies
            warnings.simplefilter("ignore")
            return dict(optuna.importance.get_param_importances(study))
    except (RuntimeError, ValueError, ZeroDivisionError):
        return {}


def _study_section(study, metric: str) -> dict:
    best = study.best_trial
    return {"name": study.study_name, "metric": f"eval/{metric}",
            "direction": study.direction.name.lower(),
            "best": {"number": best.number, "value": best.value, "params": best.params,
                     "run_id": best.user_attrs.get("run_id")},
            "importances": _importances(study), "trials": _trial_rows(study)}


def _test_metrics(results: dict) -> dict:
    return {name: results["test"][name] for name in TEST_METRICS}


def tune(plan: StudyPlan, workers: int = 1, confirm_seeds: int = 3) -> dict:
    """Search on the validation split, then score the best config on the test split with
    ``confirm_seeds`` seeds. Returns (and writes) the study summary."""
    config, metric = plan.config, search_metric(plan.config)
    splits = prepare_splits(config.data, config.seed)
    study = _search(plan, 0, without_test(splits), workers)
    if not any(trial.value is not None for trial in finished_trials(study)):
        raise UserError(f"study {plan.name}: every trial was pruned; widen search.space or set "
                        f"search.pruner: none")
    section = _study_section(study, metric)
    best = section["best"]
    plan.say(f"\nBest trial {best['number']}: validation {metric} {best['value']:.4f} "
             f"({_format_params(best['params'])}). Confirming on the test split with "
             f"{confirm_seeds} seed(s) ...")
    seeds = [config.seed + offset for offset in range(confirm_seeds)]
    confirmations = []
    for seed in seeds:
        results = _scored_run(plan, best["params"], f"{plan.name}_confirm-seed-{seed}", splits,
                              seed, "confirmation", plan.name)
        confirmations.append({"seed": seed, "run_id": results["experiment_id"],
                              "eval": results["eval"][metric], "test": _test_metrics(results)})
        plan.say(f"  seed {seed}: test {metric if metric in TEST_METRICS else 'f1_macro'} "
                 f"{results['test'].get(metric, results['test']['f1_macro']):.4f}")
    best_config_path = plan.studies_dir / f"{plan.name}.best.yaml"
    summary: dict[str, Any] = {
               "kind": "search", "study": section, "config_name": config.experiment_name,
               "confirmation": {"seeds": seeds, "runs": confirmations, "test": {
                   name: _mean_sd([run["test"][name] for run in confirmations])
                   for name in TEST_METRICS}},
               "best_config": str(best_config_path)}
    best_config = with_params(config, best["params"], f"{config.experiment_name}_tuned")
    best_config = dataclasses.replace(best_config, search=type(config.search)())
    plan.studies_dir.mkdir(parents=True, exist_ok=True)
    best_config.save_yaml(best_config_path)
    return _write_summary(plan, summary)


def tune_nested(plan: StudyPlan, workers: int = 1) -> dict:
    """For each outer fold: search on its training part, score the choice on its test fold."""
    config, metric = plan.config, search_metric(plan.config)
    folds = prepare_cv_folds(config.data, config.seed)
    outer = []
    for number, fold in enumerate(folds, start=1):
        plan.say(f"\n=== outer fold {number}/{len(folds)}: search on its {len(fold.train)} + "
                 f"{len(fold.validation)} training sentences; {len(fold.test)} test sentences "
                 f"held out ===")
        study = _search(plan, number, without_test(fold), workers)
        section = _study_section(study, metric)
        best = section["best"]
        results = _scored_run(plan, best["params"], f"{plan.name}_fold-{number}_outer", fold,
                              config.seed, "outer-test", plan.study_name(number))
        outer.append({"fold": number, "study": section, "run_id": results["experiment_id"],
                      "test": _test_metrics(results)})
        plan.say(f"  fold {number}: chose {_format_params(best['params'])} (validation "
                 f"{metric} {best['value']:.4f}); outer test f1_weighted "
                 f"{results['test']['f1_weighted']:.4f}, f1_macro "
                 f"{results['test']['f1_macro']:.4f}")
    summary = {"kind": "nested", "config_name": config.experiment_name,
               "metric": f"eval/{metric}", "folds": outer,
               "test": {name: _mean_sd([fold["test"][name] for fold in outer])
                        for name in TEST_METRICS}}
    return _write_summary(plan, summary)


def _write_summary(plan: StudyPlan, summary: dict) -> dict:
    summary["storage"] = _redacted(plan.storage)
    summary["written"] = time.strftime("%Y-%m-%dT%H:%M:%S%z")
    path = plan.studies_dir / f"{plan.name}.json"
    atomic_write_json(path, summary)
    summary["page"] = str(write_study_page(summary, plan.studies_dir / f"{plan.name}.html",
                                           Path(plan.runs_dir)))
    atomic_write_json(path, summary)
    return summary
