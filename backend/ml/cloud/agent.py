"""What the training VM's startup script calls: ``python -m backend.ml.cloud.agent COMMAND``.

    up LOCAL_DIR gs://B/P [--mirror-after FLAG]   upload new/changed files; remove remote
                                                  extras only when FLAG exists
    put FILE gs://B/P/NAME                  upload one file
    down gs://B/P LOCAL_DIR                 download new/changed files, CRC32C-verified
    watch LOCAL_DIR gs://B/P --pid PID      upload every --interval seconds while PID lives;
                                            on a preemption notice interrupt PID and save
    finish LOCAL_DIR gs://B/P gs://B/DONE.json --status S
                                            final upload (retried), verify it, then the marker
    gpu-check --expect N --report FILE     a matmul on every GPU against the CPU's result;
                                            FILE (JSON) goes into the marker (finish
                                            --gpu-report FILE)
    delete-self --project P --zone Z --instance I
    secret NAME --project P                 print a Secret Manager secret (for W&B on the VM)

Remote objects missing locally are removed only after the run directory was downloaded
completely on this VM (``--mirror-after`` names the flag file the startup script writes then):
a partial copy, or a signal during the download, never deletes a checkpoint in the bucket.

Credentials are the VM's service account (Application Default Credentials through the
metadata server); nothing here writes a credential anywhere.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import sys
import time
from datetime import datetime, timezone

from ..errors import UserError
from ..run_lock import process_exists
from . import storage


def _mirror(flag: str | None) -> bool:
    return bool(flag and os.path.exists(flag))


def preemption_announced(url: str | None) -> bool:
    """The metadata server's ``instance/preempted`` flag (TRUE for the ~30 s notice)."""
    if not url:
        return False
    import urllib.request

    request = urllib.request.Request(url, headers={"Metadata-Flavor": "Google"})
    try:
        with urllib.request.urlopen(request, timeout=2) as response:
            return response.read().decode().strip().upper() == "TRUE"
    except OSError:
        return False


def watch(client, local_dir: str, url: str, pid: int, interval: float,
          log_file: str | None = None, log_url: str | None = None,
          mirror_after: str | None = None, preemption_url: str | None = None,
          preempted_flag: str | None = None, check_every: float = 1.0) -> None:
    """Upload ``local_dir`` (and the log) every ``interval`` s until process ``pid`` exits.

    When the metadata server announces a preemption: write ``preempted_flag``, interrupt the
    training (SIGINT, as Ctrl-C) so it stops cleanly, and upload what it left, all within the
    notice period.
    """
    while process_exists(pid):
        deadline = time.monotonic() + interval
        while time.monotonic() < deadline and process_exists(pid):
            if preemption_announced(preemption_url):
                _save_on_preemption(client, local_dir, url, pid, log_file, log_url,
                                    mirror_after, preempted_flag)
                return
            time.sleep(min(check_every, interval))
        sync_once(client, local_dir, url, log_file, log_url, mirror_after)


def _save_on_preemption(client, local_dir, url, pid, log_file, log_url, mirror_after,
                        preempted_flag, grace: float = 20.0) -> None:
    import signal

    print(f"[agent] {datetime.now(timezone.utc):%H:%M:%S} preemption notice: stopping the "
          f"training and saving the run directory", flush=True)
    if preempted_flag:
        with open(preempted_flag, "w", encoding="utf-8") as stream:
            stream.write(datetime.now(timezone.utc).isoformat(timespec="seconds") + "\n")
    try:
        os.kill(pid, signal.SIGINT)
    except ProcessLookupError:
        pass
    deadline = time.monotonic() + grace
    while process_exists(pid) and time.monotonic() < deadline:
        time.sleep(0.2)
    sync_once(client, local_dir, url, log_file, log_url, mirror_after)


def sync_once(client, local_dir: str, url: str, log_file: str | None = None,
              log_url: str | None = None, mirror_after: str | None = None) -> None:
    try:
        if os.path.isdir(local_dir):
            report = storage.upload_tree(client, local_dir, url,
                                         delete_extra=_mirror(mirror_after))
            if report.transferred or report.deleted:
                print(f"[sync] {datetime.now(timezone.utc):%H:%M:%S} {url}: {report}", flush=True)
        if log_file and log_url and os.path.isfile(log_file):
            storage.upload_file(client, log_file, log_url)
    except Exception as error:  # a failed sync is retried at the next interval, never fatal
        print(f"[sync] failed, retrying later: {type(error).__name__}: {error}", flush=True)


def verified_manifest(client, local_dir: str, url: str) -> dict[str, str]:
    """``{name: crc32c}`` of every local file, after checking the bucket holds the same bytes."""
    if not os.path.isdir(local_dir):
        return {}
    remote = storage.remote_files(client, url)
    manifest = {}
    for name, path in storage.local_files(local_dir).items():
        crc = storage.file_crc32c(path)
        if name not in remote or remote[name].crc32c != crc:
            raise storage.StorageError(f"{url}/{name} is missing or differs from {path}")
        manifest[name] = crc
    return manifest


