"""The CLI's ``cloud`` subcommands: ``launch`` (``CONFIG.yaml --cloud``), ``sync``, ``status``,
``logs``, ``cost``, ``teardown``. Launching itself lives in :mod:`.launch`.

>>> # python run_experiment.py experiments/configs/bert_baseline.yaml --cloud --dry-run
>>> # python run_experiment.py cloud launch experiments/configs/bert_baseline.yaml --yes --detach
>>> # python run_experiment.py cloud sync bert_baseline_v1_3f9a1c
"""

from __future__ import annotations

import argparse
import functools
import json
import sys
import uuid
from dataclasses import dataclass, field
from pathlib import Path

from ..cli_flags import add_training_options
from ..errors import UserError
from . import storage
from .launch import (
    confirm,
    default_bucket,
    launch_run,
    plan_run,
    pointer_file,
    print_dry_run,
    resolve_project,
    runs_dir_for,
    watch_and_fetch,
)
from .pricing import check_budget, format_estimate


@dataclass
class CloudTarget:
    """Which configs a cloud command reads (a launch's runs; the others' cloud.project and
    cloud.bucket), the ``--set`` overrides, and the local runs directory (None: the config's)."""

    configs: list[str] = field(default_factory=list)
    overrides: list[str] = field(default_factory=list)
    runs_dir: Path | None = None


def plain_errors(command):
    """Google API and credential failures become one-line UserErrors (no traceback)."""
    @functools.wraps(command)
    def wrapper(*args, **options) -> int:
        from google.api_core import exceptions as api_exceptions
        from google.auth import exceptions as auth_exceptions

        from .compute import CloudError, error_message

        try:
            return command(*args, **options)
        except auth_exceptions.GoogleAuthError as error:
            raise CloudError(f"Google Cloud credentials: {error}. Run `gcloud auth "
                             f"application-default login` (see docs/cloud.md)") from None
        except api_exceptions.GoogleAPICallError as error:
            raise CloudError(f"Google Cloud refused a request: {error_message(error)}") from None
    return wrapper


# ---- configuration --------------------------------------------------------------------------

def _load_configs(target: CloudTarget) -> list:
    """Every run of the given configs (sweeps expanded), each with its source file."""
    from ..config import expand_sweep, load_yaml_config

    configs = []
    for path in target.configs:
        configs += [(path, config)
                    for config in expand_sweep(load_yaml_config(path, target.overrides))]
    return configs


def _settings_config(target: CloudTarget):
    """The config for sync / status / teardown (``--config``): a given one, or defaults."""
    from ..config import apply_overrides, load_yaml_config
    from ..config.loading import config_from_dict

    if target.configs:
        return load_yaml_config(target.configs[0], target.overrides)
    return config_from_dict(apply_overrides({}, list(target.overrides)), "--set")


# ---- cloud launch ---------------------------------------------------------------------------

@plain_errors
def cloud_run_command(target: CloudTarget, run_id: str | None = None, dry_run: bool = False,
                      yes: bool = False, detach: bool = False,
                      max_parallel: int | None = None) -> int:
    """``cloud launch CONFIG`` (``CONFIG --cloud``): estimate, confirm, upload, create the VM,
    wait, sync back.

    Several configs (or a sweep) fan out to several VMs, at most ``max_parallel`` at once.
    """
    configs = _load_configs(target)
    if len(configs) > 1:
        if run_id:
            raise UserError("--run-id names one run; give a single config without a sweep")
        from .fanout import fan_out_command
        return fan_out_command(configs, target.runs_dir, dry_run=dry_run, yes=yes,
                               detach=detach, max_parallel=max_parallel)
    path, config = configs[0]
    project = resolve_project(config, allow_adc=not dry_run)
    run_id = run_id or f"{config.experiment_name}_{uuid.uuid4().hex[:6]}"
    run, estimate, remote_config, uploads = plan_run(config, path, project or "YOUR_PROJECT",
                                                     run_id)
    print(format_estimate(estimate))
    if dry_run:
        return print_dry_run(run, uploads, project)
    check_budget(estimate, config.cloud.max_cost_usd)
    if not yes and not confirm(f"Start run {run_id} at about "
                               f"${estimate.total[estimate.chosen]:.2f}?"):
        print("Nothing was started.")
        return 1
    return launch_run(config, run, remote_config, uploads,
                      runs_dir_for(config, target.runs_dir), detach=detach)


# ---- cloud sync, status, teardown -----------------------------------------------------------

