"""A cloud run from the laptop's side: upload, create the VM, wait, replace, sync back, clean up.

Layout of a run in the bucket::

    gs://BUCKET/runs/<id>/code.tar.gz          the project (tracked and untracked, not ignored)
    gs://BUCKET/runs/<id>/inputs/config.yaml   the resolved config (data paths rewritten)
    gs://BUCKET/runs/<id>/inputs/data/...      local data files the config points at
    gs://BUCKET/runs/<id>/run/...              the run directory, synced while training
    gs://BUCKET/runs/<id>/cloud/launch.json    how the VM was requested (no credentials)
    gs://BUCKET/runs/<id>/cloud/<vm>.log       the VM's startup log
    gs://BUCKET/runs/<id>/cloud/DONE.json      completion marker: status, exit code, VM, time

The VM is deleted on every way out of :func:`watch_run` (success, failure, Ctrl-C), by itself
at the end of its startup script, and by Compute Engine after ``cloud.max_run_hours``.
"""

from __future__ import annotations

import copy
import json
import subprocess
import tarfile
import time
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path

from ..errors import UserError
from ..fileio import atomic_write_json
from . import storage
from .compute import CloudError, Compute, VmSpec, create_with_fallback, instance_body, instance_name
from .startup import StartupSettings, render_startup_script

REPO_ROOT = Path(__file__).resolve().parents[3]
POLL_SECONDS = 30.0
MAX_REPLACEMENTS = 5
_NEVER_PACKED = (".git/", ".venv/", ".ci-venv/", "experiments/runs/", "wandb/", "__pycache__/",
                 "test-artifacts/", ".pytest_cache/")
_STOPPED = ("STOPPING", "STOPPED", "TERMINATED", "SUSPENDING", "SUSPENDED")


@dataclass
class CloudRun:
    """Where a cloud run lives and how its VMs are requested; stored as cloud/launch.json."""

    run_id: str
    project: str
    region: str
    bucket: str
    zones: list[str]
    spec: dict                                  # VmSpec fields
    startup: dict = field(default_factory=dict)  # StartupSettings overrides (tests, emulators)
    vms: list[dict] = field(default_factory=list)  # {"instance", "zone", "created_at"}
    estimate: dict = field(default_factory=dict)

    @property
    def url(self) -> str:
        return storage.gs_url(self.bucket, "runs", self.run_id)

    @property
    def vm_spec(self) -> VmSpec:
        return VmSpec(**self.spec)

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> "CloudRun":
        return cls(**{key: data[key] for key in cls.__dataclass_fields__ if key in data})


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def project_files(root: Path = REPO_ROOT) -> list[str]:
    """Files of the project to ship: git's tracked and untracked-but-not-ignored files."""
    try:
        listed = subprocess.run(["git", "ls-files", "-co", "--exclude-standard", "-z"], cwd=root,
                                capture_output=True, check=True, timeout=60).stdout
        names = [name for name in listed.decode("utf-8").split("\0") if name]
    except (OSError, subprocess.SubprocessError):
        names = [path.relative_to(root).as_posix() for path in root.rglob("*") if path.is_file()]
    return sorted(name for name in names if (root / name).is_file()
                  and not any(name.startswith(prefix) or f"/{prefix}" in name
                              for prefix in _NEVER_PACKED))


def package_code(target: Path, root: Path = REPO_ROOT) -> int:
    """Write the project as a .tar.gz; returns the number of files."""
    names = project_files(root)
    with tarfile.open(target, "w:gz") as archive:
        for name in names:
            archive.add(root / name, arcname=name, recursive=False)
    return len(names)


def _local_data(config) -> Path | None:
    import os

    data = config.data
    if data.path and Path(data.path).expanduser().exists():
        return Path(data.path).expanduser()
    if data.dataset == "babe" and not data.path and os.environ.get("BABE_DATA_DIR"):
        located = Path(os.environ["BABE_DATA_DIR"]).expanduser()
        return located if located.exists() else None
    return None


