"""Find a model from what a user types, load it for inference, and pick CPU thread counts.

A model reference is a run id (looked up under the runs directory), a run directory (its
``final_model/`` is used), a model directory (``config.json`` + weights or ``model.onnx``), or an
``.onnx`` file inside an export directory. Everything here reads run directories only.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import joblib
import numpy as np

from ..errors import UserError
from ..run_directory import RunLayout
from .calibration import CALIBRATION_FILE

if TYPE_CHECKING:  # for annotations only: ONNX inference imports neither
    import torch
    from transformers import PreTrainedTokenizerBase

ONNX_FILE = "model.onnx"
ONNX_INT8_FILE = "model-int8.onnx"
REGISTERED_FILE = "registered_model.json"
_WEIGHT_FILES = ("model.safetensors", "pytorch_model.bin", "model.safetensors.index.json",
                 "pytorch_model.bin.index.json")
# Model types written by the project's own models package (custom head, loaded from its own code).
PROJECT_MODEL_TYPES = ("media_bias_head",)


class ModelLoadError(UserError):
    """The model reference does not name a loadable model."""


def has_torch_weights(path: Path) -> bool:
    """Whether ``path`` is a directory with PyTorch weights (not only an ONNX export)."""
    return path.is_dir() and any((path / name).is_file() for name in _WEIGHT_FILES)


def _is_model_dir(path: Path) -> bool:
    # config.json for transformers models; registered_model.json for models registered with
    # the project's ModelFactory (plain nn.Modules rebuilt by backend.ml.models.load_saved_model).
    described = (path / "config.json").is_file() or (path / REGISTERED_FILE).is_file()
    return described and (has_torch_weights(path) or (path / ONNX_FILE).is_file())


def _available_runs(runs_dir: Path | None, limit: int = 8) -> str:
    if runs_dir is None or not Path(runs_dir).is_dir():
        return ""
    names = sorted(path.name for path in Path(runs_dir).iterdir()
                   if RunLayout(path).final_model.is_dir() or RunLayout(path).folds.is_dir())
    if not names:
        return f" ({runs_dir} holds no trained run)"
    more = f", ... ({len(names) - limit} more)" if len(names) > limit else ""
    return f" Runs under {runs_dir}: {', '.join(names[:limit])}{more}."


def resolve_model_path(model_ref: str | os.PathLike, runs_dir: Path | None = None) -> Path:
    """The model directory (or ``.onnx`` file) that ``model_ref`` names.

    >>> resolve_model_path("quickstart_minilm_3f9a1c", Path("experiments/runs"))  # doctest: +SKIP
    PosixPath('experiments/runs/quickstart_minilm_3f9a1c/final_model')
    """
    reference = str(model_ref).strip()
    if not reference:
        raise ModelLoadError("No model given: pass a run id, a run directory or a model directory.")
    candidates = [Path(reference)]
    if runs_dir is not None and not Path(reference).is_absolute():
        candidates.append(Path(runs_dir) / reference)
    for candidate in candidates:
        if candidate.is_file() and candidate.suffix == ".onnx":
            if not (candidate.parent / "config.json").is_file():
                raise ModelLoadError(f"{candidate}: no config.json and tokenizer beside the ONNX "
                                     "file; export it with `run_experiment.py export` to get a "
                                     "complete directory.")
            return candidate
        if not candidate.is_dir():
            continue
        if _is_model_dir(candidate):
            return candidate
        layout = RunLayout(candidate)
        if _is_model_dir(layout.final_model):
            return layout.final_model
        if layout.folds.is_dir():
            folds = sorted(path.name for path in layout.folds.iterdir() if path.is_dir())
            example = f"{candidate}/folds/{folds[0]}" if folds else f"{candidate}/folds/fold-1"
            raise ModelLoadError(f"{candidate} is a cross-validation run with one model per fold; "
                                 f"pass one fold, e.g. {example} (BiasClassifier and `predict` "
                                 f"take the whole run as an ensemble of its folds).")
        if layout.results.is_file():
            raise ModelLoadError(f"{candidate} has no final_model/: the run did not finish "
                                 "(see its results.json for the status).")
        raise ModelLoadError(f"{candidate} is neither a run directory (with final_model/) nor a "
                             "model directory (config.json + weights).")
    raise ModelLoadError(f"No run or model named '{reference}': expected a run id under "
                         f"{runs_dir or 'the runs directory'}, a run directory or a model "
                         f"directory.{_available_runs(runs_dir)}")


def _fold_number(fold_dir: Path) -> tuple[int, str]:
    suffix = fold_dir.name.rpartition("-")[2]
    return (int(suffix) if suffix.isdigit() else 0, fold_dir.name)


def cross_validation_models(model_ref: str | os.PathLike, runs_dir: Path | None = None
                            ) -> list[Path] | None:
    """Each fold's ``final_model/``, in fold order, when ``model_ref`` names a cross-validation
    run (a run id or a parent run directory with ``folds/fold-k/``); None for anything else.

    >>> cross_validation_models("babe_minilm_cv_3f9a1c", Path("experiments/runs"))  # doctest: +SKIP
    [PosixPath('experiments/runs/babe_minilm_cv_3f9a1c/folds/fold-1/final_model'), ...]
    """
    reference = str(model_ref).strip()
    if not reference:
        return None
    candidates = [Path(reference)]
    if runs_dir is not None and not Path(reference).is_absolute():
        candidates.append(Path(runs_dir) / reference)
    for candidate in candidates:
        layout = RunLayout(candidate)
        if not layout.folds.is_dir() or _is_model_dir(candidate) or (
                _is_model_dir(layout.final_model)):
            continue
        folds = sorted((path for path in layout.folds.iterdir() if path.is_dir()),
                       key=_fold_number)
        unfinished = [fold.name for fold in folds
                      if not _is_model_dir(RunLayout(fold).final_model)]
        if not folds or unfinished:
            missing = ", ".join(unfinished) or "every fold"
            raise ModelLoadError(f"{candidate}: {missing} has no final_model/; the cross-"
                                 "validation run did not finish (see its results.json).")
        return [RunLayout(fold).final_model for fold in folds]
    return None


def run_dir_of(model_path: Path) -> Path | None:
    """The run directory a model belongs to (``RUN/final_model`` → ``RUN``), if any."""
    model_dir = model_path.parent if model_path.is_file() else model_path
    if model_dir == RunLayout(model_dir.parent).final_model or (
            model_dir == RunLayout(model_dir.parent).exports
            and RunLayout(model_dir.parent).results.is_file()):
        return model_dir.parent
    return None


def cpu_budget() -> int:
    """CPUs this process may really use: joblib's count honours the affinity mask and a cgroup
    CPU quota (containers)."""
    return max(1, joblib.cpu_count())


def configure_threads(num_threads: int | None = None) -> int:
    """Set torch's intra-op threads and return the count ONNX Runtime should use too.

    An explicit ``num_threads`` wins, then the user's ``OMP_NUM_THREADS``; otherwise torch's own
    default (physical cores), capped by the CPUs the process may use, so that a container with a
    2-CPU quota on a 64-core host does not run 32 threads that fight over 2 CPUs.
    """
    import torch

    if num_threads is None and os.environ.get("OMP_NUM_THREADS", "").strip().isdigit():
        num_threads = int(os.environ["OMP_NUM_THREADS"])
    if num_threads is None:
        num_threads = min(torch.get_num_threads(), cpu_budget())
    num_threads = max(1, int(num_threads))
    if torch.get_num_threads() != num_threads:
        torch.set_num_threads(num_threads)
    return num_threads


@dataclass
class LoadedModel:
    """What inference needs: a logits function on padded numpy batches plus its metadata."""

    path: Path
    runtime: str  # "pytorch" or "onnx"
    tokenizer: PreTrainedTokenizerBase
    logits: Callable[[dict[str, np.ndarray]], np.ndarray]
    input_names: list[str]
    label_names: list[str]
    max_length: int
    config: dict = field(default_factory=dict)
    model: torch.nn.Module | None = None  # pytorch runtime only
    bf16_logits: Callable[[dict[str, np.ndarray]], np.ndarray] | None = None
    """``logits`` with the matrix products in bf16 (PyTorch runtime only): about twice as fast
    on a CPU that computes bf16 natively, and within about 1e-4 in probability of fp32."""


def read_label_names(model_dir: Path, config: dict) -> list[str]:
    """Class names in id order from ``id2label``; ``label_names.json`` when those are generic."""
    id2label = config.get("id2label") or {}
    names = [id2label[key] for key in sorted(id2label, key=int)] if id2label else []
    generic = all(name == f"LABEL_{index}" for index, name in enumerate(names))
    names_file = model_dir / "label_names.json"
    if (not names or generic) and names_file.is_file():
        try:
            stored = json.loads(names_file.read_text(encoding="utf-8"))
        except (OSError, ValueError) as error:
            raise ModelLoadError(f"{names_file}: unreadable ({error}).") from None
        if isinstance(stored, dict):
            stored = stored.get("label_names", [])
        if stored:
            return [str(name) for name in stored]
    if not names:
        raise ModelLoadError(f"{model_dir}/config.json has no id2label: cannot name the classes.")
    return names


def read_max_length(config: dict, tokenizer) -> int:
    """Longest input the model takes: the tokenizer's limit, capped by the position embeddings."""
    limits = []
    tokenizer_limit = getattr(tokenizer, "model_max_length", None)
    if isinstance(tokenizer_limit, int) and 0 < tokenizer_limit < 100_000:
        limits.append(tokenizer_limit)
    for section in (config, config.get("encoder_config") or {}):
        positions = section.get("max_position_embeddings") if isinstance(section, dict) else None
        if isinstance(positions, int) and positions > 0:
            # RoBERTa-style models and MPNet reserve padding_idx + 1 positions.
            offset = (section.get("pad_token_id") or 0) + 1 if section.get("model_type") in (
                "roberta", "xlm-roberta", "camembert", "mpnet") else 0
            limits.append(positions - offset)
    return min(limits) if limits else 512


