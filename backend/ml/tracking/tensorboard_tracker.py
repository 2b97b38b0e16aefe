"""TensorBoard: scalars, HParams, confusion-matrix images, PR curves, prediction samples, the
model graph and the config, all in the run's ``logs/`` so ``tensorboard --logdir
experiments/runs`` shows every run side by side."""

from __future__ import annotations

import logging
import time
import warnings
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import yaml

from ..metrics import EvaluationResult, label_slug, numeric_items
from .base import flatten_config, plain_data
from .plots import confusion_matrix_figure, figure_to_array

if TYPE_CHECKING:
    from torch.utils.tensorboard.writer import FileWriter

logger = logging.getLogger(__name__)

_STATUS = {"completed": "STATUS_SUCCESS", "failed": "STATUS_FAILURE",
           "interrupted": "STATUS_FAILURE"}


def _markdown_cell(text: Any) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ")


def samples_markdown(samples: list[dict]) -> str:
    """Prediction samples as a Markdown table (TensorBoard's text tab renders it).

    >>> print(samples_markdown([{"text": "a", "true_label": "Biased",
    ...     "predicted_label": "Biased", "confidence": 0.9, "correct": True}]))
    | # | sentence | true label | predicted label | confidence | correct |
    |---|---|---|---|---|---|
    | 1 | a | Biased | Biased | 0.900 | yes |
    """
    lines = ["| # | sentence | true label | predicted label | confidence | correct |",
             "|---|---|---|---|---|---|"]
    for number, sample in enumerate(samples, start=1):
        lines.append(f"| {number} | {_markdown_cell(sample['text'])} | {sample['true_label']} | "
                     f"{sample['predicted_label']} | {sample['confidence']:.3f} | "
                     f"{'yes' if sample['correct'] else '**no**'} |")
    return "\n".join(lines)


def _yaml_block(data: dict) -> str:
    # Four-space indentation makes Markdown (TensorBoard's text tab) keep it as code.
    text = yaml.safe_dump(plain_data(data), sort_keys=False, allow_unicode=True)
    return "\n".join("    " + line for line in text.splitlines())


