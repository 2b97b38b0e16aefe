"""``run_experiment.py predict`` and ``export``: inference on files and model export.

    python run_experiment.py predict RUN_ID --input news.csv --output predictions.jsonl
    python run_experiment.py export RUN_ID --format onnx int8
"""

from __future__ import annotations

import argparse
import csv
import json
import sys
from collections import Counter
from pathlib import Path
from typing import TYPE_CHECKING

from backend.ml.errors import DataError, UserError
from backend.ml.fileio import atomic_path, atomic_write_json
from backend.ml.languages import DEFAULT_LANGUAGE_POLICY, add_language_policy_argument
from backend.ml.run_directory import DEFAULT_RUNS_DIR, RunLayout
from backend.ml.text_files import UnreadableLine, read_records

if TYPE_CHECKING:  # the model code (numpy, onnxruntime, torch) is imported when a command runs
    import numpy as np

    from .classifier import BiasClassifier

CHUNK = 256  # inputs classified per call: bounds memory on large files, keeps the bar moving


def add_inference_subcommands(sub) -> None:
    """`predict` and `export` on the CLI's subparsers."""
    predict = sub.add_parser("predict", help="predict with a run's final model")
    predict.set_defaults(handler=_predict)
    predict.add_argument("run", metavar="RUN_ID_OR_PATH", help="run id, run dir or model dir")
    predict.add_argument("--input", type=Path, metavar="FILE", required=True,
                         help="sentences or articles to predict: .txt (one per line), .csv or "
                         ".xlsx (a text column, optional id and title) or .jsonl (objects "
                         "with text)")
    predict.add_argument("--output", type=Path, metavar="OUT.jsonl", required=True,
                         help="where predictions are written")
    add_language_policy_argument(predict)
    _add_runs_dir(predict)

    export = sub.add_parser("export", help="export a run's final model for fast CPU inference")
    export.set_defaults(handler=_export)
    export.add_argument("run", metavar="RUN_ID_OR_PATH", help="run id, run dir or model dir")
    export.add_argument("--format", dest="export_format", nargs="+", default=["onnx", "int8"],
                        choices=("onnx", "int8"), help="export formats (default: onnx int8)")
    _add_runs_dir(export)


def _add_runs_dir(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--runs-dir", type=Path, default=DEFAULT_RUNS_DIR, metavar="DIR",
                        help="where run ids are looked up (default: experiments/runs)")


def _predict(args: argparse.Namespace) -> int:
    return predict_command(args.run, args.input, args.output, args.runs_dir,
                           args.language_policy)


def _export(args: argparse.Namespace) -> int:
    return export_command(args.run, args.export_format, args.runs_dir)


def _count_lines(path: Path) -> int | None:
    try:
        with open(path, "rb") as stream:
            return sum(1 for _ in stream)
    except OSError:
        return None


def _classify_chunk(classifier: BiasClassifier, chunk: list) -> list[dict]:
    from .classifier import no_prediction

    readable = [item for item in chunk if not isinstance(item, UnreadableLine)]
    results = iter(classifier.predict_with_confidence(readable))
    return [no_prediction(item.line, f"line {item.line}: {item.error}")
            if isinstance(item, UnreadableLine) else next(results) for item in chunk]


def predict_command(model_ref: str, input_path: Path, output_path: Path, runs_dir: Path,
                    language_policy: str = DEFAULT_LANGUAGE_POLICY) -> int:
    """Classify every input of ``input_path`` and write one JSON line per input to ``output_path``.

    ``language_policy`` says what becomes of inputs in languages the model was not trained on.

    >>> predict_command("quickstart_minilm_3f9a1c", Path("news.txt"), Path("out.jsonl"),
    ...                 Path("experiments/runs"))  # doctest: +SKIP
    0
    """
    from .classifier import BiasClassifier
    from .loading import cross_validation_models, resolve_model_path

    fold_models = cross_validation_models(model_ref, runs_dir)
    model_path = fold_models[0].parents[2] if fold_models else resolve_model_path(model_ref,
                                                                                   runs_dir)
    inputs = read_records(input_path)  # fails on a bad path before the model is loaded
    classifier = BiasClassifier(language_policy=language_policy).load_model(model_path)
    print(f"Model: {model_path} ({_describe(classifier)}, language policy {language_policy})",
          file=sys.stderr)
    counts, unsupported = _predict_into(output_path, classifier, inputs,
                                        _count_inputs(Path(input_path)))
    _print_summary(input_path, output_path, counts, unsupported, language_policy)
    return 0