def vm_config(config) -> tuple[object, list[tuple[Path, str]]]:
    """The config as the VM runs it, and the local files to upload under inputs/.

    Local data (``data.path`` or ``BABE_DATA_DIR``) and a local model directory travel with the
    run; their paths are rewritten to where the VM unpacks them.
    """
    remote = copy.deepcopy(config)
    uploads: list[tuple[Path, str]] = []
    data_path = _local_data(config)
    if data_path is not None:
        uploads += _files_under(data_path, f"data/{data_path.name}")
        remote.data.path = f"cloud_inputs/data/{data_path.name}"
    model_dir = Path(config.model.model_name).expanduser()
    if config.model.pretrained and model_dir.is_dir():
        uploads += _files_under(model_dir, f"model/{model_dir.name}")
        remote.model.model_name = f"cloud_inputs/model/{model_dir.name}"
    return remote, uploads


def _files_under(path: Path, remote: str) -> list[tuple[Path, str]]:
    if path.is_file():
        return [(path, remote)]
    return [(file, f"{remote}/{name}") for name, file in storage.local_files(path).items()]


def upload_inputs(client, run: CloudRun, config, uploads: list[tuple[Path, str]],
                  work_dir: Path, log=print) -> None:
    """Code tarball, config and data to ``gs://BUCKET/runs/<id>/``."""
    from ..config import config_to_yaml

    tarball = work_dir / "code.tar.gz"
    count = package_code(tarball)
    storage.upload_file(client, tarball, f"{run.url}/code.tar.gz")
    log(f"  uploaded the code ({count} files, {tarball.stat().st_size / 1e6:.1f} MB)")
    config_file = work_dir / "config.yaml"
    config_file.write_text(config_to_yaml(config), encoding="utf-8")
    storage.upload_file(client, config_file, f"{run.url}/inputs/config.yaml")
    for path, name in uploads:
        storage.upload_file(client, path, f"{run.url}/inputs/{name}")
    if uploads:
        log(f"  uploaded {len(uploads)} data/model file(s)")
    storage.write_json(client, f"{run.url}/cloud/launch.json", run.to_dict())


def startup_for(run: CloudRun, zone: str, name: str) -> str:
    settings = StartupSettings(run_id=run.run_id, bucket=run.bucket, project=run.project,
                               zone=zone, instance=name,
                               wandb_secret=run.spec.get("wandb_secret") or "")
    for key, value in run.startup.items():
        setattr(settings, key, value)
    return render_startup_script(settings)


def body_for(run: CloudRun, zone: str, attempt: int) -> dict:
    """The instances.insert body of the run's VM number ``attempt`` in ``zone``."""
    name = instance_name(run.run_id, attempt)
    return instance_body(run.vm_spec, zone, name, startup_for(run, zone, name))


def start_vm(compute: Compute, run: CloudRun, log=print) -> dict:
    """Create the next VM of the run, trying each zone in turn; returns its record."""
    attempt = len(run.vms)
    zone, body = create_with_fallback(compute, run.project, run.zones,
                                      lambda zone: body_for(run, zone, attempt), log=log)
    record = {"instance": body["name"], "zone": zone, "created_at": _now()}
    run.vms.append(record)
    kind = "spot" if run.spec["preemptible"] else "on-demand"
    log(f"  VM {body['name']} created in {zone} ({run.spec['machine_type']}, "
        f"{run.spec['gpu_count']} x {run.spec['gpu_type']}, {kind})")
    return record


def _progress(client, run: CloudRun) -> str | None:
    text = storage.read_text(client, f"{run.url}/run/metrics.jsonl")
    if not text:
        return None
    for line in reversed(text.strip().splitlines()):
        try:
            record = json.loads(line)
        except ValueError:
            continue
        shown = ", ".join(f"{key} {value:.4g}" for key, value in record.items()
                          if key not in ("step", "epoch") and isinstance(value, (int, float)))
        return f"step {record.get('step')} (epoch {record.get('epoch', 0):.2f}): {shown}"
    return None


