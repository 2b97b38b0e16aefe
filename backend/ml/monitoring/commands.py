"""``python run_experiment.py monitor``: write the report and tell the user where it is.

``add_monitor_subcommand`` adds it to the CLI's parser; the report itself (and the libraries it
draws with) is imported only when the command runs.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from ..fileio import atomic_write_text
from ..run_directory import DEFAULT_RUNS_DIR
from ..serving.logs import DEFAULT_LOG_DIR


def add_monitor_subcommand(sub) -> None:
    """Add ``monitor`` to ``sub`` (``add_subparsers()``'s)."""
    monitor = sub.add_parser("monitor", help="HTML report of served predictions and feedback")
    monitor.set_defaults(handler=_monitor)
    monitor.add_argument("--output", type=Path, metavar="FILE",
                         help="where the report goes (default: <log dir>/monitor.html)")
    monitor.add_argument("--log-dir", type=Path, default=DEFAULT_LOG_DIR,
                         help="prediction log and feedback (default: experiments/serving)")
    monitor.add_argument("--runs-dir", type=Path, default=DEFAULT_RUNS_DIR,
                         help="where the served runs are looked up (default: experiments/runs)")
    # Taken like every production command's, so one set of flags serves serve, retrain and
    # monitor in a script; the log names each prediction's run, so no stage is looked up.
    monitor.add_argument("--registry-dir", type=Path, help=argparse.SUPPRESS)


def _monitor(args: argparse.Namespace) -> int:
    return monitor_command(args.log_dir, args.output, args.runs_dir)


def monitor_command(log_dir: Path, output: Path | None, runs_dir: Path) -> int:
    """Write the monitor report (default ``<log_dir>/monitor.html``) and say where it is."""
    from .report import build_monitor, render_monitor

    output = output or Path(log_dir) / "monitor.html"
    atomic_write_text(output, render_monitor(build_monitor(Path(log_dir), Path(runs_dir))))
    print(f"Monitor report: {output}")
    return 0
