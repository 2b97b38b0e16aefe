"""The run directory, the contract between every stage: its layout, the results.json schema
version, and the reading and writing of its files.

Other modules ask ``RunLayout`` for paths and never spell a file name themselves; the file
names of the lock and of checkpoints belong to the modules that own those protocols
(``run_lock``, ``checkpoint_files``) and are reached through the layout too.

>>> layout = RunLayout(Path("experiments/runs/quickstart_minilm_3f9a1c"))
>>> layout.results.name, layout.test_predictions.relative_to(layout.root).as_posix()
('results.json', 'predictions/test_predictions.csv')
"""

from __future__ import annotations

import csv
import io
import json
import platform
import socket
import subprocess
import sys
import uuid
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING

from .checkpoint_files import BEST_DIRECTORY
from .errors import UserError, resume_command
from .fileio import atomic_write_json, atomic_write_text, storage_errors_explained
from .run_lock import HEARTBEAT_FILE, LOCK_FILE, live_holder

if TYPE_CHECKING:  # metrics imports scikit-learn, which the CLI's parser must not wait for
    from .metrics import EvaluationResult

SCHEMA_VERSION = 1
"""Version of the results.json layout; bumped when a key changes meaning."""
FINETUNING, PRETRAINING, RETRAINING = "finetuning", "pretraining", "retraining"
STAGES = (FINETUNING, PRETRAINING, RETRAINING)
"""results.json ``stage``: what kind of run a directory holds (a cross-validation parent and its
folds are fine-tuning; ``retrain`` writes a retraining run)."""
DEFAULT_RUNS_DIR = Path("experiments/runs")
PROJECT_ROOT = Path(__file__).resolve().parents[2]
# Written into a cloud run's code archive: the VM's unpacked code has no .git to ask.
SOURCE_PROVENANCE_FILE = "source_provenance.json"
MAX_DIFF_CHARS = 200_000  # a results.json stays readable; the size of a larger diff is recorded
MAX_UNTRACKED_NAMES = 200
METADATA_COLUMNS = ("outlet", "topic", "type", "news_link", "source_row")


@dataclass(frozen=True)
class RunLayout:
    """Every path of one run directory (see docs/architecture.md for what each holds)."""

    root: Path

    @property
    def config(self) -> Path:
        return self.root / "config.yaml"

    @property
    def results(self) -> Path:
        return self.root / "results.json"

    @property
    def metrics(self) -> Path:
        return self.root / "metrics.jsonl"

    @property
    def logs(self) -> Path:
        return self.root / "logs"

    @property
    def plots(self) -> Path:
        return self.root / "plots"

    @property
    def checkpoints(self) -> Path:
        return self.root / "checkpoints"

    @property
    def best_model(self) -> Path:
        return self.checkpoints / BEST_DIRECTORY

    @property
    def final_model(self) -> Path:
        return self.root / "final_model"

    @property
    def predictions(self) -> Path:
        return self.root / "predictions"

    @property
    def test_predictions(self) -> Path:
        return self.predictions / "test_predictions.csv"

    @property
    def eval_predictions(self) -> Path:
        return self.predictions / "eval_predictions.csv"

    @property
    def folds(self) -> Path:
        return self.root / "folds"

    @property
    def lock(self) -> Path:
        return self.root / LOCK_FILE

    @property
    def heartbeat(self) -> Path:
        return self.root / HEARTBEAT_FILE

    @property
    def exports(self) -> Path:
        """ONNX exports of the final model, made by ``export``."""
        return self.root / "exports"

    @property
    def retrain_record(self) -> Path:
        return self.root / "retrain.json"

    @property
    def teacher_logits(self) -> Path:
        """A distilled run's teacher logits on its training sentences, computed once."""
        return self.root / "teacher_logits.json"

    @property
    def teacher_embeddings(self) -> Path:
        """A distilled run's teacher sentence embeddings, computed once with the logits
        (``training.distillation.embedding_weight``)."""
        return self.root / "teacher_embeddings.npz"

    def fold(self, number: int) -> RunLayout:
        """Fold ``number`` (1-based) of a cross-validation run."""
        return RunLayout(self.folds / f"fold-{number}")

    def looks_like_a_run(self) -> bool:
        return self.results.exists() or self.config.exists() or self.folds.is_dir()


