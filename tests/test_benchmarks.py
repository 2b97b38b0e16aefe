"""The training benchmark runs every path it names and reports them against Trainer; the
language-detection benchmark scores the project's detector."""

from __future__ import annotations

import re
import subprocess
import sys

import pytest

from support.cli import REPO_ROOT, cli_environment


@pytest.mark.slow
def test_training_benchmark_reports_each_path_against_trainer():
    completed = subprocess.run(
        [sys.executable, str(REPO_ROOT / "benchmarks" / "bench_training.py"), "--data", "demo",
         "--model", "tiny", "--max-samples", "90", "--only", "defaults", "trainer", "padded",
         "--pad-steps", "1", "--pad-length", "64"],
        cwd=REPO_ROOT, env=cli_environment(), capture_output=True, text=True, timeout=600)
    assert completed.returncode == 0, completed.stderr[-3000:]
    rows = {match.group(1).strip(): match.groups()[1:] for match in re.finditer(
        r"^(this trainer \(defaults\)|Trainer, group_by_length|pad to max length)\s+([\d.]+)"
        r"\s+(\S*)\s+(\S+)\s+(\d+)\s+(\S+)\s+(\S+)", completed.stdout, flags=re.MULTILINE)}
    assert set(rows) == {"this trainer (defaults)", "Trainer, group_by_length",
                         "pad to max length"}, completed.stdout
    assert rows["Trainer, group_by_length"][1] == "1.00x"  # the peer is the yardstick
    for name in ("this trainer (defaults)", "Trainer, group_by_length"):
        samples_per_second, _, wall, peak, f1_macro, f1_weighted = rows[name]
        assert float(samples_per_second) > 0 and float(wall) > 0 and int(peak) > 0
    assert rows["pad to max length"][4] == "-"  # timed on a few steps, never scored
    # Without Trainer's bf16 path in this run, the summary compares each side's default
    # precision, and says which (the like-for-like line needs trainer-bf16 where ours is bf16).
    summary = re.search(r"(?:like for like \(fp32 on both sides\): |this trainer \(defaults, "
                        r"bf16\) vs Trainer with group_by_length \(fp32, its default\): )"
                        r"[\d.]+x samples/s, [\d.]+x faster to a trained model, "
                        r"F1 macro ([+-][\d.]+)", completed.stdout)
    assert summary, completed.stdout
    # The summary's F1 difference is the difference of the two scored rows.
    ours, peer = (float(rows[name][4]) for name in ("this trainer (defaults)",
                                                    "Trainer, group_by_length"))
    assert float(summary.group(1)) == pytest.approx(ours - peer, abs=2e-3)
    assert re.search(r"vs padding to 64: [\d.]+x samples/s", completed.stdout)


def test_language_detection_benchmark_scores_the_project_detector():
    completed = subprocess.run(
        [sys.executable, str(REPO_ROOT / "benchmarks" / "bench_language_detection.py"),
         "--only", "py3langid"], cwd=REPO_ROOT, env=cli_environment(), capture_output=True,
        text=True, timeout=300)
    assert completed.returncode == 0, completed.stderr[-3000:]
    row = re.search(r"^py3langid\s+(\d+)/(\d+)\s+([\d.]+)\s+([\d.]+)\s+(\d+)\s+-\s+-$",
                    completed.stdout, flags=re.MULTILINE)
    assert row, completed.stdout
    assert row.group(1) == row.group(2) == "120"  # every test sentence in its language
    assert float(row.group(3)) > 0 and int(row.group(5)) > 0