def _describe(classifier) -> str:
    """The runtime, how probabilities are calibrated, and the languages the model learned."""
    if classifier.ensemble_size > 1:
        calibration = "each calibrated" if classifier.is_calibrated else "not all calibrated"
        described = (f"ensemble of {classifier.ensemble_size} fold models, mean probability, "
                     f"{calibration}")
    elif classifier.is_calibrated:
        described = f"temperature {classifier.temperature:.3g}"
    else:
        described = "not calibrated"
    trained_on = (", ".join(classifier.training_languages) if classifier.training_languages
                  is not None else "not recorded")
    return f"{classifier.runtime}, {described}; trained on languages: {trained_on}"


def _count_inputs(input_path: Path) -> int | None:
    """Inputs for the progress bar where a line is one input; a CSV field or a spreadsheet
    cell may hold several lines, so those get a bar without a total."""
    return _count_lines(input_path) if input_path.suffix.lower() in (".txt", ".jsonl") else None


def _predict_into(output_path: Path, classifier, inputs, total: int | None
                  ) -> tuple[dict[str, int], Counter[str]]:
    """Classify ``inputs`` CHUNK at a time into ``output_path``, written whole or not at all;
    returns the count of each label and of the inputs per language the model was not trained
    on."""
    from tqdm.auto import tqdm

    counts: dict[str, int] = {}
    unsupported: Counter[str] = Counter()
    with atomic_path(output_path) as temporary, open(temporary, "w", encoding="utf-8") as out, \
            tqdm(total=total, desc="Predicting", unit="input", file=sys.stderr) as progress:
        chunk: list = []
        for item in inputs:
            chunk.append(item)
            if len(chunk) == CHUNK:
                _write(out, _classify_chunk(classifier, chunk), counts, unsupported)
                progress.update(len(chunk))
                chunk = []
        if chunk:
            _write(out, _classify_chunk(classifier, chunk), counts, unsupported)
            progress.update(len(chunk))
        out.flush()
        out.close()
    return counts, unsupported


def _print_summary(input_path: Path, output_path: Path, counts: dict[str, int],
                   unsupported: Counter[str], language_policy: str) -> None:
    written = sum(counts.values())
    if not written:
        print(f"warning: {input_path} holds no input; wrote an empty {output_path}.",
              file=sys.stderr)
    listing = ", ".join(f"{label}: {count}" for label, count in sorted(counts.items()))
    print(f"Wrote {written} predictions to {output_path} ({listing or 'none'}).")
    if unsupported:
        outcome = ("left without a label" if language_policy == "abstain"
                   else "labelled, flagged supported_language: false")
        print(f"{sum(unsupported.values())} input(s) in languages the model was not trained on "
              f"({', '.join(f'{code} {n}' for code, n in unsupported.most_common())}): "
              f"{outcome}.")


def _write(stream, results: list[dict], counts: dict[str, int],
           unsupported: Counter[str]) -> None:
    from .classifier import ABSTAINED, NO_PREDICTION

    for result in results:
        label = (result["status"] if result["status"] in (NO_PREDICTION, ABSTAINED)
                 else result["label"])
        counts[label] = counts.get(label, 0) + 1
        if result.get("supported_language") is False:
            unsupported[result["language"]] += 1
        stream.write(json.dumps(result, ensure_ascii=False) + "\n")


# ---------------------------------------------------------------------- export


def _test_split(run_dir: Path | None, label_names: list[str]) -> tuple[list[str], np.ndarray] | str:
    """(texts, label ids) of the run's test split, or why there is none."""
    import numpy as np

    if run_dir is None:
        return "the model is not inside a run directory"
    path = run_dir / "predictions" / "test_predictions.csv"
    if not path.is_file():
        return f"{path} not found"
    with open(path, encoding="utf-8", newline="") as stream:
        rows = list(csv.DictReader(stream))
    if rows and not {"text", "true_label"} <= set(rows[0]):
        raise DataError(f"{path}: needs 'text' and 'true_label' columns.")
    unknown = sorted({row["true_label"] for row in rows} - set(label_names))
    if unknown:
        raise DataError(f"{path}: labels {unknown} are not the model's ({label_names}).")
    rows = [row for row in rows if row["text"].strip()]
    if not rows:
        return f"{path} holds no sentence"
    return ([row["text"] for row in rows],
            np.array([label_names.index(row["true_label"]) for row in rows], dtype=int))


