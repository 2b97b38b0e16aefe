"""The HTTP API over real loopback HTTP: answers, errors, limits, logging, split and batching."""

from __future__ import annotations

import asyncio
import json
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from backend.ml.cli import main
from backend.ml.run_directory import read_results
from backend.ml.serving.app import Limits, ServedModel, create_app
from backend.ml.serving.batching import MicroBatcher
from backend.ml.serving.logs import PredictionLog, read_predictions, read_sessions
from backend.ml.serving.server import BackgroundServer, free_port, load_served_model
from backend.ml.serving.traffic import TrafficSplit, item_key
from support.cli import REPO_ROOT, cli_environment
from support.runs import train_tiny

GERMAN = "Die Gespräche zwischen Gewerkschaften und Arbeitgebern sind gescheitert."
ARTICLE = {"id": "a-1", "title": "Officials meet",
           "text": "Officials met on Tuesday. The reckless plan will ruin everyone."}


@pytest.fixture(scope="module")
def runs_dir(tmp_path_factory) -> Path:
    runs = tmp_path_factory.mktemp("serving") / "runs"
    train_tiny(runs, "tiny_serve", 1e-3)
    return runs


@pytest.fixture(scope="module")
def production(runs_dir):
    return load_served_model("tiny_serve", "production", runs_dir, runs_dir.parent / "registry")


@pytest.fixture
def server(production, tmp_path):
    app = create_app(production, log_dir=tmp_path / "serving",
                     limits=Limits(max_body_bytes=20_000, max_texts=8, max_text_chars=2_000))
    with BackgroundServer(app) as running:
        running.log_dir = tmp_path / "serving"
        yield running


def test_predict_answers_as_predict_with_confidence_and_names_the_version(server, production):
    inputs = ["The senator's reckless scheme will ruin us.", ARTICLE]
    response = httpx.post(f"{server.url}/predict", json={"texts": inputs}, timeout=60)
    assert response.status_code == 200
    answers = response.json()
    expected = production.classifier.predict_with_confidence(inputs)
    for answer, reference in zip(answers, expected):
        assert answer["version"] == "production" and answer["run_id"] == "tiny_serve"
        assert answer["label"] == reference["label"]
        assert answer["confidence"] == pytest.approx(reference["confidence"], abs=1e-6)
        assert set(answer) - {"version", "run_id"} == set(reference)
    assert answers[1]["id"] == "a-1" and answers[1]["num_sentences"] == 3  # title + 2 sentences
    assert answers[1]["summary"]["num_sentences"] == 3

    logged = read_predictions(server.log_dir)
    assert [record["key"] for record in logged] == [item_key(None, inputs[0]), "id:a-1"]
    assert all("text" not in record for record in logged)  # texts stay private by default
    assert logged[0]["label"] == answers[0]["label"] and logged[0]["latency_ms"] > 0


@pytest.mark.parametrize("body, status, message", [
    (b'{"texts": ["a"', 422, "not valid JSON"),
    (b'{}', 422, "texts: Field required"),
    (b'{"texts": "one sentence"}', 422, "texts: Input should be a valid list"),
    (b'{"texts": []}', 422, "texts: List should have at least 1 item"),
    (b'{"texts": [{"id": 1, "txt": "typo"}]}', 422, "texts.0.Article.txt: Extra inputs"),
    (json.dumps({"texts": ["s"] * 9}).encode(), 413, "at most 8 per request"),
    (json.dumps({"texts": ["ok", "x" * 2001]}).encode(), 413, "texts.1: 2001 characters"),
    (json.dumps({"texts": ["x" * 1000] * 25}).encode(), 413, "above 20000 bytes"),
])
def test_bad_predict_bodies_get_a_4xx_that_says_what_to_fix(server, body, status, message):
    response = httpx.post(f"{server.url}/predict", content=body, timeout=30,
                          headers={"content-type": "application/json"})
    assert response.status_code == status
    assert message in response.json()["error"]
    assert not read_predictions(server.log_dir)


def test_streamed_body_above_the_limit_is_refused(server):
    def chunks():  # no Content-Length: the server counts what arrives
        yield b'{"texts": ["'
        for _ in range(30):
            yield b"x" * 1000
        yield b'"]}'

    response = httpx.post(f"{server.url}/predict", content=chunks(), timeout=30,
                          headers={"content-type": "application/json"})
    assert response.status_code == 413


