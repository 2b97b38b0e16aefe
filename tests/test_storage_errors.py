"""A read-only or full disk gives a clear error and leaves no half-written file.

The disks are real: small or read-only tmpfs mounts (tests run as root, where chmod stops
nothing). Where mounting is not permitted those tests skip; the one fake left is ``os.write``
raising ENOSPC for the append path.
"""

from __future__ import annotations

import errno
import json
import os
import subprocess

import pytest
import torch

from backend.ml.checkpoint_files import checkpoint_problem
from backend.ml.config.schema import ModelConfig
from backend.ml.fileio import StorageError, append_jsonl, atomic_write_json, atomic_write_text
from backend.ml.model_factory import ModelFactory
from backend.ml.models import load_saved_model, save_model
from backend.ml.run_directory import create_run_directory, read_results
from backend.ml.training.checkpoints import (
    save_checkpoint,
    step_checkpoints,
    write_checkpoint,
)
from backend.ml.training.outcome import failures_recorded
from support.cli import run_cli
from support.configs import tiny_config, write_config

LABELS = ["Non-biased", "Biased", "No agreement"]


@pytest.fixture
def mount_tmpfs(tmp_path):
    """mount_tmpfs("ro") or mount_tmpfs("size=64k"): a fresh tmpfs, unmounted afterwards."""
    mounted = []

    def mount(options: str):
        point = tmp_path / f"mnt{len(mounted)}"
        point.mkdir()
        result = subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(point)],
                                capture_output=True, text=True)
        if result.returncode != 0:
            pytest.skip(f"cannot mount a tmpfs here ({result.stderr.strip()})")
        mounted.append(point)
        return point

    yield mount
    for point in mounted:
        subprocess.run(["umount", "-l", str(point)], check=False)


def fill(directory, leave_bytes: int) -> None:
    """Fill the file system of ``directory`` until about ``leave_bytes`` are free."""
    free = os.statvfs(directory).f_bavail * os.statvfs(directory).f_frsize
    with open(directory / "ballast", "wb") as stream:
        stream.write(b"\0" * max(free - leave_bytes, 0))


def test_a_read_only_output_directory_is_named_with_what_to_do(mount_tmpfs):
    read_only = mount_tmpfs("ro")
    with pytest.raises(StorageError) as refused:
        create_run_directory(read_only / "runs", "tiny")
    message = str(refused.value)
    assert f"cannot write {read_only / 'runs'}" in message
    assert "read-only" in message and "--output-dir" in message
    assert list(read_only.iterdir()) == []


def test_an_output_directory_under_a_file_is_named(tmp_path):
    (tmp_path / "runs").write_text("not a directory")
    for output_dir in (tmp_path / "runs", tmp_path / "runs" / "deeper"):
        with pytest.raises(StorageError, match="is a file where a directory is needed"):
            create_run_directory(output_dir, "tiny", run_id="r1")
    assert (tmp_path / "runs").read_text() == "not a directory"


def test_a_full_disk_keeps_the_previous_results_and_leaves_no_temporary(mount_tmpfs):
    disk = mount_tmpfs("size=256k")
    results = disk / "results.json"
    atomic_write_json(results, {"status": "running"})
    fill(disk, leave_bytes=8 * 1024)
    with pytest.raises(StorageError, match="no space left on device.*Free some space"):
        atomic_write_text(results, "x" * 64 * 1024)
    assert json.loads(results.read_text()) == {"status": "running"}
    assert sorted(path.name for path in disk.iterdir()) == ["ballast", "results.json"]


def test_a_full_disk_during_a_log_line_leaves_the_log_whole(mount_tmpfs):
    disk = mount_tmpfs("size=256k")
    log = disk / "metrics.jsonl"
    append_jsonl(log, {"step": 1, "train/loss": 0.7})
    before = log.read_bytes()
    fill(disk, leave_bytes=0)
    with pytest.raises(StorageError, match=f"cannot write {log}: no space left"):
        append_jsonl(log, {"step": 2, "note": "y" * 32 * 1024})
    assert log.read_bytes() == before


def test_a_failing_write_call_cuts_the_partial_line_again(tmp_path, monkeypatch):
    log = tmp_path / "metrics.jsonl"
    append_jsonl(log, {"step": 1})
    real_write = os.write

    def write_half_then_fail(handle, data):
        if len(data) > 10:
            return real_write(handle, data[:10])  # the disk took part of the line...
        raise OSError(errno.ENOSPC, "No space left on device")  # ...then filled up

    monkeypatch.setattr(os, "write", write_half_then_fail)
    with pytest.raises(StorageError, match="no space left"):
        append_jsonl(log, {"step": 2, "train/loss": 0.123456})
    monkeypatch.undo()
    assert log.read_text() == '{"step": 1}\n'


