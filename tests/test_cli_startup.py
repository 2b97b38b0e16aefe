"""A command answers at once: building the parser, --help, help-config and validating a config
(including a --dry-run that finds errors) import neither torch nor transformers, which take
seconds to import on a 2-core machine."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from support.cli import REPO_ROOT, cli_environment

HEAVY = ("torch", "transformers", "sklearn", "scipy", "pandas", "matplotlib")

# Runs the CLI's main() in a fresh interpreter, then reports which heavy modules it imported.
PROBE = """
import contextlib, io, json, sys
from backend.ml.cli import main
out = io.StringIO()
with contextlib.redirect_stdout(out), contextlib.redirect_stderr(out):
    try:
        status = main(sys.argv[1:])
    except SystemExit as exit:
        status = exit.code
print(json.dumps({"status": status, "output": out.getvalue(),
                  "heavy": [name for name in HEAVY if name in sys.modules]}))
""".replace("HEAVY", repr(HEAVY))


def _probe(*args: str) -> dict:
    completed = subprocess.run([sys.executable, "-c", PROBE, *args], cwd=REPO_ROOT,
                               env=cli_environment(), capture_output=True, text=True, timeout=120)
    assert completed.returncode == 0, completed.stderr
    return json.loads(completed.stdout.strip().splitlines()[-1])


@pytest.mark.parametrize("args", [
    ["--help"], ["train", "--help"], ["pretrain", "--help"], ["serve", "--help"],
    ["cloud", "launch", "--help"], ["compare", "--help"], ["help-config"],
    ["models", "fetch", "--help"],
])
def test_help_imports_no_heavy_library(args):
    result = _probe(*args)
    assert result["status"] == 0
    assert "usage:" in result["output"] or "training.learning_rate" in result["output"]
    assert result["heavy"] == []


def test_a_dry_run_of_a_broken_config_reports_it_without_importing_torch(tmp_path):
    config = tmp_path / "broken.yaml"
    config.write_text("experiment_name: broken\ntraining:\n  epochs: -1\n  lerning_rate: 3\n")
    result = _probe(str(config), "--dry-run")
    assert result["status"] == 2
    assert "training.epochs: must be >= 1" in result["output"]
    assert "did you mean 'learning_rate'" in result["output"]
    assert result["heavy"] == []


def test_loading_and_validating_every_shipped_config_imports_no_heavy_library():
    probe = ("import sys, json, pathlib\n"
             "from backend.ml.config import expand_sweep, load_yaml_config\n"
             "for path in sorted(pathlib.Path('experiments/configs').glob('*.yaml')):\n"
             "    expand_sweep(load_yaml_config(path))\n"
             f"print(json.dumps([name for name in {HEAVY!r} if name in sys.modules]))")
    completed = subprocess.run([sys.executable, "-c", probe], cwd=REPO_ROOT,
                               env=cli_environment(), capture_output=True, text=True, timeout=120)
    assert completed.returncode == 0, completed.stderr
    assert json.loads(completed.stdout) == []