def test_feedback_is_stored_and_checked(server):
    stored = httpx.post(f"{server.url}/feedback", json={"id": "a-1", "label": "biased",
                                                        "text": "The plan will ruin us."})
    assert stored.status_code == 201 and stored.json()["key"] == "id:a-1"
    lines = (server.log_dir / "feedback.jsonl").read_text().splitlines()
    assert json.loads(lines[0])["label"] == "Biased"  # spelled as the model's classes
    wrong = httpx.post(f"{server.url}/feedback", json={"text": "A sentence.", "label": "unfair"})
    assert wrong.status_code == 422
    assert "'unfair' is not one of Non-biased, Biased, No agreement" in wrong.json()["error"]
    nothing = httpx.post(f"{server.url}/feedback", json={"label": "Biased"})
    assert nothing.status_code == 422 and "'id' or the sentence 'text'" in nothing.json()["error"]
    source = httpx.post(f"{server.url}/feedback", json={"text": "x", "label": "Biased",
                                                        "source": "bot"})
    assert source.status_code == 422 and "source" in source.json()["error"]
    assert len((server.log_dir / "feedback.jsonl").read_text().splitlines()) == 1


def test_health_model_and_openapi_docs(server, runs_dir):
    assert httpx.get(f"{server.url}/health").json()["versions"] == {"production": "tiny_serve"}
    model = httpx.get(f"{server.url}/model").json()["versions"]["production"]
    assert model["label_names"] == ["Non-biased", "Biased", "No agreement"]
    assert model["runtime"] == "pytorch" and model["precision"] in ("bf16", "fp32")
    assert model["calibration"]["method"] == "temperature_scaling"
    assert model["metrics"]["test"]["f1_macro"] == \
        read_results(runs_dir / "tiny_serve")["test"]["f1_macro"]
    schema = httpx.get(f"{server.url}/openapi.json").json()
    assert {"/predict", "/feedback", "/health", "/model"} <= set(schema["paths"])
    assert httpx.get(f"{server.url}/docs").status_code == 200


def test_a_failing_model_fails_only_the_answers_it_serves(production, tmp_path):
    class Broken:  # a candidate whose forward pass fails, e.g. out of memory
        label_names = production.classifier.label_names

        def predict_with_confidence(self, items):
            raise RuntimeError("out of memory")

    broken = ServedModel(version="candidate", run_id="broken", classifier=Broken())
    app = create_app(production, broken, TrafficSplit(0.0), log_dir=tmp_path, shadow=True)
    with BackgroundServer(app) as running:
        answer = httpx.post(f"{running.url}/predict", json={"texts": ["A sentence."]})
    assert answer.status_code == 200 and answer.json()[0]["run_id"] == "tiny_serve"
    assert [record["run_id"] for record in read_predictions(tmp_path)] == ["tiny_serve"]

    served_by_broken = create_app(production, broken, TrafficSplit(1.0), log_dir=tmp_path)
    with BackgroundServer(served_by_broken) as running:
        failed = httpx.post(f"{running.url}/predict", json={"texts": ["A sentence."]})
    assert failed.status_code == 500
    assert failed.json()["error"] == ("the candidate model failed on this request "
                                      "(RuntimeError: out of memory)")


def test_traffic_split_is_deterministic_and_close_to_its_share():
    split = TrafficSplit(0.3)
    keys = [item_key(f"article-{number}", None) for number in range(10_000)]
    routed = [split.version_for(key) for key in keys]
    assert routed == [split.version_for(key) for key in keys]
    assert 0.28 < routed.count("candidate") / len(keys) < 0.32
    assert {TrafficSplit(0.0).version_for(key) for key in keys} == {"production"}
    assert {TrafficSplit(1.0).version_for(key) for key in keys} == {"candidate"}
    with pytest.raises(ValueError, match="between 0 and 1"):
        TrafficSplit(1.5)


def test_concurrent_requests_share_forward_calls_and_errors_reach_every_waiter():
    calls = []

    def predict(items):
        calls.append(list(items))
        if "boom" in items:
            raise RuntimeError("model failed")
        return [{"echo": item} for item in items]

    async def scenario():
        batcher = MicroBatcher(predict, max_batch=64, max_wait_ms=20)
        await batcher.start()
        answers = await asyncio.gather(*(batcher.submit([f"s{n}", f"t{n}"]) for n in range(10)))
        failed = await asyncio.gather(batcher.submit(["boom"]), batcher.submit(["fine"]),
                                      return_exceptions=True)
        after = await batcher.submit(["later"])
        await batcher.stop()
        return answers, failed, after

    answers, failed, after = asyncio.run(scenario())
    assert answers == [[{"echo": f"s{n}"}, {"echo": f"t{n}"}] for n in range(10)]
    assert len(calls[0]) == 20  # ten requests, one forward call
    assert all(isinstance(result, RuntimeError) for result in failed)
    assert after == [{"echo": "later"}]


