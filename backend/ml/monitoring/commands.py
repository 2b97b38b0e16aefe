"""``python run_experiment.py monitor``: write the report and tell the user where it is."""

from __future__ import annotations

from pathlib import Path

from ..fileio import atomic_write_text
from .report import build_monitor, render_monitor


def monitor_command(log_dir: Path, output: Path | None, runs_dir: Path) -> int:
    """Write the monitor report (default ``<log_dir>/monitor.html``) and say where it is."""
    output = output or Path(log_dir) / "monitor.html"
    atomic_write_text(output, render_monitor(build_monitor(Path(log_dir), Path(runs_dir))))
    print(f"Monitor report: {output}")
    return 0
