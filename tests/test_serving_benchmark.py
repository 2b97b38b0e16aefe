"""The serving benchmark runs end to end and reports both paths at every concurrency level."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from support.cli import REPO_ROOT, cli_environment
from support.runs import train_tiny


@pytest.mark.slow
def test_serving_benchmark_reports_server_against_in_process(tmp_path):
    run_dir = train_tiny(tmp_path / "runs", "tiny_bench", 1e-3)
    report = tmp_path / "bench.json"
    completed = subprocess.run(
        [sys.executable, str(REPO_ROOT / "benchmarks" / "bench_serving.py"), "--model",
         str(run_dir), "--requests", "12", "--concurrency", "1", "4", "--threads", "1",
         "--json", str(report)], cwd=REPO_ROOT, env=cli_environment(), capture_output=True,
        text=True, timeout=600)
    assert completed.returncode == 0, completed.stderr
    numbers = json.loads(report.read_text())
    levels = numbers["levels"]
    assert set(levels) == {"1", "4"}
    for level in levels.values():
        for path in ("in_process", "server"):
            assert level[path]["requests_per_second"] > 0
            assert 0 < level[path]["p50_ms"] <= level[path]["p99_ms"]
        assert level["throughput_ratio"] == pytest.approx(
            level["server"]["requests_per_second"] / level["in_process"]["requests_per_second"])
    assert "server/in-process req/s" in completed.stdout
    detection = numbers["language_detection"]
    assert detection["ms_per_sentence"] > 0
    assert detection["share_of_server_p50"] == pytest.approx(
        detection["ms_per_sentence"] / levels["1"]["server"]["p50_ms"])
    assert detection["in_process_slowdown"] == pytest.approx(
        1 - detection["in_process_rps_with"] / detection["in_process_rps_without"])
    assert "language detection: " in completed.stdout
