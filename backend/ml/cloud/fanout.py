"""Several configs (or a sweep) as one cloud launch: one VM per run, ``--max-parallel`` at once,
one total budget, each run recoverable on its own (``cloud sync RUN_ID [--continue]``).

>>> # python run_experiment.py cloud launch a.yaml b.yaml --max-parallel 2 --yes
"""

from __future__ import annotations

import sys
import threading
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from ..errors import UserError
from ..run_directory import RunLayout
from .launch import confirm, launch_run, plan_run, print_dry_run, resolve_project, runs_dir_for
from .pricing import CostError

DEFAULT_MAX_PARALLEL = 4


def _budget(configs) -> float:
    """The launch's total budget: the smallest cloud.max_cost_usd among its configs."""
    return min(config.cloud.max_cost_usd for _, config in configs)


def fan_out_command(configs, runs_dir: Path | None = None, dry_run: bool = False,
                    yes: bool = False, detach: bool = False,
                    max_parallel: int | None = None) -> int:
    """Plan every run of ``configs`` (``(path, config)`` pairs), check the total against the
    budget, then run them in parallel; their run directories go to ``runs_dir`` (None: each
    config's output_dir)."""
    if detach:
        raise UserError("--detach starts one run; launch several runs without it (they are "
                        "watched in parallel), or one config at a time with --detach")
    if max_parallel is not None and max_parallel < 1:
        raise UserError(f"--max-parallel: at least 1 VM at a time, got {max_parallel}")
    max_parallel = max_parallel or DEFAULT_MAX_PARALLEL
    budget = _budget(configs)
    plans = _plan_all(configs, budget, dry_run)
    total = sum(estimate.total[estimate.chosen] for _, _, estimate, _, _ in plans)
    print(f"{len(plans)} cloud runs, at most {max_parallel} VMs at once:")
    for _, run, estimate, _, _ in plans:
        print(f"  {run.run_id:<48} about ${estimate.total[estimate.chosen]:.2f} "
              f"({estimate.hours:.2f} h, {run.spec['gpu_count']} x {run.spec['gpu_type']})")
    print(f"  {'total':<48} about ${total:.2f}; budget (smallest cloud.max_cost_usd) "
          f"${budget:.2f} for all runs and their replacements")
    if dry_run:
        for _, run, _, _, uploads in plans[:1]:
            print_dry_run(run, uploads, None if run.project == "YOUR_PROJECT" else run.project)
        return 0
    if total > budget:
        raise CostError(f"the runs together are estimated at ${total:.2f}, more than "
                        f"cloud.max_cost_usd = ${budget:.2f}; nothing was started. Raise it "
                        f"(--set cloud.max_cost_usd=...) or launch fewer runs.")
    if not yes and not confirm(f"Start {len(plans)} runs at about ${total:.2f}?"):
        print("Nothing was started.")
        return 1
    codes = _run_all(plans, budget, max_parallel, runs_dir)
    _summary(plans, codes, runs_dir)
    return 0 if all(code == 0 for code in codes) else (130 if 130 in codes else 1)


def _plan_all(configs, budget: float, dry_run: bool) -> list[tuple]:
    """(config, run, estimate, remote config, uploads) of each config, sharing ``budget``."""
    plans = []
    for path, config in configs:
        project = resolve_project(config, allow_adc=not dry_run)
        run_id = f"{config.experiment_name}_{uuid.uuid4().hex[:6]}"
        run, estimate, remote_config, uploads = plan_run(config, path,
                                                         project or "YOUR_PROJECT", run_id)
        run.budget_usd = budget
        plans.append((config, run, estimate, remote_config, uploads))
    return plans


def _run_all(plans: list[tuple], budget: float, max_parallel: int,
             runs_dir: Path | None) -> list[int]:
    """Launch and watch every planned run, ``max_parallel`` at a time; their exit codes."""
    runs = [run for _, run, _, _, _ in plans]
    stop = threading.Event()

    def spent_elsewhere(run):  # a VM still up counts with all its maxRunDuration
        return lambda: sum(other.committed_usd() for other in runs if other is not run)

    def sleep(seconds):  # Ctrl-C in the main thread reaches every watcher through this
        if stop.wait(seconds):
            raise KeyboardInterrupt

    def one(plan) -> int:
        config, run, estimate, remote_config, uploads = plan
        log = _prefixed(run.run_id)
        spent = sum(other.spent_usd() for other in runs)
        if spent + estimate.total[estimate.chosen] > budget:
            log(f"not started: the launch has cost about ${spent:.2f}; this run (about "
                f"${estimate.total[estimate.chosen]:.2f}) would pass the budget ${budget:.2f}")
            return 1
        if stop.is_set():
            return 130
        try:
            return launch_run(config, run, remote_config, uploads,
                              runs_dir_for(config, runs_dir), log=log,
                              spent_elsewhere=spent_elsewhere(run), sleep=sleep)
        except UserError as error:
            log(f"failed: {error}")
            return error.exit_code

    with ThreadPoolExecutor(max_workers=max_parallel) as pool:
        futures = [pool.submit(one, plan) for plan in plans]
        try:
            return [future.result() for future in futures]
        except KeyboardInterrupt:
            stop.set()
            print("\nInterrupted: deleting the runs' VMs", file=sys.stderr)
            for future in futures:
                future.cancel()
            return [130]


def _prefixed(run_id: str):
    lock = threading.Lock()

    def log(message: str) -> None:
        with lock:
            for line in str(message).splitlines() or [""]:
                print(f"[{run_id}] {line}", flush=True)
    return log


def _summary(plans, codes, runs_dir: Path | None) -> None:
    from ..experiments import format_comparison_table

    run_dirs = [runs_dir_for(config, runs_dir) / run.run_id for config, run, _, _, _ in plans
                if RunLayout(runs_dir_for(config, runs_dir) / run.run_id).results.is_file()]
    spent = sum(run.spent_usd() for _, run, _, _, _ in plans)
    print(f"\nLaunch cost about ${spent:.2f} over "
          f"{sum(run.vm_hours() for _, run, _, _, _ in plans):.2f} VM-hours.")
    if run_dirs:
        print(format_comparison_table(run_dirs))
    for (_, run, _, _, _), code in zip(plans, codes):
        if code != 0:
            print(f"NOT COMPLETED {run.run_id}: see `cloud logs {run.run_id}`; continue it with "
                  f"`cloud sync {run.run_id} --continue`")
