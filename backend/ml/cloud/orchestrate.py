"""A cloud run from the laptop's side: upload, create the VM, wait, replace, sync back, clean up.

Layout of a run in the bucket::

    gs://BUCKET/runs/<id>/code.tar.gz          the project (tracked and untracked, not ignored)
    gs://BUCKET/runs/<id>/inputs/config.yaml   the resolved config (data paths rewritten)
    gs://BUCKET/runs/<id>/inputs/data/...      local data files the config points at
    gs://BUCKET/runs/<id>/run/...              the run directory, synced while training
    gs://BUCKET/runs/<id>/cloud/launch.json    how the VMs were requested, their hours, the budget,
                                               the local commit (no credentials)
    gs://BUCKET/runs/<id>/cloud/<vm>.log       the VM's startup log
    gs://BUCKET/runs/<id>/cloud/DONE.json      completion marker: status, exit code, VM, time and
                                               the manifest of the uploaded run directory

The VM is deleted on every way out of :func:`watch_run` (success, failure, Ctrl-C), by itself
at the end of its startup script, and by Compute Engine after ``cloud.max_run_hours``. Only a
preemption on record (zone operation ``compute.instances.preempted``) gets a replacement VM, and
only while the hours of every VM of the run so far plus one more run stay within the budget.
"""

from __future__ import annotations

import copy
import json
import re
import subprocess
import tarfile
import time
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path

from ..errors import UserError
from ..fileio import atomic_write_json
from ..run_directory import RunLayout, utc_now
from . import storage
from .compute import (
    CloudError,
    Compute,
    VmSpec,
    create_with_fallback,
    instance_body,
    instance_name,
)
from .pricing import MAX_REPLACEMENTS
from .startup import StartupSettings, render_startup_script

REPO_ROOT = Path(__file__).resolve().parents[3]
POLL_SECONDS = 30.0
_NEVER_PACKED = (".git/", ".venv/", ".ci-venv/", "experiments/runs/", "wandb/", "__pycache__/",
                 "test-artifacts/", ".pytest_cache/")
_STOPPED = ("STOPPING", "STOPPED", "TERMINATED", "SUSPENDING", "SUSPENDED")
# Never shipped to the VM even when git would: environment files, keys, credentials.
_SECRET_NAME = re.compile(r"(^|/)(\.env(\..*)?|[^/]*\.pem|[^/]*\.p12|[^/]*key[^/]*\.json|"
                          r"id_(rsa|ed25519|ecdsa)[^/]*|\.netrc|credentials[^/]*\.json|"
                          r"application_default_credentials\.json)$", re.IGNORECASE)


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
    vms: list[dict] = field(default_factory=list)  # {"instance", "zone", "created_at", "ended_at"}
    estimate: dict = field(default_factory=dict)
    budget_usd: float | None = None             # cloud.max_cost_usd, for all VMs of the run
    source: dict = field(default_factory=dict)   # local commit and dirty state at launch

    def hourly_usd(self) -> float:
        """$/hour of one VM at the capacity kind the run uses (machine, GPUs, disk, IP)."""
        if not self.estimate:
            return 0.0
        return float(self.estimate["hourly"][self.estimate["chosen"]])

    def vm_hours(self, now: datetime | None = None) -> float:
        """Hours of every VM of the run so far; a VM still up counts until ``now``."""
        return sum(vm_hours(vm, now) for vm in self.vms)

    def spent_usd(self, now: datetime | None = None) -> float:
        return self.vm_hours(now) * self.hourly_usd()

    @property
    def url(self) -> str:
        return storage.gs_url(self.bucket, "runs", self.run_id)

    @property
    def vm_spec(self) -> VmSpec:
        return VmSpec(**self.spec)

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> CloudRun:
        return cls(**{key: data[key] for key in cls.__dataclass_fields__ if key in data})


def _now() -> str:
    return utc_now()


def vm_hours(vm: dict, now: datetime | None = None) -> float:
    """Hours between a VM record's ``created_at`` and its ``ended_at`` (or ``now``)."""
    start = datetime.fromisoformat(vm["created_at"])
    end = datetime.fromisoformat(vm["ended_at"]) if vm.get("ended_at") else \
        (now or datetime.now(timezone.utc))
    return max(0.0, (end - start).total_seconds() / 3600)


