"""Reading back what the trackers wrote: TensorBoard event files and offline W&B runs."""

from __future__ import annotations

import json
import struct
from pathlib import Path

import pytest


def event_accumulator(log_dir: Path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    accumulator = EventAccumulator(str(log_dir), size_guidance={"scalars": 0, "images": 0,
                                                                "tensors": 0})
    accumulator.Reload()
    return accumulator


def assert_final_metrics_logged(accumulator, results: dict) -> None:
    """test/* and best_eval/* scalars in TensorBoard equal results.json."""
    for key in ("accuracy", "f1_macro", "f1_weighted", "f1_biased", "loss"):
        assert accumulator.Scalars(f"test/{key}")[-1].value == pytest.approx(
            results["test"][key], rel=1e-6)
        # best_eval/* is the best checkpoint's validation score, the HParams tab's column.
        assert accumulator.Scalars(f"best_eval/{key}")[-1].value == pytest.approx(
            results["eval"][key], rel=1e-6)


def wandb_records(run_folder: Path):
    """Every record of an offline run's ``.wandb`` file (LevelDB-style log of protobufs)."""
    from wandb.proto import wandb_internal_pb2
    data = next(run_folder.glob("*.wandb")).read_bytes()
    assert data[:4] == b":W&B"
    block, position, pending = 32768, 7, b""
    while position + 7 <= len(data):
        left = block - position % block
        if left < 7:  # a block's tail too short for a header is padding
            position += left
            continue
        _, length, kind = struct.unpack("<IHB", data[position:position + 7])
        if length == 0 and kind == 0:
            position += left
            continue
        chunk = data[position + 7:position + 7 + length]
        position += 7 + length
        pending = chunk if kind in (1, 2) else pending + chunk
        if kind in (1, 4):  # a full record, or the last piece of one
            # A generated protobuf module: mypy sees none of its classes.
            record = wandb_internal_pb2.Record()  # type: ignore[attr-defined]
            record.ParseFromString(pending)
            yield record


def wandb_history(run_folder: Path) -> list[dict]:
    rows = []
    for record in wandb_records(run_folder):
        if record.WhichOneof("record_type") == "history":
            rows.append({item.key or "/".join(item.nested_key): json.loads(item.value_json)
                         for item in record.history.item})
    return rows
