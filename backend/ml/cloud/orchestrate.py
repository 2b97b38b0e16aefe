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
    gs://BUCKET/runs/<id>/cloud/DONE-<vm>.json the failed marker of a VM, set aside when the run
                                               was continued after it (``cloud sync --continue``)

The VM is deleted on every way out of :func:`watch_run` (success, failure, Ctrl-C) but one, the
laptop's network staying down (then the watch stops and leaves it running), by itself at the end
of its startup script, and by Compute Engine after ``cloud.max_run_hours``. Only a
preemption on record (zone operation ``compute.instances.preempted``) gets a replacement VM, and
only while the hours of every VM of the run so far plus one more run stay within the budget.
"""

from __future__ import annotations

import copy
import io
import json
import re
import subprocess
import tarfile
import threading
import time
from dataclasses import asdict, dataclass, field, replace
from datetime import datetime, timezone
from pathlib import Path

from ..config.model_catalog import MPNET_ALIASES, fetched_mpnet_path
from ..errors import UserError
from ..fileio import atomic_write_json
from ..run_directory import SOURCE_PROVENANCE_FILE, RunLayout, source_provenance, utc_now
from . import storage
from .compute import (
    CloudError,
    Compute,
    VmSpec,
    create_with_fallback,
    instance_body,
    instance_name,
)
from .cuda_builds import BuildChoice, choose_build, pinned_torch
from .pricing import MAX_REPLACEMENTS, hours_within_budget
from .retrying import Backoff, NetworkLost
from .startup import StartupSettings, render_startup_script

REPO_ROOT = Path(__file__).resolve().parents[3]
POLL_SECONDS = 30.0
_NEVER_PACKED = (".git/", ".venv/", ".ci-venv/", "experiments/runs/", "wandb/", "__pycache__/",
                 "test-artifacts/", ".pytest_cache/")
_STOPPED = ("STOPPING", "STOPPED", "TERMINATED", "SUSPENDING", "SUSPENDED")
# Never shipped to the VM even when git would: environment files, keys, credentials.
_SECRET_NAME = re.compile(r"(^|/)(\.env(\..*)?|\.envrc|[^/]*\.pem|[^/]*\.p12|[^/]*\.key|"
                          r"[^/]*key[^/]*\.json|id_(rsa|ed25519|ecdsa)[^/]*|\.netrc|"
                          r"\.git-credentials|\.pypirc|\.boto|secrets\.[^/]+|"
                          r"credentials[^/]*\.json|application_default_credentials\.json)$",
                          re.IGNORECASE)


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
    source: dict = field(default_factory=dict)   # local commit, branch, dirty state at launch

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

    def committed_usd(self, now: datetime | None = None) -> float:
        """The most the run's VMs can cost: ended ones as billed, one still up until its own
        maxRunDuration deletes it."""
        hours = 0.0
        for vm in self.vms:
            hours += vm_hours(vm, now)
            if not vm.get("ended_at"):
                cap = float(vm.get("max_hours") or self.spec.get("max_run_hours") or 0)
                hours += max(0.0, cap - vm_hours(vm, now))
        return hours * self.hourly_usd()

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
    """Write the project as a .tar.gz with its provenance (commit, branch, the diff of what
    it ships); returns the number of files."""
    names = project_files(root)
    provenance = json.dumps(source_provenance(root, paths=names), indent=2).encode("utf-8")
    with tarfile.open(target, "w:gz") as archive:
        for name in names:
            archive.add(root / name, arcname=name, recursive=False)
        entry = tarfile.TarInfo(SOURCE_PROVENANCE_FILE)
        entry.size, entry.mtime, entry.mode = len(provenance), int(time.time()), 0o644
        archive.addfile(entry, io.BytesIO(provenance))
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

    Local data (``data.path`` or ``BABE_DATA_DIR``) and a local model directory (also the
    fetched MPNet-base that ``model_name: mpnet`` names) travel with the run; their paths are
    rewritten to where the VM unpacks them.
    """
    remote = copy.deepcopy(config)
    uploads: list[tuple[Path, str]] = []
    data_path = _local_data(config)
    if data_path is not None:
        uploads += _files_under(data_path, f"data/{data_path.name}")
        remote.data.path = f"cloud_inputs/data/{data_path.name}"
    model_name = config.model.model_name
    if model_name.strip().lower() in MPNET_ALIASES:  # fetched into this machine's cache only
        model_name = str(fetched_mpnet_path() or model_name)
    model_dir = Path(model_name).expanduser()
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
    torch_build = torch_build_for(run.spec)
    settings = StartupSettings(run_id=run.run_id, bucket=run.bucket, project=run.project,
                               zone=zone, instance=name,
                               wandb_secret=run.spec.get("wandb_secret") or "",
                               gpu_count=int(run.spec.get("gpu_count", 1)),
                               torch_index=torch_build.build.index_url,
                               torch_build_reason=torch_build.reason)
    for key, value in run.startup.items():
        setattr(settings, key, value)
    return render_startup_script(settings)