def _ended(vm: dict) -> None:
    vm.setdefault("ended_at", None)
    if not vm["ended_at"]:
        vm["ended_at"] = _now()


def is_secret_file(path: Path, name: str) -> bool:
    """A file that must never leave the machine: by its name, or a JSON credential inside."""
    if _SECRET_NAME.search(name):
        return True
    if name.lower().endswith(".json"):
        try:
            with open(path, encoding="utf-8", errors="ignore") as stream:
                head = stream.read(4096)
        except OSError:
            return False
        return '"private_key"' in head or re.search(r'"type"\s*:\s*"(service_account|'
                                                    r'authorized_user)"', head) is not None
    return False


def source_state(root: Path = REPO_ROOT) -> dict:
    """The local commit, branch and whether the working tree differs from it (for provenance)."""
    def git(*args: str) -> str | None:
        try:
            return subprocess.run(["git", *args], cwd=root, capture_output=True, check=True,
                                  text=True, timeout=30).stdout.strip()
        except (OSError, subprocess.SubprocessError):
            return None

    commit = git("rev-parse", "HEAD")
    status = git("status", "--porcelain")
    return {"commit": commit, "branch": git("rev-parse", "--abbrev-ref", "HEAD"),
            "dirty": bool(status) if status is not None else None}


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
                              for prefix in _NEVER_PACKED)
                  and not is_secret_file(root / name, name))


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
                  work_dir: Path, log=print, code_root: Path = REPO_ROOT) -> None:
    """Code tarball, config and data to ``gs://BUCKET/runs/<id>/``."""
    from ..config import config_to_yaml

    tarball = work_dir / "code.tar.gz"
    count = package_code(tarball, code_root)
    storage.upload_file(client, tarball, f"{run.url}/code.tar.gz")
    log(f"  uploaded the code ({count} files, {tarball.stat().st_size / 1e6:.1f} MB)")
    config_file = RunLayout(work_dir).config
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
                               wandb_secret=run.spec.get("wandb_secret") or "",
                               gpu_count=int(run.spec.get("gpu_count", 1)),
                               torch_index=torch_index_for(run.spec.get("image_family", "")))
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
    record = {"instance": body["name"], "zone": zone, "created_at": _now(), "ended_at": None}
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
              log=print, sleep=time.sleep, spent_elsewhere=lambda: 0.0) -> dict:
    """Wait for the completion marker; replace preempted VMs; the VM never outlives this call.

    ``spent_elsewhere`` adds what other runs under the same budget have cost (a fan-out).
    Returns the marker (``{"status": "completed" | "failed", ...}``).
    """
    poll = POLL_SECONDS if poll_seconds is None else poll_seconds
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
                current = _after_loss(compute, run, current, status, log, spent_elsewhere)
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
        _ended(current)


def _after_loss(compute: Compute, run: CloudRun, current: dict, status: str, log,
                spent_elsewhere) -> dict:
    """A VM stopped or vanished without a marker: replace it only after a real preemption."""
    name = current["instance"]
    _ended(current)
    preempted = compute.was_preempted(run.project, current["zone"], name)
    if status != "GONE" and compute.delete(run.project, current["zone"], name):
        log(f"  deleted VM {name} ({status})")
    if not preempted:
        cap = float(run.spec.get("max_run_hours", 0) or 0)
        if status == "GONE" and cap and vm_hours(current) >= cap * 0.98:
            what = (f"was deleted by Compute Engine at cloud.max_run_hours = {cap:g} h "
                    f"(maxRunDuration) before training finished; raise cloud.max_run_hours")
        elif status == "GONE":
            what = ("was deleted without a preemption on record (by `cloud teardown`, the "
                    "console or another account)")
        else:
            what = (f"stopped ({status}) without finishing and without a preemption on record "
                    f"(host maintenance, or it could not delete itself)")
        raise CloudError(f"VM {name} {what}. Its log: {run.url}/cloud/{name}.log; continue the "
                         f"run from its last checkpoint with `cloud sync {run.run_id} --continue`")
    replacements = len(run.vms) - 1
    if replacements >= MAX_REPLACEMENTS:
        raise CloudError(f"VM {name} was preempted, the {replacements + 1}th time; giving up. "
                         f"Continue later with `cloud sync {run.run_id} --continue`, or use "
                         f"on-demand "
                         f"capacity (cloud.preemptible: false)")
    check_replacement_budget(run, spent_elsewhere())
    log(f"  VM {name} was preempted (spot): starting a replacement that resumes from the last "
        f"checkpoint in {run.url}/run")
    return start_vm(compute, run, log)


