"""Loading the versions to serve and running the app: ``serve`` and an in-process server.

>>> with BackgroundServer(app, port=0) as server:   # doctest: +SKIP
...     httpx.post(f"{server.url}/predict", json={"texts": ["A sentence."]})
"""

from __future__ import annotations

import logging
import socket
import threading
import time
from pathlib import Path

from ..errors import LAUNCHER, UserError
from ..inference.loading import (
    ONNX_FILE,
    ONNX_INT8_FILE,
    resolve_model_path,
    run_dir_of,
)
from ..languages import DEFAULT_LANGUAGE_POLICY
from ..metrics import numeric_items
from ..registry import STAGES, ModelRegistry
from ..run_directory import RunLayout, read_results
from .app import Limits, ServedModel, create_app
from .logs import record_session
from .traffic import CANDIDATE, PRODUCTION, TrafficSplit

logger = logging.getLogger(__name__)

RUNTIMES = {"pytorch": None, "onnx": ONNX_FILE, "int8": ONNX_INT8_FILE}


def _scalar_metrics(run_dir: Path | None) -> dict:
    if run_dir is None or not RunLayout(run_dir).results.is_file():
        return {}
    results = read_results(run_dir)
    return {split: numeric_items(results.get(split, {})) for split in ("eval", "test")}


def load_served_model(reference: str, version: str, runs_dir: Path, registry_dir: Path,
                      runtime: str = "pytorch", batch_size: int = 32,
                      language_policy: str = DEFAULT_LANGUAGE_POLICY) -> ServedModel:
    """Load ``reference`` (a stage, run id, run or model directory) as ``version``.

    ``runtime`` onnx / int8 serves the run's ``export`` files instead of the PyTorch weights;
    ``language_policy`` is what happens to inputs in languages the model was not trained on.
    """
    from ..inference import BiasClassifier

    if runtime not in RUNTIMES:
        raise UserError(f"unknown runtime {runtime!r}; choose {', '.join(RUNTIMES)}")
    entry = None
    if reference in STAGES and not Path(reference).exists():
        registry = ModelRegistry(registry_dir)
        entry = registry.entry(reference)
        model_path = RunLayout(registry.run_dir(reference)).final_model
    else:
        model_path = resolve_model_path(reference, runs_dir)
    run_dir = run_dir_of(model_path)
    export_name = RUNTIMES[runtime]
    if export_name:
        export = RunLayout(run_dir or model_path).exports / export_name
        if not export.is_file():
            raise UserError(f"{export} does not exist: export the model first with "
                            f"{LAUNCHER} export {run_dir or model_path}")
        model_path = export
    classifier = BiasClassifier(batch_size=batch_size,
                                language_policy=language_policy).load_model(model_path)
    return ServedModel(version=version, run_id=(run_dir or model_path).name,
                       classifier=classifier, runtime=runtime,
                       metrics=_scalar_metrics(run_dir), registry_entry=entry)


def run_dir_for(model: ServedModel, reference: str, runs_dir: Path, registry_dir: Path) -> str:
    if model.registry_entry:
        return model.registry_entry["run_dir"]
    run_dir = run_dir_of(resolve_model_path(reference, runs_dir))
    return str(run_dir.resolve()) if run_dir else ""


def serve_command(args, runs_dir: Path) -> int:
    """``serve MODEL [--candidate MODEL --candidate-share 0.5] --host --port``."""
    import uvicorn

    if args.candidate_share is not None and not args.candidate:
        raise UserError("--candidate-share needs --candidate MODEL (e.g. --candidate candidate)")
    share = 0.5 if args.candidate_share is None else args.candidate_share
    if not 0.0 <= share <= 1.0:
        raise UserError(f"--candidate-share must be between 0 and 1, got {share}")
    _check_port(args.host, args.port)  # before minutes of model loading, not after
    references = {PRODUCTION: args.model, **({CANDIDATE: args.candidate} if args.candidate else {})}
    models = {version: load_served_model(reference, version, runs_dir, args.registry_dir,
                                         args.runtime, language_policy=args.language_policy)
              for version, reference in references.items()}
    record_session(args.log_dir, {
        "candidate_share": share if args.candidate else 0.0, "runtime": args.runtime,
        "language_policy": args.language_policy,
        "versions": {version: {"run_id": model.run_id,
                               "run_dir": run_dir_for(model, references[version], runs_dir,
                                                      args.registry_dir)}
                     for version, model in models.items()}})
    app = create_app(models[PRODUCTION], models.get(CANDIDATE), TrafficSplit(share),
                     log_dir=args.log_dir, log_text=args.log_text, shadow=args.shadow,
                     limits=Limits(max_texts=args.max_texts), max_wait_ms=args.batch_wait_ms)
    split = (f" and {models[CANDIDATE].run_id} (candidate, {share:.0%} of traffic)"
             if args.candidate else "")
    logger.info("Serving %s (production)%s on http://%s:%s  (API docs: /docs; predictions "
                "logged to %s; language policy %s, trained on %s)", models[PRODUCTION].run_id,
                split, args.host, args.port, args.log_dir, args.language_policy,
                ", ".join(models[PRODUCTION].languages()["trained_on"] or ["not recorded"]))
    uvicorn.run(app, host=args.host, port=args.port, log_level="warning")
    return 0


def _check_port(host: str, port: int) -> None:
    with socket.socket() as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as uvicorn binds
        try:
            probe.bind((host, port))
        except OSError as error:
            raise UserError(f"cannot listen on {host}:{port} ({error.strerror}); choose another "
                            "--port or stop what uses it") from None


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as probe:
        probe.bind((host, 0))
        return probe.getsockname()[1]


class BackgroundServer:
    """Runs an ASGI app with uvicorn in a thread of this process (tests, benchmarks, notebooks)."""

    def __init__(self, app, host: str = "127.0.0.1", port: int = 0):
        import uvicorn

        self.host = host
        self.port = port or free_port(host)
        self.server = uvicorn.Server(uvicorn.Config(app, host=host, port=self.port,
                                                    log_level="warning"))
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def __enter__(self) -> BackgroundServer:
        self.thread.start()
        deadline = time.monotonic() + 30
        while not self.server.started:
            if not self.thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError(f"the server did not start on {self.url}")
            time.sleep(0.02)
        return self

    def __exit__(self, *exc) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=30)