def body_for(run: CloudRun, zone: str, attempt: int, max_hours: float | None = None) -> dict:
    """The instances.insert body of the run's VM number ``attempt`` in ``zone``.

    Its maxRunDuration is ``max_hours``; without it, what the run's budget has left buys.
    """
    name = instance_name(run.run_id, attempt)
    hours = check_replacement_budget(run) if max_hours is None else max_hours
    spec = replace(run.vm_spec, max_run_hours=hours)
    return instance_body(spec, zone, name, startup_for(run, zone, name))


# The runs of a launch check the shared budget and reserve their VM's share one at a time.
_BUDGET_CHECK = threading.Lock()


def start_vm(compute: Compute, run: CloudRun, log=print, spent_elsewhere=lambda: 0.0) -> dict:
    """Create the next VM of the run, trying each zone in turn; returns its record.

    The VM deletes itself (maxRunDuration) once it has spent what ``cloud.max_cost_usd`` has
    left after every VM of the run and ``spent_elsewhere()`` (the other runs of a launch). Its
    record counts against the budget from before the request, so that runs starting together
    cannot each take the whole remainder.
    """
    attempt = len(run.vms)
    with _BUDGET_CHECK:
        max_hours = check_replacement_budget(run, spent_elsewhere())
        record = {"instance": instance_name(run.run_id, attempt), "zone": None,
                  "created_at": _now(), "ended_at": None, "max_hours": max_hours}
        run.vms.append(record)
    try:
        zone, body = create_with_fallback(compute, run.project, run.zones,
                                          lambda zone: body_for(run, zone, attempt, max_hours),
                                          log=log)
    except BaseException:
        run.vms.remove(record)
        raise
    record.update(zone=zone, created_at=_now())
    kind = "spot" if run.spec["preemptible"] else "on-demand"
    log(f"  VM {body['name']} created in {zone} ({run.spec['machine_type']}, "
        f"{run.spec['gpu_count']} x {run.spec['gpu_type']}, {kind}); it deletes itself after "
        f"{max_hours:.2f} h")
    return record


def _progress(client, run: CloudRun, calls: Backoff) -> str | None:
    text = calls.call(storage.read_text, client, f"{run.url}/run/metrics.jsonl")
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


# A preempted spot VM is STOPPING while its shutdown script saves the run (~30 s); Compute
# Engine stops it hard after 30 s (spot) to 120 s. Waited for this long before it is judged.
STOPPING_GRACE_SECONDS = 180.0


