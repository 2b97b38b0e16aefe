"""The CLI's ``cloud`` subcommands: ``launch`` (``CONFIG.yaml --cloud``), ``sync``, ``status``,
``logs``, ``cost``, ``teardown``.

>>> # python run_experiment.py experiments/configs/bert_baseline.yaml --cloud --dry-run
>>> # python run_experiment.py cloud launch experiments/configs/bert_baseline.yaml --yes --detach
>>> # python run_experiment.py cloud sync bert_baseline_v1_3f9a1c
"""

from __future__ import annotations

import functools
import json
import os
import re
import sys
import tempfile
import uuid
from pathlib import Path
from typing import Literal, overload

from ..errors import ConfigError, UserError
from ..fileio import atomic_write_json
from . import storage
from .catalog import candidate_zones, check_machine_and_gpu
from .pricing import check_budget, estimate_cost, format_estimate
from .startup import WANDB_API_KEY_SECRET

DEFAULT_RUNS_DIR = Path("experiments/runs")
# Published BABE sizes, for pricing without the files at hand (filter_no_agreement drops ~15%).
BABE_SIZES = {"SG1": 3700, "SG2": 3673}
_BUCKET_NAME = re.compile(r"^[a-z0-9][a-z0-9._-]{1,61}[a-z0-9]$")


def plain_errors(command):
    """Google API and credential failures become one-line UserErrors (no traceback)."""
    @functools.wraps(command)
    def wrapper(args, **options) -> int:
        from google.api_core import exceptions as api_exceptions
        from google.auth import exceptions as auth_exceptions

        from .compute import CloudError, error_message

        try:
            return command(args, **options)
        except auth_exceptions.GoogleAuthError as error:
            raise CloudError(f"Google Cloud credentials: {error}. Run `gcloud auth "
                             f"application-default login` (see docs/cloud.md)") from None
        except api_exceptions.GoogleAPICallError as error:
            raise CloudError(f"Google Cloud refused a request: {error_message(error)}") from None
    return wrapper


# ---- configuration --------------------------------------------------------------------------

def _load_configs(args) -> list:
    """Every run of the given configs (sweeps expanded), each with its source file."""
    from ..config import expand_sweep, load_yaml_config

    configs = []
    for path in args.configs:
        configs += [(path, config) for config in expand_sweep(load_yaml_config(path, args.set))]
    return configs


def _settings_config(args):
    """The config for sync / status / teardown (``--config``): a given one, or defaults."""
    from ..config import apply_overrides, load_yaml_config
    from ..config.loading import config_from_dict

    if args.configs:
        return load_yaml_config(args.configs[0], args.set)
    return config_from_dict(apply_overrides({}, list(args.set or [])), "--set")


def cloud_problems(config) -> list[str]:
    """Every problem of the config as a cloud run, with dotted paths."""
    cloud = config.cloud
    problems = check_machine_and_gpu(cloud)
    if cloud.bucket is not None and not _BUCKET_NAME.match(cloud.bucket):
        problems.append(f"cloud.bucket: {cloud.bucket!r} is not a valid bucket name (3-63 "
                        f"lowercase letters, digits, '-', '_' and '.')")
    if config.training.device in ("cpu", "mps"):
        problems.append(f"training.device: {config.training.device!r} would leave the GPU idle on "
                        f"the VM; use auto or cuda (--set training.device=auto)")
    if config.logging.wandb and not cloud.cloud_platform_scope:
        problems.append("cloud.cloud_platform_scope: logging.wandb needs the W&B key from Secret "
                        "Manager, which the VM can read only with the cloud-platform scope; set "
                        "cloud.cloud_platform_scope: true (docs/cloud.md, W&B on the VM) or "
                        "logging.wandb: false")
    if config.data.cv_folds:
        problems.append("data.cv_folds: cross-validation runs are not supported in the cloud yet; "
                        "run the folds locally or set data.cv_folds to 0")
    return problems


@overload
def resolve_project(config, allow_adc: Literal[True] = True) -> str: ...
@overload
def resolve_project(config, allow_adc: bool) -> str | None: ...