def finish(client, local_dir: str, url: str, marker_url: str, marker: dict,
           mirror_after: str | None = None, retries: int = 3, retry_wait: float = 10.0,
           log_file: str | None = None, log_url: str | None = None) -> bool:
    """Final upload with retries, verified; only then the completion marker. False: no marker."""
    for attempt in range(1, retries + 1):
        try:
            if os.path.isdir(local_dir):
                storage.upload_tree(client, local_dir, url, delete_extra=_mirror(mirror_after))
            manifest = verified_manifest(client, local_dir, url)
            break
        except Exception as error:  # noqa: BLE001  (any failure is retried, then reported)
            print(f"[agent] final upload, attempt {attempt}/{retries} failed: "
                  f"{type(error).__name__}: {error}", flush=True)
            if attempt == retries:
                return False
            time.sleep(retry_wait * attempt)
    if log_file and log_url and os.path.isfile(log_file):
        try:
            storage.upload_file(client, log_file, log_url)
        except Exception as error:  # noqa: BLE001  (the log is not the run)
            print(f"[agent] log upload failed: {error}", flush=True)
    sizes = sum(os.path.getsize(os.path.join(local_dir, name)) for name in manifest)
    storage.write_json(client, marker_url, dict(marker, uploaded={
        "files": len(manifest), "bytes": sizes, "url": url}, manifest=manifest))
    return True


# float32 matmuls of 512 x 512 normal values differ from float64 by ~1e-4; garbage by far more.
MATMUL_TOLERANCE = 1e-2


def gpu_check(expected: int, size: int = 512) -> dict:
    """Run a matmul on every visible GPU and compare it with the CPU's; returns the report.

    ``torch.cuda.device_count()`` alone proves nothing: a torch build without kernels for the
    GPU's architecture counts it, then fails at the first kernel ("no kernel image is
    available for execution on the device").

    >>> gpu_check(1)["reason"]  # on a machine without CUDA  # doctest: +SKIP
    'no GPU: torch does not see the 1 GPU(s) of this VM'
    """
    import torch

    report: dict = {"ok": False, "torch": torch.__version__, "cuda": torch.version.cuda,
                    "expected_gpus": expected, "devices": [], "reason": None}
    found = torch.cuda.device_count() if torch.cuda.is_available() else 0
    if found < expected:
        report["reason"] = f"no GPU: torch does not see the {expected} GPU(s) of this VM"
        return report
    torch.backends.cuda.matmul.allow_tf32 = False  # full float32, comparable with the CPU
    generator = torch.Generator().manual_seed(0)
    left, right = (torch.randn(size, size, generator=generator) for _ in range(2))
    reference = left.double() @ right.double()
    for index in range(found):
        major, minor = torch.cuda.get_device_capability(index)
        device = {"index": index, "name": torch.cuda.get_device_name(index),
                  "capability": f"{major}.{minor}"}
        report["devices"].append(device)
        where = (f"GPU {index} ({device['name']}, compute capability {major}.{minor}) with "
                 f"torch {torch.__version__} (CUDA {torch.version.cuda})")
        try:
            product = (left.to(f"cuda:{index}") @ right.to(f"cuda:{index}")).cpu()
        except RuntimeError as error:
            report["reason"] = (f"CUDA kernels do not run on {where}: "
                                f"{str(error).strip().splitlines()[0]}")
            return report
        max_error = float((product.double() - reference).abs().max())
        device["matmul_max_error"] = max_error
        if not max_error <= MATMUL_TOLERANCE:  # NaN fails too
            report["reason"] = (f"a matmul on {where} differs from the CPU's by "
                                f"{max_error:.3g} (at most {MATMUL_TOLERANCE:g} allowed)")
            return report
    report["ok"] = True
    return report


def _gpu_check_command(expected: int, report_file: str) -> int:
    report = gpu_check(expected)
    with open(report_file, "w", encoding="utf-8") as stream:
        json.dump(report, stream, indent=2)
    for device in report["devices"]:
        print(f"[gpu] GPU {device['index']}: {device['name']}, compute capability "
              f"{device['capability']}, matmul max error "
              f"{device.get('matmul_max_error', 'not computed')}")
    if not report["ok"]:
        print(report["reason"], flush=True)
        return 1
    print(f"[gpu] CUDA kernels ran on {len(report['devices'])} GPU(s) with torch "
          f"{report['torch']} (CUDA {report['cuda']})", flush=True)
    return 0


def _read_report(path: str | None) -> dict | None:
    if not path or not os.path.isfile(path):
        return None
    with open(path, encoding="utf-8") as stream:
        return json.load(stream)


def delete_self(project: str, zone: str, instance: str) -> None:
    from .compute import Compute

    Compute().delete(project, zone, instance, wait=False)


