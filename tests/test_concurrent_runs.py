"""Real CLI processes on one run directory: the second is refused; a killed one shows crashed."""

from __future__ import annotations

import signal
import subprocess
import sys
import time

import pytest

from backend.ml.checkpoint_files import step_checkpoints
from backend.ml.cli import main
from backend.ml.experiments import ExperimentManager, format_comparison_table
from backend.ml.run_lock import read_heartbeat
from support.cli import REPO_ROOT, cli_environment
from support.configs import tiny_config, write_config


def wait_for(condition, what: str, process: subprocess.Popen, timeout: float = 180):
    deadline = time.monotonic() + timeout
    while not condition():
        if process.poll() is not None:
            raise AssertionError(f"the run ended before {what}: {process.communicate()}")
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.2)


@pytest.mark.slow
def test_same_run_id_and_resume_are_refused_while_alive_and_a_killed_run_shows_crashed(tmp_path,
                                                                                       capsys):
    runs = tmp_path / "runs"
    long_run = write_config(tmp_path, tiny_config(
        training={"epochs": 5000}, logging={"tensorboard": False, "save_steps": 4}), "long.yaml")
    intruder = write_config(tmp_path, tiny_config(description="intruder"), "intruder.yaml")
    first = subprocess.Popen([sys.executable, str(REPO_ROOT / "run_experiment.py"), str(long_run),
                              "--output-dir", str(runs), "--run-id", "shared"], cwd=REPO_ROOT,
                             env=cli_environment(), stdout=subprocess.DEVNULL,
                             stderr=subprocess.PIPE, text=True)
    run_dir = runs / "shared"
    try:
        wait_for(lambda: step_checkpoints(run_dir / "checkpoints", verify_checksums=False),
                 "the first step checkpoint", first)
        assert read_heartbeat(run_dir).pid == first.pid

        # Another process (this one) tries the same run id, then to resume the live run.
        capsys.readouterr()
        assert main([str(intruder), "--output-dir", str(runs), "--run-id", "shared"]) == 1
        refused = capsys.readouterr().err
        assert f"run directory {run_dir} is in use by pid {first.pid}" in refused
        assert main(["resume", str(run_dir)]) == 1
        refused = capsys.readouterr().err
        assert "`run_experiment.py resume` continues only a run whose process has stopped" \
            in refused
        assert first.poll() is None, "the first run must still be training"
        assert "intruder" not in (run_dir / "config.yaml").read_text()

        assert ExperimentManager(runs).load_run("shared").status == "running"
    finally:
        first.send_signal(signal.SIGKILL)
        first.wait()

    crashed = ExperimentManager(runs).load_run("shared")
    assert (crashed.status, crashed.resumable) == ("crashed", True)
    row = format_comparison_table([run_dir]).splitlines()[2]
    assert row.split()[:3] == ["shared", "crashed", "(resumable)"]