def resolve_project(config, allow_adc: bool = True) -> str | None:
    """cloud.project, then GOOGLE_CLOUD_PROJECT, then the Application Default Credentials'.

    None only without ``allow_adc``: the credentials either name a project or raise UserError.
    """
    project = config.cloud.project or os.environ.get("GOOGLE_CLOUD_PROJECT") \
        or os.environ.get("CLOUDSDK_CORE_PROJECT")
    if project or not allow_adc:
        return project
    import google.auth
    from google.auth.exceptions import DefaultCredentialsError

    try:
        _, project = google.auth.default()
    except DefaultCredentialsError:
        raise UserError("no Google Cloud credentials: run `gcloud auth application-default "
                        "login` (see docs/cloud.md)") from None
    if not project:
        raise UserError("no GCP project: set cloud.project (or --set cloud.project=ID)")
    return project


def default_bucket(project: str) -> str:
    return f"{project}-media-bias-runs"


def split_sizes_for(config) -> tuple[int, int, int, str]:
    """(train, validation, test) sentence counts, and how they were found."""
    from ..data.splits import split_sizes

    data = config.data
    if data.dataset == "demo" or (data.path and Path(data.path).expanduser().exists()) or \
            (data.dataset == "babe" and not data.path and os.environ.get("BABE_DATA_DIR")):
        from ..data import prepare_splits
        try:
            splits = prepare_splits(data, config.seed)
            return len(splits.train), len(splits.validation), len(splits.test), "counted"
        except UserError:
            pass
    total = BABE_SIZES.get(data.subset, 3673)
    if data.filter_no_agreement:
        total = int(total * 0.85)
    if data.max_samples:
        total = min(total, data.max_samples)
    train, validation, test = split_sizes(total, data.train_split, data.validation_split)
    return train, validation, test, "published BABE size"


# ---- cloud launch ---------------------------------------------------------------------------

def _confirm(question: str) -> bool:
    if not sys.stdin.isatty():
        raise UserError("cannot ask for confirmation (no terminal); add --yes to accept the "
                        "cost estimate")
    return input(f"{question} [y/N] ").strip().lower() in ("y", "yes")


def _runs_dir(args, config) -> Path:
    return Path(args.output_dir or config.output_dir or DEFAULT_RUNS_DIR)


def _pointer(runs_dir: Path, run_id: str) -> Path:
    # Hidden, so run listings skip it; lets `cloud sync RUN_ID` find the project and bucket.
    return runs_dir / ".cloud" / f"{run_id}.json"


def plan_run(config, config_path: str, project: str, run_id: str):
    """Validate, price and describe a cloud run; no call to GCP.

    Returns ``(run, estimate, remote_config, uploads)``.
    """
    from ..run_directory import source_provenance
    from .compute import service_account_email
    from .orchestrate import CloudRun, vm_config

    problems = cloud_problems(config)
    if problems:
        raise ConfigError(config_path, problems)
    train, validation, test, _ = split_sizes_for(config)
    estimate = estimate_cost(config, train, validation, test)
    remote_config, uploads = vm_config(config)
    cloud = config.cloud
    spec = {"project": project, "run_id": run_id, "bucket": cloud.bucket or default_bucket(project),
            "machine_type": cloud.machine_type, "gpu_type": cloud.gpu_type,
            "gpu_count": cloud.gpu_count, "preemptible": cloud.preemptible,
            "boot_disk_gb": cloud.boot_disk_gb, "image_family": cloud.image_family,
            "image_project": cloud.image_project, "max_run_hours": cloud.max_run_hours,
            "wandb_secret": WANDB_API_KEY_SECRET if config.logging.wandb else None,
            "service_account": cloud.service_account or service_account_email(project),
            "cloud_platform_scope": cloud.cloud_platform_scope}
    launch_source = {key: value for key, value in source_provenance().items()
                     if key in ("git_commit", "git_branch", "git_dirty")}
    run = CloudRun(run_id=run_id, project=project, region=cloud.region, bucket=spec["bucket"],
                   zones=candidate_zones(cloud), spec=spec, estimate=estimate.to_dict(),
                   budget_usd=cloud.max_cost_usd, source=launch_source)
    return run, estimate, remote_config, uploads