@dataclass(frozen=True)
class ResultsHeader:
    """The keys every results.json starts with, whatever kind of run wrote it: fine-tuning, a
    cross-validation parent, pre-training, retraining. Each kind adds its own sections after.

    >>> header = ResultsHeader.for_run(run_dir, "tiny", "a test", ["test"], FINETUNING,
    ...                                device="cpu", world_size=1)  # doctest: +SKIP
    >>> header.results()["status"]  # doctest: +SKIP
    'running'
    """

    experiment_id: str
    experiment_name: str
    description: str
    tags: tuple[str, ...]
    stage: str
    metadata: dict

    @classmethod
    def for_run(cls, run_dir: Path, experiment_name: str, description: str, tags: list[str],
                stage: str, device: str, world_size: int) -> ResultsHeader:
        """The header of a run starting now in ``run_dir`` on ``world_size`` x ``device``."""
        if stage not in STAGES:
            raise ValueError(f"stage {stage!r} is not one of {', '.join(STAGES)}")
        return cls(Path(run_dir).name, experiment_name, description, tuple(tags), stage,
                   {**run_metadata(device), "world_size": world_size})

    def results(self) -> dict:
        """A new results.json: this header, ``status: running``, no error yet."""
        return {"schema_version": SCHEMA_VERSION, "experiment_id": self.experiment_id,
                "experiment_name": self.experiment_name, "description": self.description,
                "tags": list(self.tags), "stage": self.stage, "status": "running",
                "error": None, "metadata": dict(self.metadata)}


def read_results(run_dir: str | Path) -> dict:
    """results.json as a dict; raises OSError or ValueError when missing or not JSON."""
    return json.loads(RunLayout(Path(run_dir)).results.read_text(encoding="utf-8"))


def read_results_or_empty(run_dir: str | Path) -> dict:
    """results.json, or {} when it is missing or unreadable (a run still being created)."""
    try:
        return read_results(run_dir)
    except (OSError, ValueError):
        return {}


def new_run_id(experiment_name: str) -> str:
    """``<experiment_name>_<6 hex>``, e.g. ``bert_baseline_v1_3f9a1c``."""
    return f"{experiment_name}_{uuid.uuid4().hex[:6]}"


def create_run_directory(output_dir: str | Path, experiment_name: str,
                         run_id: str | None = None) -> Path:
    """Make a fresh run directory; an existing one is never reused or overwritten.

    An unwritable or full output directory raises StorageError (nothing is left behind); an
    existing ``run_id`` raises UserError, naming the live process when one is writing it.
    """
    root = Path(output_dir)
    with storage_errors_explained(root):
        root.mkdir(parents=True, exist_ok=True)
    if run_id is not None:
        run_dir = root / run_id
        with storage_errors_explained(run_dir):
            try:
                run_dir.mkdir()
            except FileExistsError:
                holder = live_holder(run_dir)
                if holder is not None:
                    raise UserError(f"run directory {run_dir} is in use by {holder.describe()}; "
                                    f"choose another --run-id, or wait for that run to finish"
                                    ) from None
                raise UserError(f"run directory {run_dir} already exists; runs are never "
                                f"overwritten. Choose another --run-id, or continue it with "
                                f"{resume_command(run_dir)}") from None
        return run_dir
    while True:  # a collision of 6 hex digits is rare; retry rather than overwrite
        run_dir = root / new_run_id(experiment_name)
        with storage_errors_explained(run_dir):
            try:
                run_dir.mkdir()
                return run_dir
            except FileExistsError:
                continue


