"""Launching one cloud run: validate and price its config, show the dry run, upload its
inputs, create its VM, watch it and bring its results home.

The ``cloud launch`` command (:mod:`.commands`) and the fan-out of several runs (:mod:`.fanout`)
both launch through here.

>>> run, _, remote_config, uploads = plan_run(config, path, project, run_id)  # doctest: +SKIP
>>> launch_run(config, run, remote_config, uploads, runs_dir_for(config))  # doctest: +SKIP
"""

from __future__ import annotations

import json
import os
import re
import sys
import tempfile
from pathlib import Path
from typing import Literal, overload

from ..config.model_catalog import MPNET_ALIASES, fetched_mpnet_path
from ..errors import ConfigError, UserError
from ..fileio import atomic_write_json
from . import storage
from .catalog import candidate_zones, check_machine_and_gpu
from .cuda_builds import build_problems, pinned_torch
from .pricing import estimate_cost
from .startup import WANDB_API_KEY_SECRET

DEFAULT_RUNS_DIR = Path("experiments/runs")
# Published BABE sizes, for pricing without the files at hand (filter_no_agreement drops ~15%).
BABE_SIZES = {"SG1": 3700, "SG2": 3673}
_BUCKET_NAME = re.compile(r"^[a-z0-9][a-z0-9._-]{1,61}[a-z0-9]$")


def cloud_problems(config) -> list[str]:
    """Every problem of the config as a cloud run, with dotted paths."""
    cloud = config.cloud
    problems = check_machine_and_gpu(cloud)
    problems += build_problems(cloud.gpu_type, cloud.image_family, pinned_torch())
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
    if config.model.model_name.strip().lower() in MPNET_ALIASES and fetched_mpnet_path() is None:
        problems.append(f"model.model_name: {config.model.model_name!r} travels to the VM from "
                        f"this machine's model cache, where it is not yet; fetch it once with "
                        f"`python run_experiment.py models fetch mpnet` (about 440 MB, uploaded "
                        f"with the run)")
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


def confirm(question: str) -> bool:
    if not sys.stdin.isatty():
        raise UserError("cannot ask for confirmation (no terminal); add --yes to accept the "
                        "cost estimate")
    return input(f"{question} [y/N] ").strip().lower() in ("y", "yes")


def runs_dir_for(config, runs_dir: Path | None = None) -> Path:
    """Where the run directories of ``config`` go: the command's choice, else the config's."""
    return Path(runs_dir or config.output_dir or DEFAULT_RUNS_DIR)


def pointer_file(runs_dir: Path, run_id: str) -> Path:
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


def check_image(run, compute=None) -> str:
    """Resolve the image family (``images.getFromFamily``); a clear error when it is retired."""
    from google.auth.exceptions import DefaultCredentialsError

    from .compute import Compute

    family, image_project = run.spec["image_family"], run.spec["image_project"]
    try:
        image = (compute or Compute()).image_from_family(image_project, family)
    except DefaultCredentialsError:
        return f"image family {image_project}/{family}: not checked (no credentials)"
    return f"image family {image_project}/{family}: {image['name']} ({image['state']})"


def print_dry_run(run, uploads, project) -> int:
    from .orchestrate import body_for, torch_build_for

    zone = run.zones[0] if run.zones else f"{run.region}-a"
    print("\n" + (check_image(run) if project else
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


def launch_run(config, run, remote_config, uploads, runs_dir: Path, detach: bool = False,
               log=print, spent_elsewhere=lambda: 0.0, sleep=None) -> int:
    """Upload, create the VM and (unless detached) watch it and fetch the results into
    ``runs_dir``/<run id>."""
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
    log(check_image(run, compute))
    run.zones = _offering_zones(compute, run, config.cloud, log)
    log(f"Uploading to {run.url}/")
    with tempfile.TemporaryDirectory() as work:
        upload_inputs(client, run, remote_config, uploads, Path(work), log=log)
    atomic_write_json(pointer_file(runs_dir, run.run_id), {"project": run.project,
                                                       "bucket": run.bucket})
    log("Creating the VM")
    try:
        start_vm(compute, run, log=log, spent_elsewhere=spent_elsewhere)
    finally:
        storage.write_json(client, f"{run.url}/cloud/launch.json", run.to_dict())
    if detach:
        vm = run.vms[-1]
        log(f"\nDetached. The VM deletes itself when training ends, and after "
            f"{config.cloud.max_run_hours:g} h at the latest.\n"
            f"  progress:  python run_experiment.py cloud logs {run.run_id} --follow\n"
            f"  cost:      python run_experiment.py cloud cost {run.run_id}\n"
            f"  results:   python run_experiment.py cloud sync {run.run_id}\n"
            f"  stop now:  python run_experiment.py cloud teardown --run-id {run.run_id}\n"
            f"  VM:        {vm['instance']} in {vm['zone']}")
        return 0
    return watch_and_fetch(compute, client, run, runs_dir / run.run_id,
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


def watch_and_fetch(compute, client, run, run_dir: Path, watch_run, fetch_results,
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
