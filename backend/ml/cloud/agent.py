"""What the training VM's startup script calls: ``python -m backend.ml.cloud.agent COMMAND``.

    up LOCAL_DIR gs://B/P [--delete]        upload new/changed files (mirror with --delete)
    put FILE gs://B/P/NAME                  upload one file
    down gs://B/P LOCAL_DIR                 download new/changed files, CRC32C-verified
    watch LOCAL_DIR gs://B/P --pid PID      upload every --interval seconds while PID lives
    marker gs://B/P/DONE.json --status S    write the completion marker
    delete-self --project P --zone Z --instance I
    secret NAME --project P                 print a Secret Manager secret (for W&B on the VM)

Credentials are the VM's service account (Application Default Credentials through the
metadata server); nothing here writes a credential anywhere.
"""

from __future__ import annotations

import argparse
import os
import socket
import sys
import time
from datetime import datetime, timezone

from ..errors import UserError
from . import storage


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:  # a zombie (exited, not yet reaped by its parent) is not alive
        with open(f"/proc/{pid}/stat", encoding="ascii") as stream:
            return stream.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return True


def watch(client, local_dir: str, url: str, pid: int, interval: float,
          log_file: str | None = None, log_url: str | None = None) -> None:
    """Upload ``local_dir`` (and the log) every ``interval`` s until process ``pid`` exits."""
    while _pid_alive(pid):
        deadline = time.monotonic() + interval
        while time.monotonic() < deadline and _pid_alive(pid):
            time.sleep(min(0.5, interval))
        sync_once(client, local_dir, url, log_file, log_url)


def sync_once(client, local_dir: str, url: str, log_file: str | None = None,
              log_url: str | None = None) -> None:
    try:
        if os.path.isdir(local_dir):
            report = storage.upload_tree(client, local_dir, url, delete_extra=True)
            if report.transferred or report.deleted:
                print(f"[sync] {datetime.now(timezone.utc):%H:%M:%S} {url}: {report}", flush=True)
        if log_file and log_url and os.path.isfile(log_file):
            storage.upload_file(client, log_file, log_url)
    except Exception as error:  # a failed sync is retried at the next interval, never fatal
        print(f"[sync] failed, retrying later: {type(error).__name__}: {error}", flush=True)


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
    up.add_argument("--delete", action="store_true")
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
    marker = commands.add_parser("marker")
    marker.add_argument("url")
    marker.add_argument("--status", required=True, choices=("completed", "failed"))
    marker.add_argument("--exit-code", type=int, default=0)
    marker.add_argument("--instance", default=socket.gethostname())
    marker.add_argument("--zone", default="")
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
        if args.command == "secret":
            sys.stdout.write(read_secret(args.name, args.project))
            return 0
        client = storage.storage_client(args.project)
        if args.command == "up":
            print(f"[sync] {args.url}: "
                  f"{storage.upload_tree(client, args.local_dir, args.url, args.delete)}")
        elif args.command == "put":
            storage.upload_file(client, args.file, args.url)
        elif args.command == "down":
            print(f"[sync] {args.url}: {storage.download_tree(client, args.url, args.local_dir)}")
        elif args.command == "watch":
            watch(client, args.local_dir, args.url, args.pid, args.interval, args.log_file,
                  args.log_url)
        elif args.command == "marker":
            storage.write_json(client, args.url, {
                "status": args.status, "exit_code": args.exit_code, "instance": args.instance,
                "zone": args.zone, "finished_at": datetime.now(timezone.utc).isoformat(
                    timespec="seconds")})
        return 0
    except UserError as error:
        print(f"error: {error}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