def _location(target: CloudTarget, run_id: str | None = None) -> tuple[str, str, Path]:
    """(project, bucket, runs dir) from the local pointer, a config, --set, or ADC."""
    config = _settings_config(target)
    runs_dir = runs_dir_for(config, target.runs_dir)
    pointer = pointer_file(runs_dir, run_id) if run_id else None
    if pointer and pointer.is_file() and not config.cloud.project:
        saved = json.loads(pointer.read_text(encoding="utf-8"))
        return saved["project"], config.cloud.bucket or saved["bucket"], runs_dir
    project = resolve_project(config)
    return project, config.cloud.bucket or default_bucket(project), runs_dir


@plain_errors
def sync_command(target: CloudTarget, run_id: str, continue_run: bool = False) -> int:
    """``cloud sync RUN_ID``: fetch a cloud run's directory; ``--continue`` (``continue_run``)
    goes on with a stopped one."""
    from .compute import Compute, label_value
    from .orchestrate import (
        check_replacement_budget,
        fetch_results,
        load_launch,
        record_cloud_section,
        set_aside_marker,
        start_vm,
        watch_run,
    )

    project, bucket, runs_dir = _location(target, run_id)
    client = storage.storage_client(project)
    storage.require_bucket(client, bucket)
    run = load_launch(client, bucket, run_id)
    marker = storage.read_json(client, f"{run.url}/cloud/DONE.json")
    run_dir = runs_dir / run_id
    print(f"Syncing {run.url}/run -> {run_dir}")
    fetch_results(client, run.url, run_dir, mirror=bool(marker))  # a finished run: mirror
    continuing = continue_run
    if marker and continuing and marker.get("status") != "completed":
        _explain_failure_and_checkpoint(run, marker, run_dir)
    elif marker:
        record_cloud_section(run_dir, run, marker)
        print(f"Run {run_id}: {marker.get('status')} (finished {marker.get('finished_at')}).")
        return 0 if marker.get("status") == "completed" else 1
    compute = Compute()
    alive = [vm for vm in compute.list_run_instances(project)
             if vm["labels"].get("media-bias-run") == label_value(run_id)]
    running = [vm for vm in alive if vm["status"] not in ("STOPPING", "STOPPED", "TERMINATED")]
    if running:
        vm = running[0]
        print(f"Run {run_id} is still training on {vm['name']} ({vm['zone']}, {vm['status']}); "
              f"this is a partial copy. Sync again later.")
        return 0
    if not continuing:
        print(f"Run {run_id} has no completion marker and no running VM: it was preempted or "
              f"stopped. Continue it from its last checkpoint with `cloud sync {run_id} "
              f"--continue`.")
        return 1
    for vm in alive:
        compute.delete(project, vm["zone"], vm["name"])
    for vm in run.vms:
        _settle_end(vm, client, run)
    if any(item.startswith("cloud.max_cost_usd=") for item in target.overrides):
        run.budget_usd = _settings_config(target).cloud.max_cost_usd  # continue past the budget
    check_replacement_budget(run)
    if marker:
        print(f"The failed VM's marker is kept as {set_aside_marker(client, run, marker)}")
    print(f"Starting a replacement VM for {run_id}; it resumes from the last checkpoint")
    start_vm(compute, run)
    storage.write_json(client, f"{run.url}/cloud/launch.json", run.to_dict())
    return watch_and_fetch(compute, client, run, run_dir, watch_run, fetch_results,
                           record_cloud_section)


def _explain_failure_and_checkpoint(run, marker: dict, run_dir: Path) -> None:
    """What failed, and the checkpoint a replacement VM resumes from (``run_experiment.py
    resume`` continues a failed run from its newest valid checkpoint); without one, refuse:
    the VM would start the training over, which only a new launch should do."""
    from ..checkpoint_files import latest_valid_checkpoint
    from ..run_directory import RunLayout
    from .compute import CloudError

    vm = marker.get("instance") or (run.vms[-1]["instance"] if run.vms else "?")
    failure = (f"Run {run.run_id} failed on VM {vm} (exit code {marker.get('exit_code')}, step "
               f"{marker.get('failed_step') or '?'}): {marker.get('reason') or 'no reason given'}")
    checkpoint = latest_valid_checkpoint(RunLayout(run_dir).checkpoints)
    if checkpoint is None:
        raise CloudError(f"{failure}. It has no valid checkpoint in {run.url}/run/checkpoints, "
                         f"so there is nothing to continue from and nothing was started. To "
                         f"train it from the start, launch its config again: `python "
                         f"run_experiment.py CONFIG --cloud` (the config it ran is "
                         f"{run.url}/inputs/config.yaml)")
    print(f"{failure}.\nIts log: {run.url}/cloud/{vm}.log. Continuing from its newest valid "
          f"checkpoint, {checkpoint.name}.")


