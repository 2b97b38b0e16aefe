"""The command line as a user without a network runs it: a subprocess, output captured."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]


def cli_environment() -> dict:
    """The environment a user without a network has: no hub, no W&B server."""
    env = dict(os.environ)
    env.update(HF_HUB_OFFLINE="1", HF_DATASETS_OFFLINE="1", WANDB_MODE="offline",
               TOKENIZERS_PARALLELISM="false", PYTHONPATH=str(REPO_ROOT))
    env.pop("WANDB_API_KEY", None)
    return env


def run_cli(*args: str, cwd: Path = REPO_ROOT, check: bool = False,
            timeout: int = 600) -> subprocess.CompletedProcess:
    """Run ``python run_experiment.py ARGS`` as a user would; output is captured."""
    completed = subprocess.run([sys.executable, str(REPO_ROOT / "run_experiment.py"), *args],
                               cwd=cwd, env=cli_environment(), capture_output=True, text=True,
                               timeout=timeout)
    if check and completed.returncode != 0:
        raise AssertionError(f"run_experiment.py {' '.join(args)} exited "
                             f"{completed.returncode}:\n{completed.stdout}\n{completed.stderr}")
    return completed


def run_main(capsys, *args: str, check: bool = False) -> subprocess.CompletedProcess:
    """The CLI's ``main`` in this process, as ``run_cli`` reports it: exit status and what it
    printed (through pytest's ``capsys``). No interpreter start-up, so no second import of
    torch: for tests of what a command does rather than of the process around it."""
    from backend.ml.cli import main

    capsys.readouterr()
    status = main(list(args))
    out, err = capsys.readouterr()
    if check and status != 0:
        raise AssertionError(f"run_experiment.py {' '.join(args)} exited {status}:\n{out}\n{err}")
    return subprocess.CompletedProcess(list(args), status, out, err)
