"""The command line: subcommands, the ``CONFIG.yaml`` front door, and the mode flags that came
before the subcommands, which still work with a note. Flags that cannot go together are refused
with a message, never silently dropped."""

from __future__ import annotations

import pytest

from backend.ml.cli import main, subcommand_names
from backend.ml.cli_flags import subcommand_argv


def assert_refused(argv, message, capsys):
    """The CLI exits 2 (a usage error) and says ``message`` on stderr."""
    with pytest.raises(SystemExit) as exit_info:
        main(argv)
    assert exit_info.value.code == 2
    assert message in capsys.readouterr().err


@pytest.mark.parametrize("argv, message", [
    (["a.yaml", "--compare"], "--compare does not take CONFIG.yaml (a.yaml)"),
    (["--compare", "--predict", "run_1", "--input", "x.txt", "--output", "y.jsonl"],
     "--compare and --predict cannot be combined"),
    (["--resume", "runs/a", "--export", "runs/a"], "--export and --resume cannot be combined"),
    (["--cloud-logs", "run_1", "--cloud-cost", "run_1"],
     "--cloud-logs and --cloud-cost cannot be combined"),
    (["--follow", "--cloud-status"], "--follow only works with --cloud-logs"),
    (["a.yaml", "--max-parallel", "3"], "--max-parallel only works with --cloud"),
    (["--input", "x.txt", "--compare"], "--input only works with --predict"),
    (["--report", "out.html", "--resume", "runs/a"], "--report only works with --compare"),
    (["--dry-run", "--compare"], "--dry-run only works with CONFIG.yaml or --cloud"),
    (["--cloud", "--compare"], "--cloud only works with CONFIG.yaml or --sync"),
    (["--resume", "runs/a", "--set", "training.epochs=1"], "--set only works with CONFIG.yaml"),
    (["--sync", "run_1", "--yes"], "--yes only works with --cloud or --cloud-teardown"),
    (["--sync", "run_1", "a.yaml", "b.yaml"], "--sync reads one CONFIG.yaml"),
    (["--set", "training.epochs=1"], "give CONFIG.yaml or a command"),
    ([], "give CONFIG.yaml or a command"),
    # A mode flag becomes its subcommand, whose parser checks the rest.
    (["--predict", "run_1"], "the following arguments are required: --input, --output"),
])
def test_conflicting_or_orphan_flags_are_refused(argv, message, capsys):
    assert_refused(argv, message, capsys)


@pytest.mark.parametrize("argv, message", [
    (["train", "a.yaml", "--detach"], "unrecognized arguments: --detach"),
    (["train"], "the following arguments are required: CONFIG.yaml"),
    (["compare", "--compare"], "unrecognized arguments: --compare"),
    (["resume", "runs/a", "--set", "training.epochs=1"], "unrecognized arguments: --set"),
    (["cloud"], "the following arguments are required: {launch,status,logs,cost,sync,teardown}"),
    (["cloud", "logs"], "the following arguments are required: RUN_ID"),
    (["export", "run_1", "--format", "tflite"], "invalid choice: 'tflite'"),
])
def test_subcommands_refuse_what_they_do_not_take(argv, message, capsys):
    assert_refused(argv, message, capsys)


@pytest.mark.parametrize("argv, rewritten", [
    (["--compare"], ["compare"]),
    (["--compare", "run_a", "run_b", "--output-dir", "runs", "--report", "r.html"],
     ["compare", "run_a", "run_b", "--runs-dir", "runs", "--report", "r.html"]),
    (["--resume", "runs/a"], ["resume", "runs/a"]),
    (["--predict", "run_1", "--input", "in.txt", "--output", "out.jsonl"],
     ["predict", "run_1", "--input", "in.txt", "--output", "out.jsonl"]),
    (["--export", "run_1", "--export-format", "onnx"], ["export", "run_1", "--format", "onnx"]),
    (["--help-config"], ["help-config"]),
    (["--sync", "run_1", "--cloud", "--set", "cloud.project=p", "--set", "cloud.bucket=b"],
     ["cloud", "sync", "run_1", "--set", "cloud.project=p", "--set", "cloud.bucket=b",
      "--continue"]),
    (["--cloud-status", "a.yaml"], ["cloud", "status", "--config", "a.yaml"]),
    (["--cloud-logs", "run_1", "--follow"], ["cloud", "logs", "run_1", "--follow"]),
    (["--cloud-cost", "run_1", "--output-dir", "runs"],
     ["cloud", "cost", "run_1", "--runs-dir", "runs"]),
    (["--cloud-teardown", "--run-id", "run_1", "--yes"],
     ["cloud", "teardown", "--run-id", "run_1", "--yes"]),
])
def test_mode_flags_become_their_subcommand_with_a_note(argv, rewritten, capsys):
    assert subcommand_argv(argv) == rewritten
    note = capsys.readouterr().err
    assert note.startswith(f"note: {argv[0]} is deprecated; use: run_experiment.py {rewritten[0]}")
    assert note.count("\n") == 1


@pytest.mark.parametrize("argv, rewritten", [
    (["a.yaml"], ["train", "a.yaml"]),
    (["a.yaml", "b.yml", "--set", "training.epochs=1", "--dry-run", "--output-dir", "runs"],
     ["train", "a.yaml", "b.yml", "--set", "training.epochs=1", "--output-dir", "runs",
      "--dry-run"]),
    (["a.yaml", "--cloud", "--yes", "--detach", "--run-id", "r1"],
     ["cloud", "launch", "a.yaml", "--run-id", "r1", "--yes", "--detach"]),
    (["a.yaml", "b.yaml", "--cloud", "--max-parallel", "2"],
     ["cloud", "launch", "a.yaml", "b.yaml", "--max-parallel", "2"]),
])
def test_config_first_is_train_or_cloud_launch_without_a_note(argv, rewritten, capsys):
    assert subcommand_argv(argv) == rewritten
    assert capsys.readouterr().err == ""


def test_help_lists_every_subcommand_with_a_line_each(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["--help"])
    assert exit_info.value.code == 0
    listing = capsys.readouterr().out
    assert subcommand_names() == (
        "train", "resume", "compare", "predict", "export", "help-config", "cloud", "pretrain",
        "models", "tune", "serve", "promote", "registry", "retrain", "monitor")
    for name in subcommand_names():
        assert f"\n    {name} " in listing or f"\n    {name}\n" in listing, name


def test_a_mode_flag_still_does_its_job(capsys):
    assert main(["--help-config"]) == 0
    captured = capsys.readouterr()
    assert "training.epochs = " in captured.out
    assert "note: --help-config is deprecated; use: run_experiment.py help-config" in captured.err


def test_the_installed_console_command_runs_the_same_cli_from_any_directory(tmp_path):
    import shutil
    import subprocess
    import sys
    from pathlib import Path

    from support.cli import REPO_ROOT, cli_environment

    command = shutil.which("bias-experiment", path=str(Path(sys.executable).parent))
    if command is None:
        pytest.skip("bias-experiment is not installed here: pip install -e . puts it on the PATH")
    completed = subprocess.run(
        [command, str(REPO_ROOT / "experiments" / "configs" / "quickstart.yaml"), "--dry-run"],
        cwd=tmp_path, env=cli_environment(), capture_output=True, text=True, timeout=300)
    assert completed.returncode == 0, completed.stderr
    assert "Config is valid; nothing was trained" in completed.stdout
    assert "output: experiments/runs/quickstart_minilm_<id>" in completed.stdout
    assert list(tmp_path.iterdir()) == []