def _check_image(run, compute=None) -> str:
    """Resolve the image family (``images.getFromFamily``); a clear error when it is retired."""
    from google.auth.exceptions import DefaultCredentialsError

    from .compute import Compute

    family, image_project = run.spec["image_family"], run.spec["image_project"]
    try:
        image = (compute or Compute()).image_from_family(image_project, family)
    except DefaultCredentialsError:
        return f"image family {image_project}/{family}: not checked (no credentials)"
    return f"image family {image_project}/{family}: {image['name']} ({image['state']})"


@plain_errors
def cloud_run_command(args) -> int:
    """``cloud launch CONFIG`` (``CONFIG --cloud``): estimate, confirm, upload, create the VM,
    wait, sync back.

    Several configs (or a sweep) fan out to several VMs, at most ``--max-parallel`` at once.
    """
    configs = _load_configs(args)
    if len(configs) > 1:
        if args.run_id:
            raise UserError("--run-id names one run; give a single config without a sweep")
        from .fanout import fan_out_command
        return fan_out_command(args, configs)
    path, config = configs[0]
    project = resolve_project(config, allow_adc=not args.dry_run)
    run_id = args.run_id or f"{config.experiment_name}_{uuid.uuid4().hex[:6]}"
    run, estimate, remote_config, uploads = plan_run(config, path, project or "YOUR_PROJECT",
                                                     run_id)
    print(format_estimate(estimate))
    if args.dry_run:
        return _print_dry_run(run, uploads, project)
    check_budget(estimate, config.cloud.max_cost_usd)
    if not args.yes and not _confirm(f"Start run {run_id} at about "
                                     f"${estimate.total[estimate.chosen]:.2f}?"):
        print("Nothing was started.")
        return 1
    return _launch(args, config, run, remote_config, uploads)


def _print_dry_run(run, uploads, project) -> int:
    from .orchestrate import body_for, torch_build_for

    zone = run.zones[0] if run.zones else f"{run.region}-a"
    print("\n" + (_check_image(run) if project else
                  f"image family {run.spec['image_project']}/{run.spec['image_family']}: not "
                  f"checked (no project)"))
    choice = torch_build_for(run.spec)
    print(f"torch {choice.torch_version} build: {choice.build.name} from "
          f"{choice.build.index_url}, because {choice.reason}")
    print(f"\nInstance request (zone {zone}; on stockout then {', '.join(run.zones[1:]) or '-'})"
          f", POST compute/v1/projects/{run.project}/zones/{zone}/instances:")
    print(json.dumps(body_for(run, zone, 0), indent=2))
    print(f"\nUploads to {run.url}/: code.tar.gz, inputs/config.yaml"
          + "".join(f", inputs/{name}" for _, name in uploads[:5])
          + (f" and {len(uploads) - 5} more" if len(uploads) > 5 else ""))
    if not project:
        print("(no project configured: set cloud.project; YOUR_PROJECT stands in for it)")
    print("Nothing was created (--dry-run).")
    return 0


