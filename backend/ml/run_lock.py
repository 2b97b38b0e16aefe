"""One process per run directory: an OS file lock held for the whole run, plus a heartbeat.

``run.lock`` is locked with ``flock`` while a run trains or resumes; the kernel releases it when
the process ends, however it ends. ``heartbeat.json`` says who holds it (host, pid, start time)
and is refreshed every few seconds, so other tools on any machine that sees the directory can
tell a live run from a dead one: the pid is gone on the same host, or the last beat is too old.

>>> with RunLock(run_dir):          # doctest: +SKIP
...     train(...)                   # a second RunLock(run_dir) anywhere raises RunInUseError
"""

from __future__ import annotations

import errno
import fcntl
import json
import logging
import os
import socket
import threading
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

from .errors import UserError
from .fileio import atomic_write_json, storage_errors_explained

LOCK_FILE = "run.lock"
HEARTBEAT_FILE = "heartbeat.json"
HEARTBEAT_SECONDS = 5.0
# A heartbeat older than this belongs to a dead (or frozen) process, even on another host.
STALE_AFTER_SECONDS = 60.0

logger = logging.getLogger(__name__)


class RunInUseError(UserError):
    """Another live process holds the run directory."""


def _now() -> datetime:
    return datetime.now(timezone.utc)


def process_exists(pid: int) -> bool:
    """Whether ``pid`` is a live process on this host (a zombie counts as dead)."""
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # someone else's process
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii", errors="replace") as stream:
            return stream.read().rpartition(")")[2].split()[0] != "Z"
    except (OSError, IndexError):
        return True  # no /proc (macOS): the signal check is all there is


@dataclass(frozen=True)
class Heartbeat:
    """Who holds a run directory, as written in its ``heartbeat.json``."""

    host: str
    pid: int
    started_at: datetime
    last_beat: datetime

    def age_seconds(self, now: datetime | None = None) -> float:
        return ((now or _now()) - self.last_beat).total_seconds()

    def is_live(self, stale_after: float = STALE_AFTER_SECONDS, now: datetime | None = None
                ) -> bool:
        """False when the beat is older than ``stale_after`` or the pid is gone on this host."""
        if self.age_seconds(now) > stale_after:
            return False
        return self.host != socket.gethostname() or process_exists(self.pid)

    def write(self, run_dir: str | os.PathLike) -> None:
        """Replace ``run_dir``'s heartbeat.json with this one, atomically."""
        atomic_write_json(Path(run_dir) / HEARTBEAT_FILE, {
            "host": self.host, "pid": self.pid,
            "started_at": self.started_at.isoformat(timespec="seconds"),
            "last_beat": self.last_beat.isoformat(timespec="seconds")})

    def describe(self) -> str:
        """'pid 4242 on host gpu-1, running since 2026-11-25T10:00:00+00:00, last beat 3 s ago'."""
        return (f"pid {self.pid} on host {self.host}, running since "
                f"{self.started_at.isoformat(timespec='seconds')}, last heartbeat "
                f"{max(self.age_seconds(), 0):.0f} s ago")


def read_heartbeat(run_dir: str | os.PathLike) -> Heartbeat | None:
    """The heartbeat of ``run_dir``; None when absent or unreadable (never raises)."""
    try:
        data = json.loads((Path(run_dir) / HEARTBEAT_FILE).read_text(encoding="utf-8"))
        return Heartbeat(host=str(data["host"]), pid=int(data["pid"]),
                         started_at=datetime.fromisoformat(data["started_at"]),
                         last_beat=datetime.fromisoformat(data["last_beat"]))
    except (OSError, UnicodeDecodeError, ValueError, KeyError, TypeError):
        return None


def live_holder(run_dir: str | os.PathLike, stale_after: float = STALE_AFTER_SECONDS
                ) -> Heartbeat | None:
    """The heartbeat of the live process writing ``run_dir``, or None when nobody is."""
    heartbeat = read_heartbeat(run_dir)
    return heartbeat if heartbeat is not None and heartbeat.is_live(stale_after) else None


class RunLock:
    """Hold ``run_dir`` for this process: lock file plus heartbeat thread, released on exit.

    ``action`` words the refusal: ``"train"`` or ``"resume"``.

    >>> with RunLock(Path("experiments/runs/tiny_3f9a1c"), action="resume"):  # doctest: +SKIP
    ...     resume(...)
    """

    def __init__(self, run_dir: str | os.PathLike, action: str = "train",
                 interval: float = HEARTBEAT_SECONDS):
        self.run_dir = Path(run_dir)
        self.action = action
        self.interval = interval
        self._handle: int | None = None
        self._started_at = _now()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def __enter__(self) -> RunLock:
        self.acquire()
        return self

    def __exit__(self, *exc_info) -> None:
        self.release()

    def acquire(self) -> None:
        """Take the lock and start beating; RunInUseError when a live process holds it."""
        lock_path = self.run_dir / LOCK_FILE
        with storage_errors_explained(lock_path):
            handle = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o644)
        os_locked = True
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(handle)
            raise self._refusal(read_heartbeat(self.run_dir)) from None
        except OSError as error:
            if error.errno not in (errno.ENOLCK, errno.EOPNOTSUPP, errno.ENOSYS):
                os.close(handle)
                raise
            os_locked = False  # a file system without locks: the heartbeat decides alone
        # On this host the OS lock is the truth (a leftover heartbeat's pid may be reused);
        # flock does not reach across hosts on network file systems, a fresh heartbeat does.
        holder = live_holder(self.run_dir)
        if holder is not None and (holder.host != socket.gethostname() or not os_locked):
            os.close(handle)
            raise self._refusal(holder)
        self._handle = handle
        self._beat()
        self._thread = threading.Thread(target=self._keep_beating, name="run-heartbeat",
                                        daemon=True)
        self._thread.start()

    def release(self) -> None:
        """Stop beating, remove the heartbeat and unlock; safe to call twice."""
        if self._handle is None:
            return
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        (self.run_dir / HEARTBEAT_FILE).unlink(missing_ok=True)
        fcntl.flock(self._handle, fcntl.LOCK_UN)
        os.close(self._handle)
        self._handle = None

    def _refusal(self, holder: Heartbeat | None) -> RunInUseError:
        who = holder.describe() if holder else "another process"
        if self.action == "resume":
            advice = ("`run_experiment.py resume` continues only a run whose process has "
                      "stopped: wait for it to finish"
                      + (f", or stop it (kill -TERM {holder.pid} on {holder.host})"
                         if holder else ""))
        else:
            advice = "choose another --run-id, or wait for that run to finish"
        return RunInUseError(f"run directory {self.run_dir} is in use by {who}; {advice}.")

    def _beat(self) -> None:
        Heartbeat(host=socket.gethostname(), pid=os.getpid(), started_at=self._started_at,
                  last_beat=_now()).write(self.run_dir)

    def _keep_beating(self) -> None:
        warned = False
        while not self._stop.wait(self.interval):
            try:
                self._beat()
            except (UserError, OSError) as error:  # a full disk must not kill the run itself
                if not warned:
                    logger.warning("cannot refresh %s: %s", self.run_dir / HEARTBEAT_FILE, error)
                    warned = True
