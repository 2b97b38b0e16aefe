"""The pip-shipped MiniLM: the documented snippet as written; ONNX / int8 exports vs PyTorch.

The classification head is fitted (logistic regression on MiniLM's pooled features of the shipped
demo sentences) so that, as with a trained run, the classes are separated and agreement between
runtimes means something; a random head gives near-ties that any rounding flips.
"""

import csv
import json
import re
from pathlib import Path

import numpy as np
import pytest
import torch
from sklearn.metrics import f1_score

from backend.ml.bias_classifier import BiasClassifier
from backend.ml.inference.commands import export_command
from backend.ml.models import save_model
from support.inference import LABELS, NEWS_SENTENCES, make_run_dir, minilm_model

REPO_ROOT = Path(__file__).resolve().parents[1]
DEMO_CSV = REPO_ROOT / "backend" / "ml" / "data" / "demo" / "demo_sentences.csv"
DOCS = REPO_ROOT / "docs" / "inference.md"


def demo_sentences(count: int) -> list[tuple[str, str]]:
    if not DEMO_CSV.is_file():
        pytest.skip(f"{DEMO_CSV} not found")
    with open(DEMO_CSV, encoding="utf-8-sig", newline="") as stream:
        rows = [(row["text"], row["label_bias"]) for row in csv.DictReader(stream, delimiter=";")
                if row["label_bias"] in LABELS]
    return rows[:count]


def fitted_minilm_dir(directory: Path, rows: list[tuple[str, str]]) -> Path:
    """MiniLM whose 3-class head is fitted on ``rows`` (a stand-in for a trained final_model)."""
    from sklearn.linear_model import LogisticRegression

    model, tokenizer = minilm_model()
    with torch.inference_mode():
        encoded = tokenizer([text for text, _ in rows], padding=True, return_tensors="pt")
        pooled = model.bert(**encoded).pooler_output.numpy()
    labels = [LABELS.index(label) for _, label in rows]
    regression = LogisticRegression(C=10.0, max_iter=2000).fit(pooled, labels)
    with torch.no_grad():
        model.classifier.weight.copy_(torch.from_numpy(regression.coef_).float())
        model.classifier.bias.copy_(torch.from_numpy(regression.intercept_).float())
    save_model(model, tokenizer, directory, LABELS)
    return directory


@pytest.fixture(scope="module")
def minilm_runs(tmp_path_factory):
    """experiments/runs with a MiniLM run (best eval F1) and a weaker tiny run."""
    root = tmp_path_factory.mktemp("app")
    rows = demo_sentences(240)
    train, test = rows[:160], rows[160:]
    runs = root / "experiments" / "runs"
    make_run_dir(runs / "minilm_3f9a1c", model_builder=lambda d: fitted_minilm_dir(d, train),
                 test_rows=test, eval_f1=0.8)
    make_run_dir(runs / "tiny_0b1c2d", eval_f1=0.4)
    return root


def documented_snippet() -> str:
    text = DOCS.read_text(encoding="utf-8")
    snippet = re.search(r"```python\n(.*?)```", text, re.S)
    assert snippet is not None, f"{DOCS} shows no python snippet"
    return snippet.group(1)


def test_documented_snippet_works_as_written(minilm_runs, monkeypatch):
    monkeypatch.chdir(minilm_runs)
    namespace: dict = {}
    exec(compile(documented_snippet(), str(DOCS), "exec"), namespace)

    assert namespace["best_run"] == "minilm_3f9a1c"
    results = namespace["results"]
    assert len(results) == 2
    sentence, article = results
    assert sentence["label"] in LABELS
    assert sum(sentence["probabilities"].values()) == pytest.approx(1)
    assert article["id"] == "a-17" and article["num_sentences"] == 3  # title + two sentences
    biased = sum(sentence["label"] == "Biased" for sentence in article["sentences"])
    assert article["summary"]["biased_share"] == biased / article["num_sentences"]
    assert namespace["labels"][0] in LABELS


def test_onnx_and_int8_exports_agree_with_pytorch(minilm_runs, capsys):
    run_dir = minilm_runs / "experiments" / "runs" / "minilm_3f9a1c"
    status = export_command("minilm_3f9a1c", ["onnx", "int8"], run_dir.parent)
    report = json.loads((run_dir / "exports" / "export_report.json").read_text())
    fp32, int8 = report["exports"]["onnx"], report["exports"]["int8"]
    assert report["check"]["num_samples"] == 80
    assert fp32["agreement"] == 1.0 and fp32["max_probability_difference"] < 1e-4
    # int8 rounds every weight: a few sentences near a class boundary may change label.
    assert int8["agreement"] >= 0.9 and int8["mean_probability_difference"] < 0.05
    assert int8["size_mb"] < fp32["size_mb"] / 3
    printed = capsys.readouterr()
    assert "model-int8.onnx" in printed.out

    quantised = BiasClassifier().load_model(run_dir / "exports" / "model-int8.onnx")
    reference = BiasClassifier().load_model(run_dir)
    # The F1 drop the report states, measured here on the run's test split.
    with open(run_dir / "predictions" / "test_predictions.csv", encoding="utf-8") as stream:
        rows = list(csv.DictReader(stream))
    texts, truth = [row["text"] for row in rows], [row["true_label"] for row in rows]
    drop = 100 * (f1_score(truth, reference.predict(texts), labels=LABELS, average="macro",
                           zero_division=0)
                  - f1_score(truth, quantised.predict(texts), labels=LABELS, average="macro",
                             zero_division=0))
    assert int8["f1_drop_points"] == pytest.approx(drop, abs=1e-9)
    # Whichever way the 0.5-point rule went on these 80 sentences, the exit status and the
    # message tell the user the same thing.
    assert status == (1 if drop > 0.5 else 0)
    assert ("int8 lost more than 0.5 points" in printed.err) == (status == 1)
    article = " ".join(NEWS_SENTENCES)
    got, expected = (c.predict_with_confidence(article) for c in (quantised, reference))
    assert got["num_sentences"] == expected["num_sentences"] == len(NEWS_SENTENCES)
    assert sum(got["probabilities"].values()) == pytest.approx(1.0)
    assert np.allclose([got["probabilities"][n] for n in LABELS],
                       [expected["probabilities"][n] for n in LABELS], atol=0.05)
