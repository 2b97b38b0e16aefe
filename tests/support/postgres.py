"""A real PostgreSQL server for one test session: Debian's binaries, a temporary data directory,
a free loopback port, run as the ``postgres`` user the package creates (the server refuses root).
"""

from __future__ import annotations

import glob
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


def server_binaries() -> Path | None:
    """The newest installed ``/usr/lib/postgresql/<version>/bin``, or None."""
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"),
                   key=lambda path: int(Path(path).parts[-3]))
    return Path(found[-1]).parent if found else None


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _as_server_user(command: list[str]) -> list[str]:
    if os.geteuid() != 0:
        return command
    return ["runuser", "-u", "postgres", "--", *command]


@contextmanager
def running_postgres(database: str = "studies") -> Iterator[str]:
    """Start a server, create ``database``, yield its URL, stop the server and remove its data."""
    binaries = server_binaries()
    assert binaries is not None, "PostgreSQL is not installed (apt-get install postgresql)"
    root = Path(tempfile.mkdtemp(prefix="postgres-"))
    data, sockets = root / "data", root / "sockets"
    sockets.mkdir()
    if os.geteuid() == 0:
        account = pwd.getpwnam("postgres")
        for path in (root, sockets):
            os.chown(path, account.pw_uid, account.pw_gid)
    port = _free_port()

    def run(command: list[str]) -> None:
        subprocess.run(_as_server_user(command), check=True, capture_output=True, timeout=120)

    try:
        run([str(binaries / "initdb"), "-D", str(data), "-A", "trust", "-U", "postgres",
             "--no-sync"])
        run([str(binaries / "pg_ctl"), "-D", str(data), "-w", "-l", str(root / "server.log"),
             "-o", f"-p {port} -k {sockets} -c listen_addresses=127.0.0.1 -c fsync=off",
             "start"])
        try:
            run([str(binaries / "createdb"), "-h", "127.0.0.1", "-p", str(port), "-U",
                 "postgres", database])
            yield f"postgresql://postgres@127.0.0.1:{port}/{database}"
        finally:
            subprocess.run(_as_server_user([str(binaries / "pg_ctl"), "-D", str(data), "-m",
                                            "fast", "-w", "stop"]), capture_output=True,
                           timeout=120)
    finally:
        shutil.rmtree(root, ignore_errors=True)
