"""gcp-storage-emulator on 127.0.0.1, started once per test process and stopped at exit."""

from __future__ import annotations

import atexit
import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

_PROCESS: subprocess.Popen | None = None
_URL: str | None = None


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _executable() -> list[str]:
    beside = Path(sys.executable).with_name("gcp-storage-emulator")
    if beside.is_file():
        return [str(beside)]
    found = shutil.which("gcp-storage-emulator")
    if not found:
        raise RuntimeError("gcp-storage-emulator is not installed "
                           "(pip install gcp-storage-emulator)")
    return [found]


def emulator_url() -> str:
    """``http://127.0.0.1:PORT`` of the running emulator, starting it on first use."""
    global _PROCESS, _URL
    if _URL is not None and _PROCESS is not None and _PROCESS.poll() is None:
        return _URL
    port = _free_port()
    env = {key: value for key, value in os.environ.items() if not key.startswith("GOOGLE_")}
    _PROCESS = subprocess.Popen([*_executable(), "start", "--host=127.0.0.1", f"--port={port}",
                                 "--in-memory"], stdout=subprocess.DEVNULL,
                                stderr=subprocess.DEVNULL, env=env)
    atexit.register(_stop)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            urllib.request.urlopen(f"{url}/storage/v1/b?project=probe", timeout=1).read()
            _URL = url
            return url
        except OSError:
            if _PROCESS.poll() is not None:
                raise RuntimeError("gcp-storage-emulator exited at start") from None
            time.sleep(0.2)
    raise RuntimeError("gcp-storage-emulator did not answer within 30 s")


def _stop() -> None:
    if _PROCESS is not None and _PROCESS.poll() is None:
        _PROCESS.terminate()
        try:
            _PROCESS.wait(timeout=10)
        except subprocess.TimeoutExpired:
            _PROCESS.kill()