@plain_errors
def cloud_status_command(target: CloudTarget) -> int:
    """``cloud status``: the project's training VMs and the runs in its bucket."""
    from .compute import Compute, label_value
    from .orchestrate import runs_in_bucket

    project, bucket, _ = _location(target)
    vms = Compute().list_run_instances(project)
    print(f"Training VMs in {project}: {len(vms) or 'none'}")
    for vm in vms:
        print(f"  {vm['name']:<40} {vm['zone']:<16} {vm['status']:<12} run "
              f"{vm['labels'].get('media-bias-run', '?')}  created {vm['created']}")
    client = storage.storage_client(project)
    try:
        run_ids = runs_in_bucket(client, bucket)
    except Exception as error:  # a missing bucket is information here, not a failure
        print(f"Runs in gs://{bucket}: cannot list ({type(error).__name__}: {error})")
        return 0
    print(f"Runs in gs://{bucket}/runs: {len(run_ids) or 'none'}")
    vm_of_run = {vm["labels"].get("media-bias-run"): vm for vm in vms}
    for run_id in run_ids:
        marker = storage.read_json(client, storage.gs_url(bucket, "runs", run_id, "cloud",
                                                          "DONE.json"))
        run_vm = vm_of_run.get(label_value(run_id))  # labels hold the run id normalised
        print(f"  {run_id:<40} {_cloud_run_state(run_id, marker, run_vm)}")
    return 0


def _cloud_run_state(run_id: str, marker: dict | None, vm: dict | None) -> str:
    """A finished run's marker; else running on its VM; else crashed: its VM is gone and it never
    wrote a marker, the cloud side of a local run whose process died (never shown as running)."""
    if marker:
        return marker.get("status", "?")
    if vm:
        return f"no completion marker; running on {vm['name']} ({vm['status']})"
    return (f"crashed: no completion marker and no VM; fetch what it saved with `cloud sync "
            f"{run_id}`, continue it with `cloud sync {run_id} --continue`")


@plain_errors
def cloud_teardown_command(target: CloudTarget, run_id: str | None = None,
                           yes: bool = False) -> int:
    """``cloud teardown [--run-id ID]``: delete the project's training VMs (or one run's).

    Only instances labelled ``app=media-bias`` are touched; the list is printed before anything
    is deleted, and confirmed unless ``--yes``.
    """
    from .compute import APP_LABEL, RUN_LABEL, Compute, label_value

    project, _, _ = _location(target)
    compute = Compute()
    vms = [vm for vm in compute.list_run_instances(project)
           if vm["labels"].get("app") == APP_LABEL]
    if run_id:
        vms = [vm for vm in vms if vm["labels"].get(RUN_LABEL) == label_value(run_id)]
    if not vms:
        print(f"No training VM in {project}; nothing to delete.")
        return 0
    print(f"Training VMs to delete in {project} (label app={APP_LABEL}):")
    for vm in vms:
        print(f"  {vm['name']:<40} {vm['zone']:<16} {vm['status']:<12} run "
              f"{vm['labels'].get(RUN_LABEL, '?')}")
    if not yes and not confirm(f"Delete these {len(vms)} VM(s)?"):
        print("Nothing was deleted.")
        return 1
    for vm in vms:
        if compute.delete(project, vm["zone"], vm["name"]):
            print(f"deleted {vm['name']} ({vm['zone']}, was {vm['status']})")
        else:
            print(f"{vm['name']} was already being deleted")
    print(f"{len(vms)} VM(s) deleted. Runs stay in Cloud Storage; fetch them with `cloud sync "
          f"RUN_ID`.")
    return 0


# ---- cloud logs, cost ---------------------------------------------------------------------

def _log_urls(run) -> list[tuple[str, str]]:
    return [(vm["instance"], f"{run.url}/cloud/{vm['instance']}.log") for vm in run.vms]


