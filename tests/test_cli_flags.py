"""Flags that cannot go together are refused with a message, never silently dropped."""

from __future__ import annotations

import pytest

from backend.ml.cli import main


@pytest.mark.parametrize("argv, message", [
    (["a.yaml", "--compare"], "--compare does not take CONFIG.yaml (a.yaml)"),
    (["--compare", "--predict", "run_1", "--input", "x.txt", "--output", "y.jsonl"],
     "--compare and --predict cannot be combined"),
    (["--resume", "runs/a", "--export", "runs/a"], "--export and --resume cannot be combined"),
    (["--cloud-logs", "run_1", "--cloud-cost", "run_1"],
     "--cloud-logs and --cloud-cost cannot be combined"),
    (["--follow", "--cloud-status"], "--follow only works with --cloud-logs"),
    (["a.yaml", "--max-parallel", "3"], "--max-parallel only works with --cloud"),
    (["--predict", "run_1"], "--predict needs --input FILE and --output OUT.jsonl"),
    (["--input", "x.txt", "--compare"], "--input only works with --predict"),
    (["--report", "out.html", "--resume", "runs/a"], "--report only works with --compare"),
    (["--dry-run", "--compare"], "--dry-run only works with CONFIG.yaml"),
])
def test_conflicting_or_orphan_flags_are_refused(argv, message, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(argv)
    assert exit_info.value.code == 2
    assert message in capsys.readouterr().err
