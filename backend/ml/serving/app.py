"""The HTTP API: ``POST /predict``, ``POST /feedback``, ``GET /health``, ``GET /model``.

OpenAPI docs are at ``/docs``. Bad bodies get a 4xx whose ``error`` says what to fix; bodies
above the size limits get 413. Predictions of concurrent requests share forward passes
(:class:`MicroBatcher`); with a candidate, each input goes to the version its key selects
(:class:`TrafficSplit`) and every logged prediction names its version.

:class:`ServingApp` holds the served versions, the logs and the batchers, and its methods are
the routes; :func:`create_app` builds one and returns its FastAPI app.

>>> app = create_app(production, candidate, TrafficSplit(0.5),
...                  log_dir=Path("experiments/serving"))  # doctest: +SKIP
>>> uvicorn.run(app, host="127.0.0.1", port=8000)  # doctest: +SKIP
"""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any, Literal

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import AfterValidator, BaseModel, ConfigDict, Field

from ..data.labels import canonical_label
from ..languages import detect_language, is_supported, load_detector
from .batching import MicroBatcher
from .logs import FeedbackStore, PredictionLog, log_time
from .traffic import CANDIDATE, PRODUCTION, TrafficSplit, item_key


@dataclass
class ServedModel:
    """One loaded model version and what ``GET /model`` tells about it."""

    version: str  # production or candidate
    run_id: str
    # A loaded BiasClassifier, or anything with its label_names, calibration,
    # predict_with_confidence and, optionally, language_policy and language_record (an ONNX
    # export, a test double).
    classifier: Any
    runtime: str = "pytorch"
    metrics: dict = field(default_factory=dict)  # {"eval": {...}, "test": {...}} scalars
    registry_entry: dict | None = None  # promotion record when served from the registry

    def describe(self) -> dict:
        described = {"version": self.version, "run_id": self.run_id, "runtime": self.runtime,
                     # bf16 (close calls decided in fp32) or fp32; an export runs as exported
                     "precision": getattr(self.classifier, "precision", "fp32"),
                     "label_names": self.classifier.label_names,
                     "calibration": self.classifier.calibration, "metrics": self.metrics,
                     "languages": self.languages()}
        if self.registry_entry:
            described["promotion"] = {key: self.registry_entry.get(key) for key in
                                      ("promoted_at", "promoted_by", "reason")}
        return described

    def languages(self) -> dict:
        """The languages the model was trained on (None: not recorded) and the policy for
        inputs in others."""
        record = getattr(self.classifier, "language_record", None)
        return {"trained_on": record["languages"] if record else None,
                "training_shares": record["shares"] if record else None,
                "policy": getattr(self.classifier, "language_policy", "off")}


@dataclass(frozen=True)
class Limits:
    """Request size limits: whole body, inputs per request, characters per input."""

    max_body_bytes: int = 2_000_000
    max_texts: int = 256
    max_text_chars: int = 100_000


_SURROGATE = re.compile("[\ud800-\udfff]")


def _valid_unicode(text: str) -> str:
    """JSON's ``\\ud800`` escapes can carry half of a UTF-16 pair, which no encoder, tokenizer or
    log file can write: such a text is refused with where it is, instead of failing later."""
    surrogate = _SURROGATE.search(text)
    if surrogate:
        raise ValueError(f"unpaired UTF-16 surrogate U+{ord(surrogate.group()):04X} at character "
                         f"{surrogate.start()}; send valid Unicode text (a surrogate escape must "
                         f"be one of a high/low pair)")
    return text


# Every text field of a request body.
Text = Annotated[str, AfterValidator(_valid_unicode)]


class Article(BaseModel):
    """An article (or a sentence with an id): the id routes it and joins it with feedback."""

    model_config = ConfigDict(extra="forbid")
    id: Text | int | None = Field(None, description="article id; routes A/B traffic")
    title: Text | None = None
    text: Text | None = None


class PredictRequest(BaseModel):
    model_config = ConfigDict(extra="forbid", json_schema_extra={"example": {"texts": [
        "The senator's reckless scheme will ruin us.",
        {"id": "a-17", "text": "Officials met on Tuesday. They agreed."}]}})
    texts: list[Text | Article] = Field(..., min_length=1,
                                       description="sentences, or articles with id and text")


class FeedbackRequest(BaseModel):
    """A reader's or editor's label for a sentence (text) or an article (id, and text if known)."""

    model_config = ConfigDict(extra="forbid", json_schema_extra={"example": {
        "id": "a-17", "text": "Officials met on Tuesday.", "label": "Non-biased",
        "source": "editor"}})
    id: Text | int | None = None
    text: Text | None = Field(None, description="needed for retraining on this label")
    label: Text
    source: Literal["reader", "editor"] = "reader"
    comment: Text | None = Field(None, max_length=2000)