def _read_config(model_dir: Path) -> dict:
    if not (model_dir / "config.json").is_file() and (model_dir / REGISTERED_FILE).is_file():
        return {}  # a registered model: labels come from label_names.json
    try:
        return json.loads((model_dir / "config.json").read_text(encoding="utf-8"))
    except (OSError, ValueError) as error:
        raise ModelLoadError(f"{model_dir}/config.json: unreadable ({error}).") from None


def _load_tokenizer(model_dir: Path):
    from transformers import AutoTokenizer

    try:
        tokenizer = AutoTokenizer.from_pretrained(str(model_dir))
    except (OSError, ValueError) as error:
        raise ModelLoadError(f"{model_dir}: no usable tokenizer ({error}).") from None
    if not getattr(tokenizer, "is_fast", False):
        raise ModelLoadError(f"{model_dir}: the tokenizer has no fast (Rust) version; inference "
                             "needs one to split long sentences into token windows.")
    return tokenizer


def _load_torch_module(model_dir: Path, config: dict, trust_remote_code: bool):
    """(model, tokenizer): the project's loader when present, else the transformers Auto classes."""
    load_saved_model: Callable[[Path], tuple[torch.nn.Module, PreTrainedTokenizerBase]] | None
    load_saved_model = None
    if not trust_remote_code:  # third-party code in the directory: only the Auto classes run it
        try:
            from backend.ml.models import load_saved_model
        except ImportError:
            pass
    try:
        if load_saved_model is not None:
            model, tokenizer = load_saved_model(model_dir)
        else:
            from transformers import AutoModelForSequenceClassification

            from backend.ml.models.sources import PLAIN_LAYERS

            # The project's own head ships its code beside the weights (``auto_map``).
            own_code = config.get("model_type") in PROJECT_MODEL_TYPES and "auto_map" in config
            model = AutoModelForSequenceClassification.from_pretrained(
                str(model_dir), trust_remote_code=trust_remote_code or own_code, **PLAIN_LAYERS)
            tokenizer = None
    except (OSError, ValueError, KeyError) as error:
        hint = (" It uses custom code: pass trust_remote_code=True if you trust it."
                if "auto_map" in config and not trust_remote_code else "")
        raise ModelLoadError(f"{model_dir}: cannot load the model ({error}).{hint}") from None
    except UserError as error:  # the project's loader explains itself
        raise ModelLoadError(str(error)) from None
    if tokenizer is None or not getattr(tokenizer, "is_fast", False):
        tokenizer = _load_tokenizer(model_dir)
    return model.eval(), tokenizer