def _launch(args, config, run, remote_config, uploads, detach: bool | None = None,
            log=print, spent_elsewhere=lambda: 0.0, sleep=None) -> int:
    """Upload, create the VM and (unless detached) watch it and fetch the results."""
    from .compute import Compute
    from .orchestrate import (
        fetch_results,
        record_cloud_section,
        start_vm,
        upload_inputs,
        watch_run,
    )

    client = storage.storage_client(run.project)
    storage.require_bucket(client, run.bucket)
    compute = Compute()
    log(_check_image(run, compute))
    run.zones = _offering_zones(compute, run, config.cloud, log)
    runs_dir = _runs_dir(args, config)
    log(f"Uploading to {run.url}/")
    with tempfile.TemporaryDirectory() as work:
        upload_inputs(client, run, remote_config, uploads, Path(work), log=log)
    atomic_write_json(_pointer(runs_dir, run.run_id), {"project": run.project,
                                                       "bucket": run.bucket})
    log("Creating the VM")
    try:
        start_vm(compute, run, log=log, spent_elsewhere=spent_elsewhere)
    finally:
        storage.write_json(client, f"{run.url}/cloud/launch.json", run.to_dict())
    if args.detach if detach is None else detach:
        vm = run.vms[-1]
        log(f"\nDetached. The VM deletes itself when training ends, and after "
            f"{config.cloud.max_run_hours:g} h at the latest.\n"
            f"  progress:  python run_experiment.py cloud logs {run.run_id} --follow\n"
            f"  cost:      python run_experiment.py cloud cost {run.run_id}\n"
            f"  results:   python run_experiment.py cloud sync {run.run_id}\n"
            f"  stop now:  python run_experiment.py cloud teardown --run-id {run.run_id}\n"
            f"  VM:        {vm['instance']} in {vm['zone']}")
        return 0
    return _watch_and_fetch(compute, client, run, runs_dir / run.run_id,
                            watch_run, fetch_results, record_cloud_section, log=log,
                            spent_elsewhere=spent_elsewhere, sleep=sleep)


def _offering_zones(compute, run, cloud, log=print) -> list[str]:
    """The zones to try, checked against what the Compute API says offers the GPU now."""
    from .compute import CapacityError

    offered = compute.zones_offering(run.project, run.region, cloud.gpu_type)
    if cloud.zones:
        zones = [zone for zone in cloud.zones if zone in offered]
        for zone in cloud.zones:
            if zone not in offered:
                log(f"  skipping {zone}: it does not offer {cloud.gpu_type}")
    else:
        zones = [zone for zone in run.zones if zone in offered] + \
                [zone for zone in offered if zone not in run.zones]
    if not zones:
        raise CapacityError(f"no zone of {run.region} offers {cloud.gpu_type} (the Compute API "
                            f"lists: {', '.join(offered) or 'none'}); choose another "
                            f"cloud.region or cloud.gpu_type")
    return zones


def _watch_and_fetch(compute, client, run, run_dir: Path, watch_run, fetch_results,
                     record_cloud_section, log=print, spent_elsewhere=lambda: 0.0,
                     sleep=None) -> int:
    import time

    from .retrying import NetworkLost

    log(f"Waiting for {run.run_id} (Ctrl-C deletes the VM; the run stays in {run.url})")
    network_lost = False
    try:
        marker = watch_run(compute, client, run, log=log, spent_elsewhere=spent_elsewhere,
                           sleep=sleep or time.sleep)
    except NetworkLost:
        network_lost = True  # nothing reaches the bucket now; launch.json lists the VM already
        raise
    except KeyboardInterrupt:
        print(f"\nInterrupted: the VM was deleted. What was synced is in {run.url}/run; fetch "
              f"it with `cloud sync {run.run_id}`, continue it with `cloud sync {run.run_id} "
              f"--continue`.",
              file=sys.stderr)
        fetch_results(client, run.url, run_dir, log=log)
        return 130
    finally:
        if not network_lost:
            storage.write_json(client, f"{run.url}/cloud/launch.json", run.to_dict())
    log(f"Run {run.run_id} {marker.get('status')} on the VM; fetching the results")
    fetch_results(client, run.url, run_dir, log=log, mirror=True)
    record_cloud_section(run_dir, run, marker)
    log(f"  VM-hours {run.vm_hours():.2f}, cost about ${run.spent_usd():.2f} (estimate "
        f"${float(run.estimate['total'][run.estimate['chosen']]) if run.estimate else 0:.2f})")
    if marker.get("status") != "completed":
        last = run.vms[-1]["instance"] if run.vms else "vm"
        reason = f": {marker['reason']}" if marker.get("reason") else ""
        print(f"Training failed on the VM (exit code {marker.get('exit_code')}){reason}; its "
              f"log: {run.url}/cloud/{last}.log", file=sys.stderr)
        return 1
    log(f"Results: {run_dir}")
    return 0