def export_command(model_ref: str, formats: list[str], runs_dir: Path) -> int:
    """Write ONNX / int8 exports of a run's model and check them against PyTorch on the test split.

    Exit status 1 when an export loses more than 0.5 points of macro F1 on the test split.

    >>> export_command("quickstart_minilm_3f9a1c", ["onnx", "int8"],
    ...                Path("experiments/runs"))  # doctest: +SKIP
    0
    """
    from .classifier import BiasClassifier
    from .export import FORMATS, MAX_F1_DROP_POINTS, copy_bundle, export_onnx, quantize_int8
    from .loading import has_torch_weights, resolve_model_path, run_dir_of

    requested = _export_formats(formats)
    model_path = resolve_model_path(model_ref, runs_dir)
    if not has_torch_weights(model_path):
        raise UserError(f"{model_path} is already an export; pass the run or its final_model/.")
    run_dir = run_dir_of(model_path)
    export_dir = RunLayout(run_dir or model_path).exports
    reference = BiasClassifier(precision="fp32").load_model(model_path)  # what exports match
    print(f"Exporting {model_path} to {export_dir}", file=sys.stderr)

    copy_bundle(model_path, export_dir)
    files = {"onnx": export_onnx(reference._model, export_dir / FORMATS["onnx"])}
    if "int8" in requested:
        files["int8"] = quantize_int8(files["onnx"], export_dir / FORMATS["int8"])
    exports: dict[str, dict[str, object]] = {
        name: {"path": str(files[name]), "size_mb": round(files[name].stat().st_size / 2**20, 2)}
        for name in requested}
    report = {"model": str(model_path), "max_f1_drop_points": MAX_F1_DROP_POINTS,
              "exports": exports,
              "check": _check_exports(reference, files, exports, run_dir)}
    atomic_write_json(export_dir / "export_report.json", report)
    return _print_export_report(report, export_dir)


def _export_formats(formats: list[str]) -> list[str]:
    """The requested formats, known and once each; a clear error when onnx is not installed."""
    from .export import FORMATS

    requested = list(dict.fromkeys(format_.lower() for format_ in formats or ["onnx", "int8"]))
    unknown = [format_ for format_ in requested if format_ not in FORMATS]
    if unknown:
        raise UserError(f"unknown export format(s) {', '.join(unknown)}; choose from "
                        f"{', '.join(FORMATS)}.")
    try:
        import onnx  # noqa: F401  (the exporter needs it)
        import onnxruntime  # noqa: F401
    except ImportError:
        raise UserError("export needs onnx and onnxruntime: pip install onnx onnxruntime") from None
    return requested


def _check_exports(reference, files: dict[str, Path], exports: dict[str, dict],
                   run_dir: Path | None) -> dict:
    """Each export's agreement with PyTorch and speed on the run's test split (updating
    ``exports``); what was checked, or why nothing was."""
    from .classifier import BiasClassifier
    from .export import compare_predictions, timed_probabilities

    split = _test_split(run_dir, reference.label_names)
    if isinstance(split, str):
        print(f"warning: exports not checked against PyTorch: {split}.", file=sys.stderr)
        return {"checked": False, "reason": split}
    texts, labels = split
    expected, speed = timed_probabilities(reference, texts)
    for name in exports:
        exported = BiasClassifier().load_model(files[name])
        probabilities, speed_of_export = timed_probabilities(exported, texts)
        exports[name].update(compare_predictions(expected, probabilities, labels,
                                                 reference.label_names),
                             sentences_per_second=round(speed_of_export, 1))
    return {"checked": True, "split": "test", "num_samples": len(texts),
            "pytorch_sentences_per_second": round(speed, 1)}


def _print_export_report(report: dict, export_dir: Path) -> int:
    failed = []
    print(f"{'format':<8}{'file':<18}{'MB':>8}{'agree':>8}{'F1 drop':>9}{'sent/s':>9}")
    for name, entry in report["exports"].items():
        if "agreement" in entry:
            print(f"{name:<8}{Path(entry['path']).name:<18}{entry['size_mb']:>8.1f}"
                  f"{entry['agreement']:>8.3f}{entry['f1_drop_points']:>9.2f}"
                  f"{entry['sentences_per_second']:>9.0f}")
            if not entry["passed"]:
                failed.append(name)
        else:
            print(f"{name:<8}{Path(entry['path']).name:<18}{entry['size_mb']:>8.1f}")
    if report["check"].get("checked"):
        print(f"PyTorch on the same {report['check']['num_samples']} test sentences: "
              f"{report['check']['pytorch_sentences_per_second']:.0f} sentences/s")
    print(f"Report: {export_dir / 'export_report.json'}")
    if failed:
        print(f"error: {', '.join(failed)} lost more than {report['max_f1_drop_points']} points "
              "of macro F1 on the test split; do not ship it.", file=sys.stderr)
        return 1
    return 0