def _forward_input_names(model, tokenizer) -> list[str]:
    import inspect

    accepted = inspect.signature(model.forward).parameters
    names = [name for name in tokenizer.model_input_names if name in accepted]
    # Some encoders (DistilBERT) take no token_type_ids, and the custom head drops them itself.
    return names or ["input_ids", "attention_mask"]


def load_torch_model(model_dir: Path, trust_remote_code: bool = False) -> LoadedModel:
    """Load ``model_dir`` with PyTorch in eval mode; logits run under ``torch.inference_mode``."""
    import torch  # here, not at the top: ONNX inference never imports torch

    from ..models.outputs import model_logits

    config = _read_config(model_dir)
    model, tokenizer = _load_torch_module(model_dir, config, trust_remote_code)
    input_names = _forward_input_names(model, tokenizer)

    def logits(batch: dict[str, np.ndarray]) -> np.ndarray:
        with torch.inference_mode():
            inputs = {name: torch.from_numpy(batch[name]) for name in input_names if name in batch}
            output = model(**inputs)
            return model_logits(output).float().numpy()

    def bf16_logits(batch: dict[str, np.ndarray]) -> np.ndarray:
        with torch.autocast("cpu", dtype=torch.bfloat16):
            return logits(batch)

    return LoadedModel(path=model_dir, runtime="pytorch", tokenizer=tokenizer, logits=logits,
                       input_names=input_names, label_names=read_label_names(model_dir, config),
                       max_length=read_max_length(config, tokenizer), config=config, model=model,
                       bf16_logits=bf16_logits)


