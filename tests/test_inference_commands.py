"""``--predict`` and ``--export``: files in, JSON lines and exports out; user mistakes explained."""

import json
import shutil

import pytest

from backend.ml.bias_classifier import BiasClassifier
from backend.ml.errors import DataError, UserError
from backend.ml.fileio import read_jsonl
from backend.ml.inference.commands import export_command, predict_command
from support.cli import run_main
from support.inference import LABELS, NEWS_SENTENCES, make_run_dir, make_tiny_model_dir

ARTICLE = "The vote was delayed. Critics called the plan a radical power grab."


@pytest.fixture(scope="module")
def runs_dir(tmp_path_factory):
    runs = tmp_path_factory.mktemp("runs")
    make_run_dir(runs / "tiny_abc123")
    return runs


def test_predict_txt_one_input_per_line(tmp_path, runs_dir, capsys):
    source = tmp_path / "news.txt"
    source.write_text(f"{NEWS_SENTENCES[0]}\n\n{ARTICLE}\n", encoding="utf-8")
    output = tmp_path / "out" / "predictions.jsonl"
    assert predict_command("tiny_abc123", source, output, runs_dir) == 0
    records = read_jsonl(output)
    assert [r["id"] for r in records] == [1, 3]  # line numbers; the blank line is no input
    assert records[0]["label"] in LABELS and "sentences" not in records[0]
    assert records[1]["num_sentences"] == 2 and "summary" in records[1]
    captured = capsys.readouterr()
    assert "Wrote 2 predictions" in captured.out
    assert "Predicting" in captured.err  # the progress bar


def test_predict_csv_and_jsonl_keep_ids_and_mark_bad_rows(tmp_path, runs_dir):
    csv_file = tmp_path / "news.csv"
    csv_file.write_text('id,title,text\nx1,A headline,"' + ARTICLE + '"\nx2,,\nx3,,'
                        + NEWS_SENTENCES[1] + "\n", encoding="utf-8")
    out = tmp_path / "csv.jsonl"
    predict_command(str(runs_dir / "tiny_abc123"), csv_file, out, runs_dir)
    records = read_jsonl(out)
    assert [r["id"] for r in records] == ["x1", "x2", "x3"]
    assert records[0]["sentences"][0] == {**records[0]["sentences"][0], "part": "title",
                                          "text": "A headline"}
    assert records[1]["status"] == "no_prediction" and records[1]["error"] == "empty text"
    assert records[2]["status"] == "ok"

    jsonl_file = tmp_path / "news.jsonl"
    jsonl_file.write_text("\n".join([json.dumps({"id": "a", "text": ARTICLE}),
                                     json.dumps(NEWS_SENTENCES[2]), "{broken",
                                     json.dumps({"id": "n", "text": 5})]) + "\n")
    out = tmp_path / "jsonl.jsonl"
    model_dir = runs_dir / "tiny_abc123" / "final_model"
    assert predict_command(str(model_dir), jsonl_file, out, runs_dir) == 0
    records = read_jsonl(out)
    assert [r["id"] for r in records] == ["a", 2, 3, "n"]
    assert [r["status"] for r in records] == ["ok", "ok", "no_prediction", "no_prediction"]
    assert "line 3: invalid JSON" in records[2]["error"]


@pytest.mark.parametrize("name, content, message", [
    ("news.csv", "headline,body\nx,y\n", "no 'text' column \\(columns: headline, body\\)"),
    ("news.xml", "<a/>", "unsupported file type '.xml'; use .txt"),
    ("missing.txt", None, "missing.txt: file not found"),
])
def test_predict_input_mistakes(tmp_path, runs_dir, name, content, message):
    path = tmp_path / name
    if content is not None:
        path.write_text(content)
    with pytest.raises(DataError, match=message):
        predict_command("tiny_abc123", path, tmp_path / "out.jsonl", runs_dir)
    assert not (tmp_path / "out.jsonl").exists()


def test_unknown_run_lists_the_runs(tmp_path, runs_dir):
    source = tmp_path / "in.txt"
    source.write_text("x\n")
    with pytest.raises(UserError, match="No run or model named 'tiny_zzz'.*tiny_abc123"):
        predict_command("tiny_zzz", source, tmp_path / "out.jsonl", runs_dir)


def test_export_onnx_checks_agreement_on_the_test_split(tmp_path, capsys):
    run_dir = make_run_dir(tmp_path / "tiny_def456")
    assert export_command(str(run_dir), ["onnx"], tmp_path) == 0
    report = json.loads((run_dir / "exports" / "export_report.json").read_text())
    entry = report["exports"]["onnx"]
    assert report["check"]["checked"] and report["check"]["num_samples"] == 24
    assert entry["agreement"] == 1.0 and entry["f1_drop_points"] == pytest.approx(0.0)
    assert entry["max_probability_difference"] < 1e-5 and entry["passed"]
    assert "onnx" in capsys.readouterr().out
    # The export directory stands alone: the app can load it without the PyTorch weights.
    exported = BiasClassifier().load_model(run_dir / "exports")
    assert exported.runtime == "onnx" and exported.label_names == LABELS
    with pytest.raises(UserError, match="unknown export format"):
        export_command(str(run_dir), ["tflite"], tmp_path)