@dataclass
class _Watch:
    """What the watch has shown and how long the current VM has been STOPPING."""

    poll: float
    last_status: str | None = None
    last_progress: str | None = None
    stopping_polls: int = 0

    def may_wait_for_stop(self) -> bool:
        """One more poll of a STOPPING VM, while its shutdown may still be running."""
        self.stopping_polls += 1
        return self.stopping_polls * max(self.poll, 1.0) <= STOPPING_GRACE_SECONDS

    def show(self, log, text: str, kind: str) -> None:
        if getattr(self, f"last_{kind}") != text:
            log(f"  {text}")
            setattr(self, f"last_{kind}", text)


def watch_run(compute: Compute, client, run: CloudRun, poll_seconds: float | None = None,
              log=print, sleep=time.sleep, spent_elsewhere=lambda: 0.0) -> dict:
    """Wait for the completion marker; replace preempted VMs; the VM never outlives this call,
    unless the network does.

    A call that fails for the network's sake (5xx, 429, a dropped or refused connection, a
    time-out) is retried with backoff (:class:`retrying.Backoff`, on the console); when the
    calls keep failing, :class:`retrying.NetworkLost` is raised and the VM is left to finish and
    delete itself. Ctrl-C and every other failure delete it. A STOPPING VM (a preempted spot VM
    saving the run) is waited for, up to STOPPING_GRACE_SECONDS, before it is judged.
    ``spent_elsewhere`` adds what other runs under the same budget have cost (a fan-out).
    Returns the marker (``{"status": "completed" | "failed", ...}``).
    """
    watch = _Watch(POLL_SECONDS if poll_seconds is None else poll_seconds)
    calls = Backoff(sleep=sleep, log=log)
    marker_url = f"{run.url}/cloud/DONE.json"
    current = run.vms[-1]
    network_lost = False
    try:
        while True:
            marker = calls.call(storage.read_json, client, marker_url)
            if marker:
                return marker
            vm = calls.call(compute.get, run.project, current["zone"], current["instance"])
            status = vm["status"] if vm else "GONE"
            watch.show(log, f"{current['instance']}: {status}", "status")
            if status == "STOPPING" and watch.may_wait_for_stop():
                if watch.stopping_polls == 1:
                    log(f"  waiting for {current['instance']} to stop: a preempted spot VM "
                        f"saves the run directory first")
            elif status == "GONE" or status in _STOPPED:
                marker = calls.call(storage.read_json, client, marker_url)
                if marker:  # finished and deleted itself between the two looks
                    return marker
                current = _after_loss(compute, run, current, status, log, spent_elsewhere,
                                      calls)
                calls.call(storage.write_json, client, f"{run.url}/cloud/launch.json",
                           run.to_dict())
                watch = _Watch(watch.poll)
                continue
            progress = _progress(client, run, calls)
            if progress:
                watch.show(log, progress, "progress")
            sleep(watch.poll)
    except NetworkLost as lost:
        network_lost = True
        raise NetworkLost(_left_running(run, current, lost)) from lost
    finally:
        # Success, failure, Ctrl-C: the VM does not stay behind. Without a network it is left
        # to finish: it deletes itself, and maxRunDuration caps it.
        if not network_lost:
            if compute.delete(run.project, current["zone"], current["instance"]):
                log(f"  deleted VM {current['instance']}")
            _ended(current)


def _left_running(run: CloudRun, current: dict, lost: NetworkLost) -> str:
    hours = float(current.get("max_hours") or run.spec.get("max_run_hours") or 0)
    return (f"{lost}. Stopped watching run {run.run_id}; its VM {current['instance']} "
            f"({current['zone']}) was left running: it uploads the run to {run.url}/run and "
            f"deletes itself when training ends, at the latest after {hours:g} h "
            f"(maxRunDuration). Once the network is back, follow it with `cloud logs "
            f"{run.run_id} --follow` and fetch the results with `cloud sync {run.run_id}`; "
            f"stop it with `cloud teardown --run-id {run.run_id}`.")


