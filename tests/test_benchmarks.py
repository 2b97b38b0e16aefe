"""The training benchmark runs, and shows per-batch padding leaves the training math unchanged."""

from __future__ import annotations

import re
import subprocess
import sys

from conftest import REPO_ROOT, cli_environment


def test_training_benchmark_compares_padding_on_identical_steps():
    completed = subprocess.run([sys.executable, str(REPO_ROOT / "benchmarks" / "bench_training.py"),
                                "--steps", "2", "--max-length", "64"], cwd=REPO_ROOT,
                               env=cli_environment(), capture_output=True, text=True, timeout=300)
    assert completed.returncode == 0, completed.stderr
    match = re.search(r"dynamic padding vs pad to max_length: ([\d.]+)x samples/s; max loss "
                      r"difference over the same steps ([\d.e+-]+)", completed.stdout)
    assert match, completed.stdout
    assert float(match.group(2)) < 1e-4  # masked padding: same losses, only less work
    rows = dict(re.findall(r"^(pad to max_length \(baseline\)|dynamic padding \(this trainer\))"
                           r"\s+[\d.]+\s+(\d+)$", completed.stdout, flags=re.MULTILINE))
    assert int(rows["pad to max_length (baseline)"]) == 16 * 64  # batch 16, every row 64 tokens
    assert int(rows["dynamic padding (this trainer)"]) < 16 * 64