@pytest.mark.slow
def test_cli_predict_and_export_on_a_trained_run(tiny_run_dir, tmp_path, capsys):
    """The real CLI on a run the real trainer wrote (calibrated at the end of training)."""
    results = json.loads((tiny_run_dir / "results.json").read_text())
    calibration = json.loads((tiny_run_dir / "final_model" / "calibration.json").read_text())
    assert results["calibration"]["temperature"] == pytest.approx(calibration["temperature"])
    assert {"ece_before", "ece_after"} <= set(results["calibration"])

    source = tmp_path / "news.txt"
    source.write_text(f"{NEWS_SENTENCES[0]}\n{ARTICLE}\n")
    out = tmp_path / "predictions.jsonl"
    completed = run_main(capsys, "predict", str(tiny_run_dir), "--input", str(source), "--output",
                        str(out))
    assert completed.returncode == 0, completed.stderr
    records = read_jsonl(out)
    assert len(records) == 2 and all(r["calibrated"] for r in records)
    assert "Predicting" in completed.stderr

    copy = tmp_path / "runs" / tiny_run_dir.name  # exports go into the run: leave the shared one be
    shutil.copytree(tiny_run_dir, copy, ignore=shutil.ignore_patterns("checkpoints"))
    exported = run_main(capsys, "export", tiny_run_dir.name, "--format", "onnx",
                       "--runs-dir", str(tmp_path / "runs"))
    assert exported.returncode == 0, exported.stderr
    report = json.loads((copy / "exports" / "export_report.json").read_text())
    assert report["exports"]["onnx"]["agreement"] == 1.0

    missing = run_main(capsys, "predict", "no_such_run", "--input", str(source), "--output",
                      str(tmp_path / "x.jsonl"), "--runs-dir", str(tmp_path))
    assert missing.returncode == 1 and "No run or model named" in missing.stderr
    assert "Traceback" not in missing.stderr


def load_inference_benchmark():
    import importlib.util
    from pathlib import Path

    script = Path(__file__).resolve().parents[1] / "benchmarks" / "bench_inference.py"
    spec = importlib.util.spec_from_file_location("bench_inference", script)
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    return bench


def test_benchmark_script_runs_and_compares_with_the_pipeline(tmp_path, capsys):
    from backend.ml.models.hardware import cpu_has_native_bf16

    bench = load_inference_benchmark()
    model_dir = make_tiny_model_dir(tmp_path / "model", max_length=64)
    report = tmp_path / "bench.json"
    status = bench.main(["--model", str(model_dir), "--num-sentences", "60", "--repeats", "1",
                         "--threads", "1", "--json", str(report)])
    numbers = json.loads(report.read_text())
    assert status == 0  # the default path labels every sentence as the batched pipeline does
    default = f"BiasClassifier (default: {'bf16' if cpu_has_native_bf16() else 'fp32'})"
    assert set(numbers["paths"]) == {"pipeline batch_size=32", "transformers.pipeline (unbatched)",
                                     default, "BiasClassifier (PyTorch fp32)"}
    # Only sentences the tiny model reads in one window are timed (the pipeline fails on longer).
    assert 0 < numbers["sentences"] <= 60
    for path in (default, "BiasClassifier (PyTorch fp32)"):
        assert numbers["paths"][path]["same_labels"] == numbers["sentences"]
    assert f"{default} vs pipeline batch_size=32" in capsys.readouterr().out


def test_benchmark_times_a_student_beside_its_teacher_in_one_run(tmp_path, capsys):
    from backend.ml.models.hardware import cpu_has_native_bf16

    bench = load_inference_benchmark()
    student = make_tiny_model_dir(tmp_path / "student", max_length=64)
    # The same weights as the student: every label must agree.
    teacher = make_tiny_model_dir(tmp_path / "teacher", max_length=64)
    report = tmp_path / "bench.json"
    assert bench.main(["--model", str(student), "--teacher", str(teacher), "--num-sentences", "40",
                       "--repeats", "1", "--threads", "1", "--json", str(report)]) == 0
    numbers = json.loads(report.read_text())["teacher"]
    default = f"default: {'bf16' if cpu_has_native_bf16() else 'fp32'}"
    assert set(numbers["paths"]) == {default, "PyTorch fp32"}
    assert numbers["model"] == str(teacher)
    assert numbers["same_labels_as_student"] == json.loads(report.read_text())["sentences"]
    for timing in numbers["paths"].values():
        assert timing["student_speedup"] == pytest.approx(
            timing["student_sentences_per_second"] / timing["sentences_per_second"])
    out = capsys.readouterr().out
    assert f"teacher: {teacher}" in out and "sentences as its teacher does" in out

    with pytest.raises(SystemExit) as refused:
        bench.main(["--teacher", str(teacher)])
    assert refused.value.code == 2
    assert "pass the student as --model" in capsys.readouterr().err
