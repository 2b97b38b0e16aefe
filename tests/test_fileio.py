"""Atomic writes: readers see the old file or the new one, never half of one."""

from __future__ import annotations

import os
import stat

import pytest

from backend.ml.fileio import (
    append_jsonl,
    atomic_path,
    atomic_write_json,
    atomic_write_text,
    read_jsonl,
)


def test_failed_write_keeps_the_old_file_and_leaves_no_temporary(tmp_path):
    target = tmp_path / "results.json"
    atomic_write_json(target, {"status": "running"})
    with pytest.raises(RuntimeError):
        with atomic_path(target) as temporary:
            temporary.write_text('{"status": "compl')
            raise RuntimeError("crash while writing")
    assert target.read_text() == '{\n  "status": "running"\n}\n'
    assert [path.name for path in tmp_path.iterdir()] == ["results.json"]


def test_written_files_get_ordinary_permissions(tmp_path):
    previous = os.umask(0o022)
    try:
        atomic_write_text(tmp_path / "calibration.json", "{}")
    finally:
        os.umask(previous)
    mode = stat.S_IMODE((tmp_path / "calibration.json").stat().st_mode)
    assert mode == 0o644  # readable by a web app running as another user


def test_json_is_portable(tmp_path):
    import numpy as np

    atomic_write_json(tmp_path / "m.json", {"f1": np.float32(0.5), "nan": float("nan"),
                                             "counts": (np.int64(3),)})
    assert (tmp_path / "m.json").read_text() == (
        '{\n  "f1": 0.5,\n  "nan": null,\n  "counts": [\n    3\n  ]\n}\n')


def test_a_torn_last_jsonl_line_is_skipped(tmp_path):
    log = tmp_path / "metrics.jsonl"
    append_jsonl(log, {"step": 1, "train/loss": 0.7})
    append_jsonl(log, {"step": 2, "train/loss": 0.6})
    with open(log, "a") as stream:
        stream.write('{"step": 3, "train/lo')
    assert read_jsonl(log) == [{"step": 1, "train/loss": 0.7}, {"step": 2, "train/loss": 0.6}]