def source_provenance(root: Path = PROJECT_ROOT, paths: list[str] | None = None) -> dict:
    """The code's git commit and branch, whether the tree differs from the commit (changed
    tracked files or untracked ones git does not ignore), the patch of the tracked changes
    (limited to ``paths`` when given) and the untracked files' names.

    Without a checkout, as for the unpacked code on a cloud VM, it is what was recorded when the
    code was packed (:data:`SOURCE_PROVENANCE_FILE` in ``root``); without either, Nones.
    """
    def git(*args: str) -> str | None:
        try:
            return subprocess.run(["git", *args], cwd=root, capture_output=True, check=True,
                                  text=True, timeout=30).stdout
        except (OSError, subprocess.SubprocessError):
            return None

    commit = git("rev-parse", "HEAD")
    if commit is None:
        packed = root / SOURCE_PROVENANCE_FILE
        if packed.is_file():
            return json.loads(packed.read_text(encoding="utf-8"))
        return {"git_commit": None, "git_branch": None, "git_dirty": None, "git_diff": None,
                "git_untracked": []}
    untracked = (git("ls-files", "--others", "--exclude-standard") or "").splitlines()
    if paths is None:
        diff = git("diff", "HEAD", "--no-color") or ""
    else:
        diff = (git("diff", "HEAD", "--no-color", "--", *paths) or "") if paths else ""
        shipped = set(paths)
        untracked = [name for name in untracked if name in shipped]
    branch = (git("rev-parse", "--abbrev-ref", "HEAD") or "").strip()
    provenance: dict[str, object] = {
        "git_commit": commit.strip(), "git_branch": branch or None,
        "git_dirty": bool(diff or untracked), "git_diff": diff[:MAX_DIFF_CHARS] or None,
        "git_untracked": untracked[:MAX_UNTRACKED_NAMES]}
    if len(diff) > MAX_DIFF_CHARS:
        provenance["git_diff_truncated_from_chars"] = len(diff)
    return provenance


def run_metadata(device: str) -> dict:
    """Where and with what a run happened: UTC time, git commit, versions, host, device."""
    import torch
    import transformers

    return {
        "started_at": utc_now(),
        "finished_at": None,
        **source_provenance(),
        "python_version": platform.python_version(),
        "torch_version": torch.__version__,
        "transformers_version": transformers.__version__,
        "host": socket.gethostname(),
        "platform": platform.platform(),
        "device": device,
        "command": " ".join([Path(sys.argv[0]).name, *sys.argv[1:]]),
    }


def utc_now(timespec: str = "seconds") -> str:
    """The current UTC time in ISO 8601, e.g. ``2026-11-25T10:09:49+00:00``."""
    return datetime.now(timezone.utc).isoformat(timespec=timespec)


def write_results(run_dir: Path, results: dict) -> None:
    """Replace results.json atomically (readers see the old or the new file, never half)."""
    atomic_write_json(RunLayout(Path(run_dir)).results, results)


def write_predictions(path: Path, evaluation: EvaluationResult) -> None:
    """One CSV row per sentence: text, true/predicted label, confidence, probabilities, metadata."""
    from .metrics import label_slug

    probability_columns = [f"prob_{label_slug(name)}" for name in evaluation.label_names]
    metadata_columns = [column for column in METADATA_COLUMNS
                        if any(column in row for row in evaluation.metadata)]
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow(["index", "text", "true_label", "predicted_label", "confidence", "correct",
                     *probability_columns, *metadata_columns])
    for index, text in enumerate(evaluation.texts):
        probabilities = evaluation.probabilities[index]
        predicted = int(evaluation.predictions[index])
        true = int(evaluation.labels[index])
        metadata = evaluation.metadata[index] if index < len(evaluation.metadata) else {}
        writer.writerow([index, text, evaluation.label_names[true],
                         evaluation.label_names[predicted], f"{probabilities[predicted]:.6f}",
                         predicted == true, *(f"{value:.6f}" for value in probabilities),
                         *(("" if metadata.get(column) is None else metadata.get(column))
                           for column in metadata_columns)])
    atomic_write_text(path, buffer.getvalue())