def set_aside_marker(client, run: CloudRun, marker: dict) -> str:
    """Move a failed completion marker to ``cloud/DONE-<its VM>.json``, kept as history, so
    that the next VM's watch is not answered by it; returns where it went."""
    instance = marker.get("instance") or (run.vms[-1]["instance"] if run.vms else "vm")
    kept = f"{run.url}/cloud/DONE-{instance}.json"
    storage.write_json(client, kept, marker)
    bucket_name, name = storage.parse_gs_url(f"{run.url}/cloud/DONE.json")
    client.bucket(bucket_name).blob(name).delete()
    return kept


def _after_loss(compute: Compute, run: CloudRun, current: dict, status: str, log,
                spent_elsewhere, calls: Backoff) -> dict:
    """A VM stopped or vanished without a marker: replace it only after a real preemption."""
    name = current["instance"]
    _ended(current)
    preempted = calls.call(compute.was_preempted, run.project, current["zone"], name)
    if status != "GONE" and compute.delete(run.project, current["zone"], name):
        log(f"  deleted VM {name} ({status})")
    if not preempted:
        limit = float(run.spec.get("max_run_hours", 0) or 0)
        cap = float(current.get("max_hours") or limit)  # lower when the budget set it
        if status == "GONE" and cap and vm_hours(current) >= cap * 0.98:
            what = (f"was deleted by Compute Engine at cloud.max_run_hours = {cap:g} h "
                    f"(maxRunDuration) before training finished; raise cloud.max_run_hours"
                    if cap >= limit * 0.999 else
                    f"was deleted by Compute Engine at its maxRunDuration of {cap:.2f} h, what "
                    f"cloud.max_cost_usd = ${run.budget_usd:.2f} left for it, before training "
                    f"finished; raise cloud.max_cost_usd")
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
    return start_vm(compute, run, log, spent_elsewhere=spent_elsewhere)


# A VM that cannot boot, install, and then train at least this long is not worth starting.
MIN_TRAINING_MINUTES = 10


def check_replacement_budget(run: CloudRun, spent_elsewhere: float = 0.0) -> float:
    """Hours the run's next VM may run: what the budget has left, at most cloud.max_run_hours.

    Left = cloud.max_cost_usd - what every VM of the run can cost (:meth:`CloudRun.
    committed_usd`) - ``spent_elsewhere``. Raises CloudError, and nothing is started, when that
    buys less than the startup plus MIN_TRAINING_MINUTES.
    """
    ceiling = float(run.spec.get("max_run_hours") or 0)
    rate = run.hourly_usd()
    if run.budget_usd is None or rate <= 0:
        return ceiling
    spent = run.committed_usd() + spent_elsewhere
    hours = hours_within_budget(run.budget_usd - spent, rate, ceiling)
    startup = float(run.estimate.get("startup_hours", 0.0))
    needed = startup + MIN_TRAINING_MINUTES / 60
    if hours < min(needed, ceiling):
        raise CloudError(
            f"run {run.run_id} has cost about ${spent:.2f} so far "
            f"({run.vm_hours():.2f} VM-hours over {len(run.vms)} VM(s)"
            + (f", ${spent_elsewhere:.2f} of it by the other runs of this launch, a VM still up "
               f"counted with its whole maxRunDuration" if spent_elsewhere else "")
            + f"); the ${max(0.0, run.budget_usd - spent):.2f} left of cloud.max_cost_usd = "
            f"${run.budget_usd:.2f} buys {hours * 60:.0f} min at ${rate:.4f}/h, less than the "
            f"{needed * 60:.0f} min a VM needs to start and train. Nothing more was started. "
            f"Raise the budget and continue with `cloud sync {run.run_id} --continue --set "
            f"cloud.max_cost_usd=...`")
    return hours


def torch_build_for(spec: dict) -> BuildChoice:
    """The CUDA build of the pinned torch for the run's GPU and image driver, and why.

    ``cloud_problems`` refused the combinations no build fits before anything was created.
    """
    return choose_build(spec["gpu_type"], spec["image_family"], pinned_torch())


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
