"""A run whose process is gone is shown as crashed (resumable or not), never as running."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from datetime import datetime, timedelta, timezone

from backend.ml.checkpoint_files import write_manifest
from backend.ml.config import ExperimentConfig
from backend.ml.experiments import ExperimentManager, format_comparison_table
from backend.ml.experiments.report import write_report
from backend.ml.run_directory import (
    SCHEMA_VERSION,
    RunLayout,
    create_run_directory,
    run_metadata,
    write_results,
)
from backend.ml.run_lock import Heartbeat
from backend.ml.run_status import effective_status


def make_run(runs_dir, name, status="running", heartbeat=None, checkpoint_step=None):
    """A run directory as the trainer leaves it; ``heartbeat`` = (host, pid, age in seconds)."""
    started_at = f"2026-11-25T10:00:0{len(list(runs_dir.glob('*')))}+00:00"
    run_dir = create_run_directory(runs_dir, name, run_id=name)
    ExperimentConfig(experiment_name=name).save_yaml(RunLayout(run_dir).config)
    write_results(run_dir, {
        "schema_version": SCHEMA_VERSION, "experiment_id": name, "experiment_name": name,
        "status": status, "error": None,
        "metadata": {**run_metadata("cpu"), "started_at": started_at}})
    if heartbeat is not None:
        host, pid, age = heartbeat
        beat = datetime.now(timezone.utc) - timedelta(seconds=age)
        Heartbeat(host=host, pid=pid, started_at=beat, last_beat=beat).write(run_dir)
    if checkpoint_step is not None:
        checkpoint = run_dir / "checkpoints" / f"step-{checkpoint_step:06d}"
        (checkpoint / "model").mkdir(parents=True)
        (checkpoint / "model" / "model.safetensors").write_bytes(os.urandom(256))
        (checkpoint / "training_state.pt").write_bytes(os.urandom(64))
        write_manifest(checkpoint)
    return run_dir


def dead_pid() -> int:
    process = subprocess.Popen([sys.executable, "-c", "pass"])
    process.wait()
    return process.pid


HOST = socket.gethostname()


def test_a_dead_process_makes_a_running_run_crashed_and_says_where_to_resume(tmp_path):
    run_dir = make_run(tmp_path, "tiny_aaaaaa", heartbeat=(HOST, dead_pid(), 2),
                       checkpoint_step=40)
    status = effective_status(run_dir)
    assert status.status == "crashed" and status.resumable
    assert status.resumable_from == run_dir / "checkpoints" / "step-000040"
    assert f"run_experiment.py resume {run_dir}" in status.reason and "step-000040" in status.reason


def test_without_a_valid_checkpoint_a_crashed_run_is_not_resumable(tmp_path):
    run_dir = make_run(tmp_path, "tiny_bbbbbb", heartbeat=(HOST, dead_pid(), 2),
                       checkpoint_step=40)
    (run_dir / "checkpoints" / "step-000040" / "training_state.pt").write_bytes(b"torn")
    status = effective_status(run_dir)
    assert status.status == "crashed" and not status.resumable
    assert "not resumable" in status.reason


def test_liveness_decides_between_running_and_crashed(tmp_path):
    alive = make_run(tmp_path, "alive_111111", heartbeat=(HOST, os.getpid(), 1))
    remote = make_run(tmp_path, "remote_222222", heartbeat=("gpu-vm-7", 99999, 5))
    silent = make_run(tmp_path, "silent_333333", heartbeat=("gpu-vm-7", 99999, 3600))
    no_beat = make_run(tmp_path, "nobeat_444444")
    assert effective_status(alive).status == "running"
    assert effective_status(remote).status == "running"
    assert effective_status(silent).status == "crashed"
    assert effective_status(no_beat).status == "crashed"
    assert effective_status(silent, stale_after=7200).status == "running"


def test_other_statuses_pass_through(tmp_path):
    done = make_run(tmp_path, "done_555555", status="completed")
    stopped = make_run(tmp_path, "stopped_666666", status="interrupted", checkpoint_step=8)
    assert effective_status(done).status == "completed"
    interrupted = effective_status(stopped)
    assert interrupted.status == "interrupted" and interrupted.resumable


def test_manager_table_and_report_show_crashed_runs(tmp_path):
    runs = tmp_path / "runs"
    make_run(runs, "crashed_aaaaaa", heartbeat=(HOST, dead_pid(), 2), checkpoint_step=12)
    make_run(runs, "lost_bbbbbb", heartbeat=(HOST, dead_pid(), 2))
    make_run(runs, "live_cccccc", heartbeat=(HOST, os.getpid(), 1))
    manager = ExperimentManager(runs)
    statuses = {run.run_id: (run.status, run.resumable) for run in manager.list_runs()}
    assert statuses == {"crashed_aaaaaa": ("crashed", True), "lost_bbbbbb": ("crashed", False),
                        "live_cccccc": ("running", False)}
    assert [run.run_id for run in manager.list_runs(status="running")] == ["live_cccccc"]
    assert manager.compare_runs(["crashed_aaaaaa"])["status"] == {"crashed_aaaaaa": "crashed"}

    table = format_comparison_table(sorted(runs.iterdir()))
    rows = {run_id: next(line for line in table.splitlines() if line.split()[:1] == [run_id])
            for run_id in statuses}
    assert "crashed (resumable)" in rows["crashed_aaaaaa"]
    assert "crashed" in rows["lost_bbbbbb"] and "resumable" not in rows["lost_bbbbbb"]
    assert "running" in rows["live_cccccc"]
    assert f"run_experiment.py resume {runs / 'crashed_aaaaaa'}" in table

    report = tmp_path / "comparison.html"
    write_report(manager, manager.list_runs(), report)
    html = report.read_text()
    assert '<span class="status crashed">crashed (resumable)</span>' in html
    assert '<span class="status running">running</span>' in html