def test_requests_arriving_during_a_forward_pass_join_the_next_one_without_waiting():
    calls = []
    first_pass_running, first_pass_may_end = threading.Event(), threading.Event()

    def slow_predict(items):
        calls.append(len(items))
        if len(calls) == 1:  # the first forward pass lasts until the nine others are queued
            first_pass_running.set()
            first_pass_may_end.wait(timeout=60)
        return list(items)

    async def scenario():
        batcher = MicroBatcher(slow_predict, max_batch=64)  # max_wait_ms 0: never holds a batch
        await batcher.start()
        first = asyncio.create_task(batcher.submit(["alone"]))
        await asyncio.to_thread(first_pass_running.wait, 60)
        later = [asyncio.create_task(batcher.submit([n])) for n in range(9)]
        await asyncio.sleep(0)  # each submission runs up to its queued request
        first_pass_may_end.set()
        answers = await asyncio.gather(*later)
        await first
        await batcher.stop()
        return answers

    assert asyncio.run(scenario()) == [[n] for n in range(9)]
    assert calls == [1, 9]


def test_prediction_log_rotates_and_keeps_every_record_readable(tmp_path):
    log = PredictionLog(tmp_path, max_bytes=400, backups=2)
    for number in range(30):
        log.write([{"n": number, "padding": "x" * 40}])
    names = sorted(path.name for path in tmp_path.iterdir())
    assert names == ["predictions.1.jsonl", "predictions.2.jsonl", "predictions.jsonl"]
    kept = [record["n"] for record in read_predictions(tmp_path)]
    assert kept == list(range(30 - len(kept), 30))  # oldest dropped, order kept
    assert all(path.stat().st_size <= 400 for path in tmp_path.iterdir())


def test_serve_errors_are_plain_messages(runs_dir, tmp_path, capsys):
    common = ["--runs-dir", str(runs_dir), "--registry-dir", str(tmp_path / "registry"),
              "--log-dir", str(tmp_path / "log")]
    assert main(["serve", "production", *common]) == 1
    assert "no production model in" in capsys.readouterr().err
    assert main(["serve", "tiny_serve", "--runtime", "int8", *common]) == 1
    assert "run_experiment.py export" in capsys.readouterr().err
    assert main(["serve", "tiny_serve", "--candidate-share", "0.2", *common]) == 1
    assert "--candidate-share needs --candidate" in capsys.readouterr().err
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = str(taken.getsockname()[1])
        assert main(["serve", "tiny_serve", "--port", port, *common]) == 1
    assert f"cannot listen on 127.0.0.1:{port} (Address already in use)" in capsys.readouterr().err
    assert not (tmp_path / "log").exists()  # no session recorded for a server that never ran


@pytest.mark.slow
def test_serve_command_answers_over_http_and_stops_on_ctrl_c(runs_dir, tmp_path):
    port = free_port()
    log_dir = tmp_path / "log"
    process = subprocess.Popen(
        [sys.executable, str(REPO_ROOT / "run_experiment.py"), "serve", "tiny_serve",
         "--port", str(port), "--runs-dir", str(runs_dir), "--log-dir", str(log_dir),
         "--log-text", "--language-policy", "abstain"], env=cli_environment(),
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
        text=True)
    try:
        deadline = time.monotonic() + 120
        while True:
            try:
                if httpx.get(f"http://127.0.0.1:{port}/health").status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert process.poll() is None, process.stdout.read()
            assert time.monotonic() < deadline, "the server did not start"
            time.sleep(0.2)
        answer = httpx.post(f"http://127.0.0.1:{port}/predict", timeout=60,
                            json={"texts": [ARTICLE, GERMAN]}).json()
        assert answer[0]["id"] == "a-1" and answer[0]["run_id"] == "tiny_serve"
        assert answer[0]["language"] == "en" and answer[0]["label"] is not None
        assert answer[1]["status"] == "abstained" and answer[1]["label"] is None
        described = httpx.get(f"http://127.0.0.1:{port}/model").json()
        assert described["language_policy"] == "abstain"
        assert described["versions"]["production"]["languages"]["trained_on"] == ["en"]
    finally:
        process.send_signal(signal.SIGINT)
        output, _ = process.communicate(timeout=60)
    assert process.returncode == 0, output
    assert "Serving tiny_serve (production) on http://127.0.0.1" in output
    assert "language policy abstain, trained on en" in output
    assert read_predictions(log_dir)[0]["text"].startswith("Officials meet")
    session = read_sessions(log_dir)[0]
    assert session["versions"]["production"]["run_dir"] == str((runs_dir / "tiny_serve").resolve())