@plain_errors
def cloud_logs_command(target: CloudTarget, run_id: str, follow: bool = False, sleep=None,
                       poll_seconds: float = 15.0) -> int:
    """``cloud logs RUN_ID [--follow]``: the VMs' startup and training log from the bucket, and
    the serial port output of each VM that still exists.

    The VM uploads its log at every sync (``SYNC_INTERVAL``) once its agent is installed, so
    the bucket shows nothing of the first ~15 minutes (install, driver wait); the serial port
    (``instances.getSerialPortOutput``) does. ``--follow`` shows new lines of both, each part
    once, until the completion marker appears.
    """
    import time

    from .compute import Compute
    from .orchestrate import load_launch

    sleep = sleep or time.sleep
    project, bucket, _ = _location(target, run_id)
    client = storage.storage_client(project)
    compute = Compute()
    shown: dict[str, int] = {}
    serial = _SerialPorts(compute, project)
    while True:
        run = load_launch(client, bucket, run_id)  # a replacement VM adds a log
        for instance, url in _log_urls(run):
            text = storage.read_text(client, url) or ""
            if len(text) > shown.get(instance, 0):
                if instance not in shown:
                    print(f"==> {url} <==")
                sys.stdout.write(text[shown.get(instance, 0):])
                sys.stdout.flush()
                shown[instance] = len(text)
        for vm in run.vms:
            serial.show_new(vm)
        marker = storage.read_json(client, f"{run.url}/cloud/DONE.json")
        if not follow or marker:
            if not shown and not serial.headed:
                print(f"No log of {run_id} in {run.url}/cloud/ yet (the VM uploads it at its "
                      f"first sync).")
            if marker:
                print(f"==> run {run_id}: {marker.get('status')} <==")
            return 0
        sleep(poll_seconds)


class _SerialPorts:
    """What ``cloud logs`` has shown of each VM's serial port: the next byte offset to ask for,
    and no more questions once the VM is gone (Compute Engine answers 404)."""

    def __init__(self, compute, project: str):
        self.compute, self.project = compute, project
        self.offsets: dict[str, int] = {}
        self.gone: set[str] = set()
        self.headed: set[str] = set()

    def show_new(self, vm: dict) -> None:
        name = vm["instance"]
        if name in self.gone or vm.get("ended_at"):
            return
        output = self.compute.serial_output(self.project, vm["zone"], name,
                                            self.offsets.get(name, 0))
        if output is None:
            self.gone.add(name)
            return
        text, self.offsets[name] = output
        if text:
            if name not in self.headed:
                print(f"==> serial port 1 of {name} ({vm['zone']}) <==")
                self.headed.add(name)
            sys.stdout.write(text)
            sys.stdout.flush()


def _settle_end(vm: dict, client, run) -> None:
    """A VM that is gone without a recorded end: its log's last upload is when it last ran."""
    if vm.get("ended_at"):
        return
    bucket_name, name = storage.parse_gs_url(f"{run.url}/cloud/{vm['instance']}.log")
    blob = client.bucket(bucket_name).get_blob(name)
    if blob is not None and blob.updated is not None:
        vm["ended_at"] = blob.updated.isoformat(timespec="seconds")


@plain_errors
def cloud_cost_command(target: CloudTarget, run_id: str) -> int:
    """``cloud cost RUN_ID``: VM-hours and dollars so far, per VM, next to the estimate."""
    from .compute import Compute
    from .orchestrate import load_launch, vm_hours

    project, bucket, _ = _location(target, run_id)
    client = storage.storage_client(project)
    run = load_launch(client, bucket, run_id)
    alive = {vm["name"] for vm in Compute().list_run_instances(project)
             if vm["status"] not in ("STOPPING", "TERMINATED")}
    rate = run.hourly_usd()
    kind = run.estimate.get("chosen", "?") if run.estimate else "?"
    print(f"Cost of {run_id} so far, at ${rate:.4f}/h ({kind}: machine, GPUs, disk and "
          f"external IP from the launch estimate):")
    for vm in run.vms:
        if vm["instance"] not in alive:
            _settle_end(vm, client, run)
        state = "running" if vm["instance"] in alive else "ended"
        hours = vm_hours(vm)
        print(f"  {vm['instance']:<36} {vm['zone']:<16} {state:<8} {hours:7.2f} h  "
              f"${hours * rate:8.2f}")
    print(f"  {'total':<62}{run.vm_hours():7.2f} h  ${run.spent_usd():8.2f}")
    if run.estimate:
        estimate = float(run.estimate["total"][run.estimate["chosen"]])
        print(f"  estimate at launch: ${estimate:.2f} ({float(run.estimate['hours']):.2f} h); "
              f"budget (cloud.max_cost_usd): "
              + (f"${run.budget_usd:.2f}" if run.budget_usd is not None else "none recorded"))
    print("List prices; the billing report (Billing > Reports, label media-bias-run) has the "
          "charged figure.")
    return 0


# ---- the command line ----------------------------------------------------------------------

def _one_config(path: str) -> list[str]:
    # The cloud commands read the config list that CONFIG.yaml positionals used to fill.
    return [path]