# ---- cloud sync, status, teardown -----------------------------------------------------------

def _location(args, run_id: str | None = None) -> tuple[str, str, Path]:
    """(project, bucket, runs dir) from the local pointer, a config, --set, or ADC."""
    config = _settings_config(args)
    runs_dir = _runs_dir(args, config)
    if run_id and _pointer(runs_dir, run_id).is_file() and not config.cloud.project:
        saved = json.loads(_pointer(runs_dir, run_id).read_text(encoding="utf-8"))
        return saved["project"], config.cloud.bucket or saved["bucket"], runs_dir
    project = resolve_project(config)
    return project, config.cloud.bucket or default_bucket(project), runs_dir


@plain_errors
def sync_command(args) -> int:
    """``cloud sync RUN_ID``: fetch a cloud run's directory; ``--continue`` goes on with a stopped
    one."""
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

    run_id = args.sync
    project, bucket, runs_dir = _location(args, run_id)
    client = storage.storage_client(project)
    storage.require_bucket(client, bucket)
    run = load_launch(client, bucket, run_id)
    marker = storage.read_json(client, f"{run.url}/cloud/DONE.json")
    run_dir = runs_dir / run_id
    print(f"Syncing {run.url}/run -> {run_dir}")
    fetch_results(client, run.url, run_dir, mirror=bool(marker))  # a finished run: mirror
    continuing = getattr(args, "cloud", False)
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
    if any(item.startswith("cloud.max_cost_usd=") for item in args.set or []):
        run.budget_usd = _settings_config(args).cloud.max_cost_usd  # continue past the budget
    check_replacement_budget(run)
    if marker:
        print(f"The failed VM's marker is kept as {set_aside_marker(client, run, marker)}")
    print(f"Starting a replacement VM for {run_id}; it resumes from the last checkpoint")
    start_vm(compute, run)
    storage.write_json(client, f"{run.url}/cloud/launch.json", run.to_dict())
    return _watch_and_fetch(compute, client, run, run_dir, watch_run, fetch_results,
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
def cloud_status_command(args) -> int:
    """``cloud status``: the project's training VMs and the runs in its bucket."""
    from .compute import Compute, label_value
    from .orchestrate import runs_in_bucket

    project, bucket, _ = _location(args)
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
def cloud_teardown_command(args) -> int:
    """``cloud teardown [--run-id ID]``: delete the project's training VMs (or one run's).

    Only instances labelled ``app=media-bias`` are touched; the list is printed before anything
    is deleted, and confirmed unless ``--yes``.
    """
    from .compute import APP_LABEL, RUN_LABEL, Compute, label_value

    project, _, _ = _location(args)
    compute = Compute()
    vms = [vm for vm in compute.list_run_instances(project)
           if vm["labels"].get("app") == APP_LABEL]
    if args.run_id:
        vms = [vm for vm in vms if vm["labels"].get(RUN_LABEL) == label_value(args.run_id)]
    if not vms:
        print(f"No training VM in {project}; nothing to delete.")
        return 0
    print(f"Training VMs to delete in {project} (label app={APP_LABEL}):")
    for vm in vms:
        print(f"  {vm['name']:<40} {vm['zone']:<16} {vm['status']:<12} run "
              f"{vm['labels'].get(RUN_LABEL, '?')}")
    if not getattr(args, "yes", False) and not _confirm(f"Delete these {len(vms)} VM(s)?"):
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
def cloud_logs_command(args, sleep=None, poll_seconds: float = 15.0) -> int:
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
    run_id = args.cloud_logs
    project, bucket, _ = _location(args, run_id)
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
        if not getattr(args, "follow", False) or marker:
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
def cloud_cost_command(args) -> int:
    """``cloud cost RUN_ID``: VM-hours and dollars so far, per VM, next to the estimate."""
    from .compute import Compute
    from .orchestrate import load_launch, vm_hours

    run_id = args.cloud_cost
    project, bucket, _ = _location(args, run_id)
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