@pytest.mark.slow
def test_serving_the_int8_export_agrees_with_pytorch(runs_dir, production):
    from backend.ml.inference.commands import export_command

    int8_model = runs_dir / "tiny_serve" / "exports" / "model-int8.onnx"
    if not int8_model.is_file():
        # Its exit status flags the tiny model's int8 F1 drop; the files are written either way.
        export_command("tiny_serve", ["onnx", "int8"], runs_dir)
    assert int8_model.is_file() and (int8_model.parent / "model.onnx").is_file()
    exported = load_served_model("tiny_serve", "production", runs_dir, runs_dir / "registry",
                                 runtime="onnx")
    app = create_app(exported, log_dir=runs_dir.parent / "onnx-log")
    sentences = ["The senator's reckless scheme will ruin us.", "Officials met on Tuesday."]
    with BackgroundServer(app) as running:
        answers = httpx.post(f"{running.url}/predict", json={"texts": sentences}).json()
        described = httpx.get(f"{running.url}/model").json()["versions"]["production"]
    assert described["runtime"] == "onnx" and described["precision"] == "fp32"
    assert described["languages"]["trained_on"] == ["en"]  # languages.json travels along
    expected = production.classifier.predict_with_confidence(sentences)
    assert [a["label"] for a in answers] == [e["label"] for e in expected]
    assert [a["confidence"] for a in answers] == pytest.approx(
        [e["confidence"] for e in expected], abs=1e-3)


@pytest.mark.parametrize("route, body, where", [
    ("predict", b'{"texts": ["\\ud800 x"]}', "texts.0"),
    ("predict", b'{"texts": ["fine", {"id": "a", "text": "x \\udfff"}]}', "texts.1.Article.text"),
    ("feedback", b'{"text": "half \\ud83d", "label": "Biased"}', "text"),
])
def test_a_text_with_half_a_surrogate_pair_gets_a_422_and_the_connection_stays_usable(
        server, route, body, where):
    with httpx.Client(timeout=30) as client:
        response = client.post(f"{server.url}/{route}", content=body,
                               headers={"content-type": "application/json"})
        assert response.status_code == 422
        assert where in response.json()["error"]
        assert "unpaired UTF-16 surrogate" in response.json()["error"]
        # The same keep-alive connection answers the next request.
        assert client.post(f"{server.url}/predict", json={"texts": ["fine"]}).status_code == 200
    assert [record["status"] for record in read_predictions(server.log_dir)] == ["ok"]


# Any code point, lone surrogates included (JSON carries them as \\udXXX escapes).
ANY_TEXT = st.text(st.characters(exclude_categories=[]) | st.integers(0xD800, 0xDFFF).map(chr),
                   max_size=40)
JSON_VALUES = st.recursive(st.none() | st.booleans() | st.integers() | st.floats() | ANY_TEXT,
                           lambda inner: st.lists(inner, max_size=3)
                           | st.dictionaries(ANY_TEXT, inner, max_size=3), max_leaves=8)
ARTICLES = st.fixed_dictionaries({}, optional={"id": ANY_TEXT | st.integers(),
                                               "title": ANY_TEXT, "text": ANY_TEXT})
PREDICT_BODIES = st.fixed_dictionaries({"texts": st.lists(ANY_TEXT | ARTICLES, max_size=4)})
FEEDBACK_BODIES = st.fixed_dictionaries(
    {"label": ANY_TEXT | st.sampled_from(["Biased", "Non-biased", "biased"])},
    optional={"id": ANY_TEXT | st.integers(), "text": ANY_TEXT, "comment": ANY_TEXT,
              "source": ANY_TEXT | st.sampled_from(["reader", "editor"])})
# Well-formed bodies with odd texts, and anything JSON at all.
BODIES = PREDICT_BODIES | FEEDBACK_BODIES | st.dictionaries(ANY_TEXT, JSON_VALUES, max_size=4)


@given(route=st.sampled_from(["predict", "feedback"]), body=BODIES)
@settings(max_examples=60, deadline=None, database=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
def test_any_json_body_gets_an_answer_or_a_4xx_with_a_message_never_a_5xx(server, route, body):
    response = httpx.post(f"{server.url}/{route}", content=json.dumps(body).encode(),
                          headers={"content-type": "application/json"}, timeout=30)
    assert response.status_code < 500, response.text
    if response.status_code >= 400:
        assert response.json()["error"]