def watch_run(compute: Compute, client, run: CloudRun, poll_seconds: float | None = None,
              log=print, sleep=time.sleep, deadline_hours: float | None = None) -> dict:
    """Wait for the completion marker; replace preempted VMs; the VM never outlives this call.

    Returns the marker (``{"status": "completed" | "failed", ...}``).
    """
    poll = POLL_SECONDS if poll_seconds is None else poll_seconds
    started = time.monotonic()
    deadline_hours = deadline_hours or run.spec["max_run_hours"] * 1.5
    current = run.vms[-1]
    last_progress, last_status = None, None
    try:
        while True:
            marker = storage.read_json(client, f"{run.url}/cloud/DONE.json")
            if marker:
                return marker
            vm = compute.get(run.project, current["zone"], current["instance"])
            status = vm["status"] if vm else "GONE"
            if status != last_status:
                log(f"  {current['instance']}: {status}")
                last_status = status
            if status == "GONE" or status in _STOPPED:
                marker = storage.read_json(client, f"{run.url}/cloud/DONE.json")
                if marker:  # finished and deleted itself between the two looks
                    return marker
                current = _replace(compute, run, current, status, started, deadline_hours, log)
                storage.write_json(client, f"{run.url}/cloud/launch.json", run.to_dict())
                last_status = None
                continue
            progress = _progress(client, run)
            if progress and progress != last_progress:
                log(f"  {progress}")
                last_progress = progress
            sleep(poll)
    finally:
        # Success, failure, Ctrl-C: whatever happened, the VM does not stay behind.
        if compute.delete(run.project, current["zone"], current["instance"]):
            log(f"  deleted VM {current['instance']}")


def _replace(compute: Compute, run: CloudRun, current: dict, status: str, started: float,
             deadline_hours: float, log) -> dict:
    replacements = len(run.vms) - 1
    what = "was deleted" if status == "GONE" else f"stopped ({status})"
    if not run.spec["preemptible"]:
        raise CloudError(f"VM {current['instance']} {what} before the run finished (no completion "
                         f"marker). See {run.url}/cloud/{current['instance']}.log; continue it "
                         f"with --sync {run.run_id} --cloud")
    if replacements >= MAX_REPLACEMENTS:
        raise CloudError(f"VM {current['instance']} {what}: preempted {replacements + 1} times, "
                         f"giving up. Continue later with --sync {run.run_id} --cloud, or use "
                         f"on-demand capacity (cloud.preemptible: false)")
    if (time.monotonic() - started) / 3600 > deadline_hours:
        raise CloudError(f"VM {current['instance']} {what} and the run is past its time budget; "
                         f"continue it with --sync {run.run_id} --cloud")
    log(f"  VM {current['instance']} {what} without finishing (spot preemption): starting a "
        f"replacement that resumes from the last checkpoint in {run.url}/run")
    if status != "GONE":
        compute.delete(run.project, current["zone"], current["instance"])
    return start_vm(compute, run, log)


def fetch_results(client, run_url: str, run_dir: Path, log=print) -> storage.SyncReport:
    """Sync ``<run_url>/run`` into ``run_dir`` (new and changed files, CRC32C-verified)."""
    report = storage.download_tree(client, f"{run_url}/run", run_dir)
    log(f"  {run_dir}: {report}")
    return report


def record_cloud_section(run_dir: Path, run: CloudRun, marker: dict | None) -> None:
    """Add the ``cloud`` key to the local results.json (where the run ran and what it cost)."""
    results_file = run_dir / "results.json"
    if not results_file.is_file():
        return
    results = json.loads(results_file.read_text(encoding="utf-8"))
    results["cloud"] = {"platform": "gcp", "project": run.project, "bucket_url": run.url,
                        "machine_type": run.spec["machine_type"],
                        "gpu_type": run.spec["gpu_type"], "gpu_count": run.spec["gpu_count"],
                        "preemptible": run.spec["preemptible"], "vms": run.vms,
                        "preemptions": max(0, len(run.vms) - 1),
                        "estimate": {key: run.estimate.get(key) for key in
                                     ("hours", "total", "chosen", "hourly")} if run.estimate else None,
                        "marker": marker}
    atomic_write_json(results_file, results)


def load_launch(client, bucket: str, run_id: str) -> CloudRun:
    url = storage.gs_url(bucket, "runs", run_id)
    data = storage.read_json(client, f"{url}/cloud/launch.json")
    if data is None:
        raise UserError(f"no cloud run {run_id!r} in gs://{bucket}/runs/ (check the id with "
                        f"--cloud-status, or the project / bucket)")
    return CloudRun.from_dict(data)


def runs_in_bucket(client, bucket: str) -> list[str]:
    """Run ids under gs://BUCKET/runs/."""
    iterator = client.list_blobs(bucket, prefix="runs/", delimiter="/")
    for _ in iterator:  # the prefixes fill in while the pages are read
        pass
    return sorted(prefix.split("/")[1] for prefix in iterator.prefixes)