def read_secret(name: str, project: str) -> str:
    """The latest version of Secret Manager secret ``name``, read with the VM's identity."""
    import base64

    import google.auth
    from google.auth.transport.requests import AuthorizedSession

    credentials, _ = google.auth.default(
        scopes=["https://www.googleapis.com/auth/cloud-platform"])
    response = AuthorizedSession(credentials).get(
        f"https://secretmanager.googleapis.com/v1/projects/{project}/secrets/{name}/versions/"
        f"latest:access", timeout=30)
    if response.status_code != 200:
        raise UserError(f"cannot read secret {name!r} in {project}: HTTP {response.status_code}")
    return base64.b64decode(response.json()["payload"]["data"]).decode("utf-8").strip()


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m backend.ml.cloud.agent",
                                     description="Cloud Storage sync and VM housekeeping for a "
                                     "cloud training run.")
    parser.add_argument("--project", default=os.environ.get("GOOGLE_CLOUD_PROJECT"))
    commands = parser.add_subparsers(dest="command", required=True)
    up = commands.add_parser("up")
    up.add_argument("local_dir")
    up.add_argument("url")
    up.add_argument("--mirror-after", metavar="FLAG",
                    help="remove remote objects missing locally only when FLAG exists")
    put = commands.add_parser("put")
    put.add_argument("file")
    put.add_argument("url")
    down = commands.add_parser("down")
    down.add_argument("url")
    down.add_argument("local_dir")
    watch_parser = commands.add_parser("watch")
    watch_parser.add_argument("local_dir")
    watch_parser.add_argument("url")
    watch_parser.add_argument("--pid", type=int, required=True)
    watch_parser.add_argument("--interval", type=float, default=60.0)
    watch_parser.add_argument("--log-file")
    watch_parser.add_argument("--log-url")
    watch_parser.add_argument("--mirror-after", metavar="FLAG")
    watch_parser.add_argument("--preemption-url", help="metadata server's instance/preempted")
    watch_parser.add_argument("--preempted-flag", metavar="FILE",
                              help="written when a preemption was announced")
    done = commands.add_parser("finish")
    done.add_argument("local_dir")
    done.add_argument("url")
    done.add_argument("marker_url")
    done.add_argument("--status", required=True, choices=("completed", "failed"))
    done.add_argument("--exit-code", type=int, default=0)
    done.add_argument("--reason", default="")
    done.add_argument("--step", default="", help="the startup script's step that failed")
    done.add_argument("--gpu-report", metavar="FILE", help="gpu-check's report, if it ran")
    done.add_argument("--instance", default=socket.gethostname())
    done.add_argument("--zone", default="")
    done.add_argument("--mirror-after", metavar="FLAG")
    done.add_argument("--retries", type=int, default=3)
    done.add_argument("--retry-wait", type=float, default=10.0)
    done.add_argument("--log-file")
    done.add_argument("--log-url")
    check = commands.add_parser("gpu-check")
    check.add_argument("--expect", type=int, default=1, help="GPUs the VM has")
    check.add_argument("--report", required=True, metavar="FILE", help="where the JSON goes")
    delete = commands.add_parser("delete-self")
    delete.add_argument("--zone", required=True)
    delete.add_argument("--instance", required=True)
    secret = commands.add_parser("secret")
    secret.add_argument("name")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        if args.command == "delete-self":
            delete_self(args.project, args.zone, args.instance)
            print(f"[agent] deletion of {args.instance} requested", flush=True)
            return 0
        if args.command == "gpu-check":
            return _gpu_check_command(args.expect, args.report)
        if args.command == "secret":
            sys.stdout.write(read_secret(args.name, args.project))
            return 0
        client = storage.storage_client(args.project)
        if args.command == "up":
            report = storage.upload_tree(client, args.local_dir, args.url,
                                         delete_extra=_mirror(args.mirror_after))
            print(f"[sync] {args.url}: {report}")
        elif args.command == "put":
            storage.upload_file(client, args.file, args.url)
        elif args.command == "down":
            print(f"[sync] {args.url}: {storage.download_tree(client, args.url, args.local_dir)}")
        elif args.command == "watch":
            watch(client, args.local_dir, args.url, args.pid, args.interval, args.log_file,
                  args.log_url, args.mirror_after, args.preemption_url, args.preempted_flag)
        elif args.command == "finish":
            marker = {"status": args.status, "exit_code": args.exit_code,
                      "reason": args.reason or None,
                      "failed_step": (args.step or None) if args.status == "failed" else None,
                      "gpu": _read_report(args.gpu_report), "instance": args.instance,
                      "zone": args.zone, "finished_at": datetime.now(timezone.utc).isoformat(
                          timespec="seconds")}
            if not finish(client, args.local_dir, args.url, args.marker_url, marker,
                          args.mirror_after, args.retries, args.retry_wait, args.log_file,
                          args.log_url):
                print("[agent] no completion marker written", file=sys.stderr)
                return 1
        return 0
    except UserError as error:
        print(f"error: {error}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
