"""One process per run directory: real lock holders in real processes, killed for real."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from datetime import datetime, timedelta, timezone

import pytest

from backend.ml.run_lock import (
    HEARTBEAT_FILE,
    RunInUseError,
    RunLock,
    live_holder,
    process_exists,
    read_heartbeat,
)
from support.cli import REPO_ROOT

HOLDER = """
import sys, time
from backend.ml.run_lock import RunLock
with RunLock(sys.argv[1], interval=0.2):
    print("locked", flush=True)
    time.sleep(120)
"""


@pytest.fixture
def holder():
    """Start a separate process that holds the lock on a directory; it is killed at the end."""
    started = []

    def start(run_dir):
        process = subprocess.Popen([sys.executable, "-c", HOLDER, str(run_dir)], cwd=REPO_ROOT,
                                   stdout=subprocess.PIPE, text=True)
        assert process.stdout.readline().strip() == "locked"
        started.append(process)
        return process

    yield start
    for process in started:
        if process.poll() is None:
            process.kill()
        process.wait()


def write_heartbeat(run_dir, host, pid, age_seconds):
    beat = datetime.now(timezone.utc) - timedelta(seconds=age_seconds)
    (run_dir / HEARTBEAT_FILE).write_text(json.dumps({
        "host": host, "pid": pid, "started_at": beat.isoformat(), "last_beat": beat.isoformat()}))


def dead_pid() -> int:
    process = subprocess.Popen([sys.executable, "-c", "pass"])
    process.wait()
    return process.pid


def test_a_live_holder_in_another_process_is_refused_by_name(tmp_path, holder):
    process = holder(tmp_path)
    with pytest.raises(RunInUseError) as refused:
        RunLock(tmp_path, action="resume").acquire()
    message = str(refused.value)
    assert f"pid {process.pid} on host {socket.gethostname()}" in message
    assert "`run_experiment.py resume` continues only a run whose process has stopped" in message
    assert f"kill -TERM {process.pid}" in message
    with pytest.raises(RunInUseError, match="choose another --run-id"):
        RunLock(tmp_path, action="train").acquire()


def test_the_lock_of_a_killed_process_is_taken_over(tmp_path, holder):
    process = holder(tmp_path)
    process.send_signal(signal.SIGKILL)
    process.wait()
    left_behind = read_heartbeat(tmp_path)
    assert left_behind.pid == process.pid  # SIGKILL gives no chance to clean up
    assert not left_behind.is_live() and live_holder(tmp_path) is None
    with RunLock(tmp_path):
        assert read_heartbeat(tmp_path).pid == os.getpid()
    assert not (tmp_path / HEARTBEAT_FILE).exists()  # released: no heartbeat, lock free again
    with RunLock(tmp_path):
        pass


def test_different_runs_in_one_output_directory_run_side_by_side(tmp_path, holder):
    first, second = tmp_path / "a_111111", tmp_path / "b_222222"
    first.mkdir()
    second.mkdir()
    process = holder(first)
    with RunLock(second):
        assert read_heartbeat(first).pid == process.pid
        assert read_heartbeat(second).pid == os.getpid()


def test_the_heartbeat_is_refreshed_while_the_lock_is_held(tmp_path):
    with RunLock(tmp_path, interval=0.2):
        first = read_heartbeat(tmp_path)
        time.sleep(1.5)
        later = read_heartbeat(tmp_path)
    assert later.last_beat > first.last_beat and later.started_at == first.started_at
    assert first.host == socket.gethostname() and first.pid == os.getpid()


def test_a_fresh_heartbeat_from_another_host_is_respected_and_an_old_one_is_not(tmp_path):
    # A shared (network) directory: flock does not see the other machine, its heartbeat does.
    write_heartbeat(tmp_path, "gpu-vm-7", 4242, age_seconds=3)
    with pytest.raises(RunInUseError, match="pid 4242 on host gpu-vm-7"):
        RunLock(tmp_path).acquire()
    write_heartbeat(tmp_path, "gpu-vm-7", 4242, age_seconds=3600)
    with RunLock(tmp_path):
        assert read_heartbeat(tmp_path).host == socket.gethostname()


def test_liveness_rules_of_a_heartbeat(tmp_path):
    write_heartbeat(tmp_path, socket.gethostname(), dead_pid(), age_seconds=1)
    assert live_holder(tmp_path) is None  # pid gone on this host
    write_heartbeat(tmp_path, socket.gethostname(), os.getpid(), age_seconds=1)
    assert live_holder(tmp_path).pid == os.getpid()
    write_heartbeat(tmp_path, socket.gethostname(), os.getpid(), age_seconds=600)
    assert live_holder(tmp_path) is None  # too old: frozen, or the pid was reused
    (tmp_path / HEARTBEAT_FILE).write_text('{"host": "x", "pi')
    assert read_heartbeat(tmp_path) is None and live_holder(tmp_path) is None
    assert process_exists(os.getpid()) and not process_exists(dead_pid())