@pytest.fixture(scope="module")
def built():
    torch.manual_seed(0)
    return ModelFactory.create(
        ModelConfig(architecture="bert", pretrained=False, hidden_size=32, num_hidden_layers=1,
                    num_attention_heads=2, intermediate_size=32, vocab_size=120),
        LABELS, ["A reckless scheme.", "The council met on Tuesday."] * 6)


def test_a_full_disk_during_a_checkpoint_keeps_the_previous_one(mount_tmpfs, built):
    disk = mount_tmpfs("size=4m")

    def save(step):
        state = {"global_step": step, "optimizer": {"moments": torch.zeros(20_000)}}
        return save_checkpoint(disk, built.model, built.tokenizer, LABELS, state, keep=5)

    first = save(1)
    fill(disk, leave_bytes=64 * 1024)
    with pytest.raises(StorageError, match="step-000002: no space left on device"):
        save(2)
    assert step_checkpoints(disk) == [first] and checkpoint_problem(first) is None
    assert sorted(path.name for path in disk.iterdir()) == ["ballast", "step-000001"]


def writer_onto_a_full_disk(mount_tmpfs):
    """A model writer whose torch.save meets a full 1 MB disk."""
    full = mount_tmpfs("size=1m")

    def write_onto_the_full_disk(directory):
        with open(full / "weights.pt", "wb") as stream:
            torch.save({"weights": torch.zeros(1_000_000)}, stream)
    return write_onto_the_full_disk


def test_a_full_disk_that_torch_reports_as_its_own_error_is_still_named(mount_tmpfs, tmp_path):
    """torch's writer meets ENOSPC and raises a RuntimeError ("unexpected pos") that does not
    say so, while the checkpoint's own disk has space again: the OSError underneath decides."""
    checkpoints = tmp_path / "checkpoints"
    with pytest.raises(StorageError) as raised:
        write_checkpoint(checkpoints, writer_onto_a_full_disk(mount_tmpfs), {"global_step": 3},
                         keep=5)
    message = str(raised.value)
    assert message.startswith(f"cannot write {checkpoints / 'step-000003'}: no space left on "
                              f"device")
    # Written outside any run (a library call): the command names no directory.
    assert message.endswith("python run_experiment.py resume RUN_DIR")
    assert isinstance(raised.value.__cause__, RuntimeError)
    assert isinstance(raised.value.__cause__.__context__, OSError)
    assert list(tmp_path.rglob("*step-000003*")) == []  # neither the checkpoint nor its staging


def test_a_checkpoint_the_disk_refused_names_the_run_to_resume(mount_tmpfs, tmp_path):
    """Under cross-validation, the command resumes the cross-validation run, not the fold."""
    parent = tmp_path / "cv"
    fold = parent / "folds" / "fold-2"
    fold.mkdir(parents=True)
    with pytest.raises(StorageError) as raised:
        with failures_recorded(parent, {"metadata": {}}), \
                failures_recorded(fold, {"metadata": {}}):
            write_checkpoint(fold / "checkpoints", writer_onto_a_full_disk(mount_tmpfs),
                             {"global_step": 3}, keep=5)
    assert str(raised.value).endswith(f"the start: python run_experiment.py resume {parent}")
    assert read_results(fold)["status"] == read_results(parent)["status"] == "failed"
    assert "no space left on device" in read_results(fold)["error"]


def test_a_full_disk_while_saving_the_best_model_keeps_the_previous_one(mount_tmpfs, built):
    disk = mount_tmpfs("size=4m")
    save_model(built.model, built.tokenizer, disk / "best", LABELS)
    before = sorted(path.name for path in (disk / "best").iterdir())
    fill(disk, leave_bytes=32 * 1024)
    with pytest.raises(StorageError, match=f"cannot write {disk / 'best'}: no space left"):
        save_model(built.model, built.tokenizer, disk / "best", LABELS)
    assert sorted(path.name for path in (disk / "best").iterdir()) == before
    assert sorted(path.name for path in disk.iterdir()) == ["ballast", "best"]
    assert load_saved_model(disk / "best")[0] is not None


@pytest.mark.slow
def test_the_cli_reports_a_read_only_output_directory_without_a_traceback(tmp_path,
                                                                           mount_tmpfs):
    read_only = mount_tmpfs("ro")
    config = write_config(tmp_path, tiny_config(training={"epochs": 1}))
    completed = run_cli(str(config), "--output-dir", str(read_only / "runs"))
    assert completed.returncode == 1 and "Traceback" not in completed.stderr
    assert f"error: cannot write {read_only / 'runs'}: the file system is read-only" in \
        completed.stderr
    assert list(read_only.iterdir()) == []