class BodySizeLimit:
    """ASGI middleware: 413 for a body above ``max_bytes``, declared or streamed."""

    def __init__(self, app, max_bytes: int):
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        declared = dict(scope.get("headers") or []).get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.max_bytes:
            return await self._reject(send)
        received, rejected = 0, False

        async def counted_receive():
            nonlocal received, rejected
            message = await receive()
            received += len(message.get("body", b""))
            if received > self.max_bytes and not rejected:
                # Answer now; the app sees a client that went away and its answer is dropped.
                rejected = True
                await self._reject(send)
                return {"type": "http.disconnect"}
            return message

        async def guarded_send(message):
            if not rejected:
                await send(message)

        await self.app(scope, counted_receive, guarded_send)

    async def _reject(self, send):
        response = _error(413, f"request body above {self.max_bytes} bytes; send fewer or "
                               "shorter texts per request")
        await response({"type": "http"}, _disconnected, send)


async def _disconnected() -> dict:
    # The body was already refused: a response reading on sees the client gone.
    return {"type": "http.disconnect"}


def _error(status: int, message: str, **extra) -> JSONResponse:
    return JSONResponse({"error": message, **extra}, status_code=status)


def _validation_problems(error: RequestValidationError) -> list[str]:
    problems = []
    for item in error.errors():
        where = ".".join(str(part) for part in item.get("loc", ()) if part != "body")
        if item.get("type") == "json_invalid":
            problems.append(f"the body is not valid JSON ({item.get('ctx', {}).get('error', '')})")
            continue
        problems.append(f"{where or 'body'}: {item.get('msg')}")
    return problems


def _text_of(item) -> str:
    if isinstance(item, str):
        return item
    return " ".join(part for part in (item.get("title"), item.get("text")) if part)


class ServingApp:
    """The API's state (served versions, traffic split, logs, batchers) with one method per route.

    ``shadow``: the version an input is not routed to classifies it too, logged only, so the
    monitor can measure agreement between versions on the same traffic.
    """

    def __init__(self, production: ServedModel, candidate: ServedModel | None = None,
                 split: TrafficSplit | None = None,
                 log_dir: Path = Path("experiments/serving"), log_text: bool = False,
                 shadow: bool = False, limits: Limits | None = None, max_batch: int = 64,
                 max_wait_ms: float = 0.0, log_max_bytes: int = 50_000_000,
                 log_backups: int = 10):
        self.models = {PRODUCTION: production, **({CANDIDATE: candidate} if candidate else {})}
        self.has_candidate = candidate is not None
        self.split = split or TrafficSplit()
        self.log_text = log_text
        self.shadow = shadow and self.has_candidate
        self.limits = limits or Limits()
        self.max_batch, self.max_wait_ms = max_batch, max_wait_ms
        self.prediction_log = PredictionLog(log_dir, log_max_bytes, log_backups)
        self.feedback_store = FeedbackStore(log_dir)
        self.label_names = production.classifier.label_names
        self.batchers: dict[str, MicroBatcher] = {}  # per version, while the app runs

    def build(self) -> FastAPI:
        """The FastAPI app with this object's routes, error handler and body size limit."""
        app = FastAPI(title="Media-bias classifier", lifespan=self.lifespan,
                      description="Sentence and article bias labels with calibrated "
                                  "confidence.")
        app.add_middleware(BodySizeLimit, max_bytes=self.limits.max_body_bytes)
        app.exception_handler(RequestValidationError)(self.invalid_body)
        app.get("/health")(self.health)
        app.get("/model")(self.model_info)
        app.post("/predict")(self.predict)
        app.post("/feedback", status_code=201)(self.feedback)
        return app

    @asynccontextmanager
    async def lifespan(self, _app: FastAPI) -> AsyncIterator[None]:
        """Load the language detector, then start one batcher per version for the app's life."""
        await asyncio.to_thread(load_detector)  # else the first request would wait for it
        for name, model in self.models.items():
            self.batchers[name] = MicroBatcher(model.classifier.predict_with_confidence,
                                               self.max_batch, self.max_wait_ms)
            await self.batchers[name].start()
        yield
        for batcher in self.batchers.values():
            await batcher.stop()

    async def invalid_body(self, _request: Request, error: RequestValidationError
                           ) -> JSONResponse:
        problems = _validation_problems(error)
        return _error(422, "; ".join(problems), problems=problems)

    async def health(self) -> dict:
        """Liveness: the versions served and how many batched forward calls each has made."""
        return {"status": "ok",
                "versions": {name: model.run_id for name, model in self.models.items()},
                "batches": {name: {"calls": batcher.batches_run, "inputs": batcher.items_run}
                            for name, batcher in self.batchers.items()}}

    async def model_info(self) -> dict:
        """Run id, metrics, label names and calibration of each version; the traffic split."""
        return {"candidate_share": self.split.candidate_share if self.has_candidate else 0.0,
                "shadow": self.shadow,
                "language_policy": self.models[PRODUCTION].languages()["policy"],
                "versions": {name: model.describe() for name, model in self.models.items()}}

    async def predict(self, body: PredictRequest):
        """One result per input, as ``BiasClassifier.predict_with_confidence``, plus its version."""
        started = time.perf_counter()
        items = [text if isinstance(text, str) else text.model_dump(exclude_none=True)
                 for text in body.texts]
        too_large = _size_problem(items, self.limits)
        if too_large:
            return _error(413, too_large)
        keys = [item_key(None if isinstance(item, str) else item.get("id"), _text_of(item))
                for item in items]
        routed = [self.split.version_for(key) if self.has_candidate else PRODUCTION
                  for key in keys]
        runs = {name: [i for i, version in enumerate(routed) if version == name or self.shadow]
                for name in self.models}
        answers = await asyncio.gather(*(self.batchers[name].submit([items[i] for i in indices])
                                         for name, indices in runs.items()),
                                       return_exceptions=True)
        latency_ms = (time.perf_counter() - started) * 1000
        results: list[dict | None] = [None] * len(items)
        records = []
        for (name, indices), answer in zip(runs.items(), answers):
            if isinstance(answer, BaseException):
                if any(routed[index] == name for index in indices):
                    return _error(500, f"the {name} model failed on this request "
                                       f"({type(answer).__name__}: {answer})")
                continue  # a failing shadow version never costs a reader the answer
            for index, result in zip(indices, answer):
                labelled = {**result, "version": name, "run_id": self.models[name].run_id}
                if routed[index] == name:
                    results[index] = labelled
                records.append(_log_record(labelled, keys[index], items[index], latency_ms,
                                           routed[index] == name, self.log_text))
        self.prediction_log.write(records)
        return results

    async def feedback(self, body: FeedbackRequest):
        """Store a label for a sentence or an article; ``retrain`` learns from those with text.

        With a text, the answer also says its language and whether production was trained on
        it: ``retrain`` leaves a label in another language out unless asked.
        """
        label = canonical_label(body.label)
        if label not in self.label_names:
            return _error(422, f"label: {body.label!r} is not one of "
                               f"{', '.join(self.label_names)}")
        if body.id is None and not (body.text or "").strip():
            return _error(422, "give the article 'id' or the sentence 'text' the label is for")
        stored = self.feedback_store.add({"key": item_key(body.id, body.text), "id": body.id,
                                          "text": body.text, "label": label,
                                          "source": body.source, "comment": body.comment})
        answer = {"status": "stored", "key": stored["key"], "received_at": stored["received_at"]}
        if (body.text or "").strip():
            detection = detect_language(body.text or "")
            trained_on = self.models[PRODUCTION].languages()["trained_on"]
            answer.update(detection.fields(),
                          supported_language=is_supported(detection, trained_on))
        return answer