class TensorBoardTracker:
    """Event files in ``log_dir``; one writer, so every tag of a run lines up in one run.

    HParams are written as a session start (the flattened config, at ``log_config``) and end
    (the status, at ``close``) in the same logdir, never as a sub-run: TensorBoard's HParams tab
    then lists one row per run with every scalar's last value as a metric column, including
    ``best_eval/*`` (the best checkpoint's validation metrics from results.json).
    """

    def __init__(self, log_dir: Path, prediction_samples: int = 20):
        from torch.utils.tensorboard import SummaryWriter
        self.log_dir = Path(log_dir)
        self.writer = SummaryWriter(log_dir=str(self.log_dir))
        self.prediction_samples = prediction_samples
        self.last_step = 0
        self.logged_tags: set[str] = set()
        self.closed = False

    def log_config(self, config: dict, run_info: dict) -> None:
        self.writer.add_text("config", _yaml_block(config), 0)
        if run_info:
            self.writer.add_text("run_info", _yaml_block(run_info), 0)
        self._write_hparams_start(flatten_config(config))
        self.writer.flush()

    def log_metrics(self, metrics: dict[str, float], step: int) -> None:
        for tag, value in numeric_items(metrics).items():
            self.writer.add_scalar(tag, value, step)
            self.logged_tags.add(tag)
        self.last_step = max(self.last_step, int(step))
        self.writer.flush()

    def log_evaluation(self, evaluation: EvaluationResult, step: int) -> None:
        split = evaluation.split
        figure = confusion_matrix_figure(evaluation.metrics["confusion_matrix"],
                                         evaluation.label_names,
                                         title=f"{split} confusion matrix, step {step}")
        self.writer.add_image(f"{split}/confusion_matrix", figure_to_array(figure), step,
                              dataformats="HWC")
        for class_id, name in enumerate(evaluation.label_names):
            self.writer.add_pr_curve(f"{split}/pr_curve/{label_slug(name)}",
                                     (evaluation.labels == class_id).astype(np.int64),
                                     evaluation.probabilities[:, class_id], step)
        if self.prediction_samples:
            samples = evaluation.samples(self.prediction_samples)
            self.writer.add_text(f"{split}/predictions", samples_markdown(samples), step)
        self.last_step = max(self.last_step, int(step))
        self.writer.flush()

    def log_model_graph(self, model: Any, example_batch: dict) -> None:
        import torch

        from ..models.outputs import LogitsOnly

        names = ("input_ids", "attention_mask")
        inputs = tuple(example_batch[name] for name in names)
        was_training = getattr(model, "training", False)
        model.eval()  # dropout off: the trace is deterministic and the tracer stays quiet
        try:
            with warnings.catch_warnings(), torch.no_grad():
                warnings.simplefilter("ignore")
                self.writer.add_graph(LogitsOnly(model, names), inputs, use_strict_trace=False)
        except Exception as error:  # noqa: BLE001 - some models cannot be traced
            logger.warning("TensorBoard model graph skipped: tracing %s failed (%s: %s).",
                           type(model).__name__, type(error).__name__, error)
        finally:
            model.train(was_training)
        self.writer.flush()

    def log_summary(self, results: dict, run_dir: Path) -> None:
        step = self.last_step
        best = results.get("eval")
        if isinstance(best, dict):
            for key, value in numeric_items(best).items():
                self.writer.add_scalar(f"best_eval/{key}", value, step)
        test = results.get("test")
        if isinstance(test, dict):  # normally logged already by the trainer at the final step
            for key, value in numeric_items(test).items():
                if f"test/{key}" not in self.logged_tags:
                    self.writer.add_scalar(f"test/{key}", value, step)
        self.writer.flush()

    def close(self, status: str) -> None:
        if self.closed:
            return
        self.closed = True
        self._write_hparams_end(status)
        self.writer.close()

    def _write_hparams_start(self, hparams: dict[str, Any]) -> None:
        from torch.utils.tensorboard.summary import hparams as hparams_summary
        # Booleans read better as text in the HParams table (true/false, not 1.0/0.0).
        values = {key: (str(value).lower() if isinstance(value, bool) else value)
                  for key, value in hparams.items()}
        _, session_start, _ = hparams_summary(values, {})
        self._file_writer().add_summary(session_start)

    def _write_hparams_end(self, status: str) -> None:
        from tensorboard.compat.proto.summary_pb2 import Summary, SummaryMetadata
        from tensorboard.plugins.hparams import api_pb2, metadata, plugin_data_pb2
        end = plugin_data_pb2.SessionEndInfo(
            status=api_pb2.Status.Value(_STATUS.get(status, "STATUS_UNKNOWN")),
            end_time_secs=time.time())
        content = plugin_data_pb2.HParamsPluginData(session_end_info=end,
                                                    version=metadata.PLUGIN_DATA_VERSION)
        summary_metadata = SummaryMetadata(plugin_data=SummaryMetadata.PluginData(
            plugin_name=metadata.PLUGIN_NAME, content=content.SerializeToString()))
        self._file_writer().add_summary(Summary(value=[Summary.Value(
            tag=metadata.SESSION_END_INFO_TAG, metadata=summary_metadata)]))

    def _file_writer(self) -> FileWriter:
        # SummaryWriter has no public method that writes a prepared Summary: add_hparams writes
        # session start and end together into a separate run, where this tracker writes the
        # start into this run and the end (with the status) at close. torch's own add_hparams
        # writes through file_writer as well.
        file_writer = self.writer.file_writer
        if file_writer is None:  # SummaryWriter.close() has already run
            raise RuntimeError(f"the TensorBoard writer for {self.log_dir} is closed")
        return file_writer