def _add_cloud_settings(parser: argparse.ArgumentParser, runs_dir: bool) -> None:
    parser.add_argument("--config", dest="configs", type=_one_config, default=[],
                        metavar="CONFIG.yaml",
                        help="take cloud.project and cloud.bucket from this config")
    parser.add_argument("--set", action="append", default=[], metavar="SECTION.FIELD=VALUE",
                        help="override a config field, e.g. --set cloud.project=ID")
    if runs_dir:
        parser.add_argument("--runs-dir", dest="output_dir", type=Path, metavar="DIR",
                            help="the local runs directory (default: the config's output_dir, "
                            "experiments/runs)")
    else:
        # The cloud commands' shared project lookup reads it; these commands write no run.
        parser.set_defaults(output_dir=None)


def add_cloud_subcommand(sub) -> None:
    """`cloud launch|status|logs|cost|sync|teardown` on the CLI's subparsers."""
    cloud = sub.add_parser("cloud", help="train on GCP GPU VMs and look after those runs "
                           "(see docs/cloud.md)", description="Cloud runs on GCP Compute Engine; "
                           "see docs/cloud.md.")
    commands = cloud.add_subparsers(dest="cloud_command", required=True,
                                    metavar="{launch,status,logs,cost,sync,teardown}")

    launch = commands.add_parser("launch", help="train configs on GPU VMs (cost estimate first)",
                                 description="Same as `run_experiment.py CONFIG.yaml ... --cloud`.")
    launch.set_defaults(handler=_cloud_launch)
    add_training_options(launch)
    launch.add_argument("--yes", action="store_true", help="do not ask to confirm the cost")
    launch.add_argument("--detach", action="store_true",
                        help="return once the VM runs; fetch results later with `cloud sync`")
    launch.add_argument("--max-parallel", type=int, metavar="N",
                        help="with several configs or a sweep: VMs at once (default 4)")

    status = commands.add_parser("status", help="the project's training VMs and cloud runs")
    status.set_defaults(handler=_cloud_status)
    _add_cloud_settings(status, runs_dir=False)

    logs = commands.add_parser("logs", help="a cloud run's VM log from the bucket")
    logs.set_defaults(handler=_cloud_logs)
    logs.add_argument("cloud_logs", metavar="RUN_ID")
    logs.add_argument("--follow", action="store_true", help="keep printing until the run ends")
    _add_cloud_settings(logs, runs_dir=True)

    cost = commands.add_parser("cost", help="a cloud run's VM-hours and cost so far, next to "
                               "the estimate")
    cost.set_defaults(handler=_cloud_cost)
    cost.add_argument("cloud_cost", metavar="RUN_ID")
    _add_cloud_settings(cost, runs_dir=True)

    sync = commands.add_parser("sync", help="fetch a cloud run's results; --continue restarts a "
                               "stopped one")
    sync.set_defaults(handler=_cloud_sync)
    sync.add_argument("sync", metavar="RUN_ID")
    sync.add_argument("--continue", dest="cloud", action="store_true",
                      help="a preempted or stopped run: continue it from its last checkpoint on "
                      "a replacement VM")
    _add_cloud_settings(sync, runs_dir=True)

    teardown = commands.add_parser("teardown", help="delete the project's training VMs (or one "
                                   "run's)")
    teardown.set_defaults(handler=_cloud_teardown)
    teardown.add_argument("--run-id", metavar="ID", help="only this run's VMs")
    teardown.add_argument("--yes", action="store_true", help="do not ask to confirm")
    _add_cloud_settings(teardown, runs_dir=False)


def _cloud_target(args):
    return CloudTarget(configs=list(args.configs or []), overrides=list(args.set or []),
                       runs_dir=args.output_dir)


def _cloud_launch(args) -> int:
    return cloud_run_command(_cloud_target(args), run_id=args.run_id, dry_run=args.dry_run,
                             yes=args.yes, detach=args.detach, max_parallel=args.max_parallel)


def _cloud_status(args) -> int:
    return cloud_status_command(_cloud_target(args))


def _cloud_logs(args) -> int:
    return cloud_logs_command(_cloud_target(args), args.cloud_logs, follow=args.follow)


def _cloud_cost(args) -> int:
    return cloud_cost_command(_cloud_target(args), args.cloud_cost)


def _cloud_sync(args) -> int:
    return sync_command(_cloud_target(args), args.sync, continue_run=args.cloud)


def _cloud_teardown(args) -> int:
    return cloud_teardown_command(_cloud_target(args), run_id=args.run_id, yes=args.yes)