def replacement_cost(run: CloudRun) -> float:
    """What one more VM of the run may cost: the estimated run at the run's rate."""
    if not run.estimate:
        return 0.0
    return float(run.estimate["total"][run.estimate["chosen"]])


def check_replacement_budget(run: CloudRun, spent_elsewhere: float = 0.0) -> None:
    if run.budget_usd is None:
        return
    spent = run.spent_usd() + spent_elsewhere
    more = replacement_cost(run)
    if spent + more > run.budget_usd:
        raise CloudError(
            f"run {run.run_id} has cost about ${spent:.2f} so far "
            f"({run.vm_hours():.2f} VM-hours over {len(run.vms)} VM(s)"
            + (f", ${spent_elsewhere:.2f} of it by the other runs of this launch"
               if spent_elsewhere else "")
            + f"); a replacement (about ${more:.2f}) would pass cloud.max_cost_usd = "
            f"${run.budget_usd:.2f}. Nothing more was started. Raise the budget and continue "
            f"with `cloud sync {run.run_id} --continue --set cloud.max_cost_usd=...`")


def torch_index_for(image_family: str) -> str:
    """The PyTorch wheel index for the CUDA of a ``common-cuXYZ-...`` family ('' = PyPI)."""
    match = re.search(r"cu(\d{3})", image_family)
    return f"https://download.pytorch.org/whl/cu{match.group(1)}" if match else ""


def fetch_results(client, run_url: str, run_dir: Path, log=print, mirror: bool = False
                  ) -> storage.SyncReport:
    """Sync ``<run_url>/run`` into ``run_dir`` (new and changed files, CRC32C-verified).

    ``mirror`` (a finished run) also removes local files the bucket no longer has, such as
    rotated checkpoints, and only once every file was downloaded: an interrupted or failed
    download removes nothing.
    """
    report = storage.download_tree(client, f"{run_url}/run", run_dir, delete_extra=mirror)
    log(f"  {run_dir}: {report}")
    return report


def record_cloud_section(run_dir: Path, run: CloudRun, marker: dict | None) -> None:
    """Add the ``cloud`` key to the local results.json (where the run ran and what it cost)."""
    results_file = RunLayout(run_dir).results
    if not results_file.is_file():
        return
    results = json.loads(results_file.read_text(encoding="utf-8"))
    results["cloud"] = {"platform": "gcp", "project": run.project, "bucket_url": run.url,
                        "machine_type": run.spec["machine_type"],
                        "gpu_type": run.spec["gpu_type"], "gpu_count": run.spec["gpu_count"],
                        "preemptible": run.spec["preemptible"], "vms": run.vms,
                        "preemptions": max(0, len(run.vms) - 1),
                        "vm_hours": round(run.vm_hours(), 4),
                        "cost_usd": round(run.spent_usd(), 4),
                        "source": run.source or None,
                        "estimate": ({key: run.estimate.get(key)
                                      for key in ("hours", "total", "chosen", "hourly")}
                                     if run.estimate else None),
                        "marker": marker}
    atomic_write_json(results_file, results)


def load_launch(client, bucket: str, run_id: str) -> CloudRun:
    url = storage.gs_url(bucket, "runs", run_id)
    data = storage.read_json(client, f"{url}/cloud/launch.json")
    if data is None:
        raise UserError(f"no cloud run {run_id!r} in gs://{bucket}/runs/ (check the id with "
                        f"`run_experiment.py cloud status`, or the project / bucket)")
    return CloudRun.from_dict(data)


def runs_in_bucket(client, bucket: str) -> list[str]:
    """Run ids under gs://BUCKET/runs/."""
    iterator = client.list_blobs(bucket, prefix="runs/", delimiter="/")
    for _ in iterator:  # the prefixes fill in while the pages are read
        pass
    return sorted(prefix.split("/")[1] for prefix in iterator.prefixes)