def load_onnx_model(onnx_path: Path, num_threads: int = 1) -> LoadedModel:
    """Load an exported ``.onnx`` file (tokenizer and config beside it) with ONNX Runtime."""
    try:
        import onnxruntime
    except ImportError:
        raise ModelLoadError("ONNX models need onnxruntime: pip install onnxruntime") from None
    model_dir = onnx_path.parent
    config = _read_config(model_dir)
    tokenizer = _load_tokenizer(model_dir)
    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = num_threads
    options.inter_op_num_threads = 1
    options.graph_optimization_level = onnxruntime.GraphOptimizationLevel.ORT_ENABLE_ALL
    try:
        session = onnxruntime.InferenceSession(str(onnx_path), options,
                                               providers=["CPUExecutionProvider"])
    except Exception as error:  # onnxruntime raises its own exception types
        raise ModelLoadError(f"{onnx_path}: not a loadable ONNX model ({error}).") from None
    input_names = [item.name for item in session.get_inputs()]

    def logits(batch: dict[str, np.ndarray]) -> np.ndarray:
        feed = {name: batch[name].astype(np.int64, copy=False) for name in input_names}
        return session.run(None, feed)[0].astype(np.float32, copy=False)

    return LoadedModel(path=onnx_path, runtime="onnx", tokenizer=tokenizer, logits=logits,
                       input_names=input_names, label_names=read_label_names(model_dir, config),
                       max_length=read_max_length(config, tokenizer), config=config)


def load_for_inference(path: Path, *, trust_remote_code: bool = False,
                       num_threads: int = 1) -> LoadedModel:
    """PyTorch for a model directory; ONNX Runtime for an ``.onnx`` file or an export directory."""
    if path.is_file():
        return load_onnx_model(path, num_threads)
    if not has_torch_weights(path) and (path / ONNX_FILE).is_file():
        return load_onnx_model(path / ONNX_FILE, num_threads)
    return load_torch_model(path, trust_remote_code)


__all__ = ["CALIBRATION_FILE", "LoadedModel", "ModelLoadError", "configure_threads",
           "cross_validation_models", "load_for_inference", "resolve_model_path", "run_dir_of"]