def create_app(production: ServedModel, candidate: ServedModel | None = None,
               split: TrafficSplit | None = None, log_dir: Path = Path("experiments/serving"),
               log_text: bool = False, shadow: bool = False, limits: Limits | None = None,
               max_batch: int = 64, max_wait_ms: float = 0.0,
               log_max_bytes: int = 50_000_000, log_backups: int = 10) -> FastAPI:
    """The FastAPI app serving ``production`` (and ``candidate`` for ``split``'s share; without
    a split, none). See :class:`ServingApp` for ``shadow``."""
    return ServingApp(production, candidate, split, log_dir, log_text, shadow, limits,
                      max_batch, max_wait_ms, log_max_bytes, log_backups).build()


def _size_problem(items: list, limits: Limits) -> str | None:
    """Why a request is too large to serve, or None."""
    if len(items) > limits.max_texts:
        return (f"texts: {len(items)} inputs, at most {limits.max_texts} per request; split "
                "the request")
    for index, item in enumerate(items):
        if len(_text_of(item)) > limits.max_text_chars:
            return (f"texts.{index}: {len(_text_of(item))} characters, at most "
                    f"{limits.max_text_chars}; send the article in parts")
    return None


def _log_record(result: dict, key: str, item, latency_ms: float, served: bool,
                log_text: bool) -> dict:
    text = _text_of(item)
    record = {"time": log_time(), "version": result["version"], "run_id": result["run_id"],
              "served": served, "key": key, "id": result.get("id"), "status": result["status"],
              "label": result.get("label"), "confidence": result.get("confidence"),
              "probabilities": result.get("probabilities"),
              "num_sentences": result.get("num_sentences"),
              "num_words": len(text.split()), "language": result.get("language"),
              "language_confidence": result.get("language_confidence"),
              "supported_language": result.get("supported_language"),
              "latency_ms": round(latency_ms, 3)}
    if log_text:
        record["text"] = text
    return record

