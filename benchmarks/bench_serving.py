"""Requests per second and p50 / p99 latency of the HTTP server versus BiasClassifier in-process.

    python benchmarks/bench_serving.py                      # MiniLM + 3-class head, 200 requests
    python benchmarks/bench_serving.py --model experiments/runs/RUN --concurrency 1 8 32

The server is started as a user starts it (``run_experiment.py serve MODEL`` in its own process)
and receives one sentence per request from ``--concurrency`` clients at a time, as a news app
would send them. The baseline calls ``predict_with_confidence([sentence])`` on the same model in
this process from as many threads. Both use the same CPU thread count, are warmed up first, and
classify the same sentences; the ratio server / in-process is the cost (or, with micro-batching
under concurrency, the gain) of going through HTTP.

Then the cost of detecting each input's language: its time per sentence against the server's
p50 latency for one client, and in-process requests/s (one client) with and without it.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT))

from bench_inference import benchmark_sentences, minilm_classifier_dir  # noqa: E402

from backend.ml.bias_classifier import BiasClassifier  # noqa: E402
from backend.ml.inference import classifier as classifier_module  # noqa: E402
from backend.ml.inference.loading import configure_threads  # noqa: E402
from backend.ml.languages import UNDETERMINED, Detection, detect_language  # noqa: E402
from backend.ml.serving.server import free_port  # noqa: E402


def summary(latencies: list[float], seconds: float) -> dict:
    milliseconds = np.array(latencies) * 1000
    return {"requests_per_second": len(latencies) / seconds,
            "p50_ms": float(np.percentile(milliseconds, 50)),
            "p99_ms": float(np.percentile(milliseconds, 99))}


def time_in_process(classifier: BiasClassifier, texts: list[str], concurrency: int) -> dict:
    def call(text):
        started = time.perf_counter()
        classifier.predict_with_confidence([text])
        return time.perf_counter() - started

    with ThreadPoolExecutor(concurrency) as pool:
        started = time.perf_counter()
        latencies = list(pool.map(call, texts))
        return summary(latencies, time.perf_counter() - started)


async def _load(url: str, texts: list[str], concurrency: int) -> tuple[list[float], float]:
    import httpx

    queue = list(reversed(texts))
    latencies: list[float] = []
    async with httpx.AsyncClient(base_url=url, timeout=120,
                                 limits=httpx.Limits(max_connections=concurrency)) as client:
        async def worker():
            while queue:
                text = queue.pop()
                started = time.perf_counter()
                response = await client.post("/predict", json={"texts": [text]})
                response.raise_for_status()
                latencies.append(time.perf_counter() - started)

        started = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        return latencies, time.perf_counter() - started


def time_server(url: str, texts: list[str], concurrency: int) -> dict:
    latencies, seconds = asyncio.run(_load(url, texts, concurrency))
    return summary(latencies, seconds)


def detection_cost(classifier: BiasClassifier, texts: list[str], server_p50_ms: float) -> dict:
    """Language detection's time per sentence, and in-process requests/s with and without it
    (detection swapped for a constant, alternating three times to even out the machine's
    noise; the best of each is kept)."""
    started = time.perf_counter()
    for text in texts:
        detect_language(text)
    per_sentence_ms = (time.perf_counter() - started) * 1000 / len(texts)
    with_detection, without_detection = [], []
    for _ in range(3):
        with_detection.append(time_in_process(classifier, texts, 1)["requests_per_second"])
        classifier_module.detect_language = lambda text: Detection(UNDETERMINED, 0.0)
        try:
            without_detection.append(
                time_in_process(classifier, texts, 1)["requests_per_second"])
        finally:
            classifier_module.detect_language = detect_language
    return {"ms_per_sentence": per_sentence_ms,
            "share_of_server_p50": per_sentence_ms / server_p50_ms,
            "in_process_rps_with": max(with_detection),
            "in_process_rps_without": max(without_detection),
            "in_process_slowdown": 1 - max(with_detection) / max(without_detection)}


def start_server(model: Path, threads: int, log_dir: Path) -> tuple[subprocess.Popen, str]:
    import httpx

    port = free_port()
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "HF_HUB_OFFLINE": "1",
           "TOKENIZERS_PARALLELISM": "false", "PYTHONPATH": str(REPO_ROOT)}
    process = subprocess.Popen([sys.executable, str(REPO_ROOT / "run_experiment.py"), "serve",
                                str(model), "--port", str(port), "--log-dir", str(log_dir)],
                               env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                               text=True)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise SystemExit(f"the server exited: {process.communicate()[1]}")
        try:
            if httpx.get(f"{url}/health").status_code == 200:
                return process, url
        except httpx.TransportError:
            time.sleep(0.2)
    process.kill()
    raise SystemExit("the server did not start within 180 s")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", type=Path, help="a run or model dir (default: MiniLM + head)")
    parser.add_argument("--requests", type=int, default=200, help="requests per level")
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 4, 16])
    parser.add_argument("--threads", type=int, help="CPU threads for both paths (default: auto)")
    parser.add_argument("--json", type=Path, help="also write the numbers to this file")
    args = parser.parse_args(argv)

    from transformers.utils import logging as transformers_logging
    transformers_logging.set_verbosity_error()
    threads = configure_threads(args.threads)
    texts, source = benchmark_sentences(args.requests)
    report = {"requests": len(texts), "source": source, "threads": threads, "levels": {}}
    with tempfile.TemporaryDirectory() as scratch:
        model = args.model or minilm_classifier_dir(Path(scratch) / "model")
        classifier = BiasClassifier(num_threads=threads).load_model(model)
        process, url = start_server(model, threads, Path(scratch) / "serving")
        try:
            # Warm-up on every sentence: the first forward pass of each new input shape is
            # several times slower (kernel selection), and both paths must be past it.
            time_server(url, texts, max(args.concurrency))
            time_in_process(classifier, texts, max(args.concurrency))
            print(f"model: {args.model or 'MiniLM-L6 + seeded 3-class head'}; {len(texts)} "
                  f"one-sentence requests per level ({source}); {threads} thread(s)\n")
            print(f"{'clients':>7}  {'path':<11}{'req/s':>9}{'p50 ms':>9}{'p99 ms':>9}"
                  f"{'server/in-process req/s':>26}")
            for concurrency in args.concurrency:
                local = time_in_process(classifier, texts, concurrency)
                served = time_server(url, texts, concurrency)
                ratio = served["requests_per_second"] / local["requests_per_second"]
                report["levels"][concurrency] = {"in_process": local, "server": served,
                                                 "throughput_ratio": ratio}
                for name, numbers in (("in-process", local), ("server", served)):
                    shown = f"{ratio:>25.2f}x" if name == "server" else ""
                    print(f"{concurrency:>7}  {name:<11}{numbers['requests_per_second']:>9.1f}"
                          f"{numbers['p50_ms']:>9.1f}{numbers['p99_ms']:>9.1f}{shown}")
            first = report["levels"][args.concurrency[0]]["server"]
            cost = detection_cost(classifier, texts, first["p50_ms"])
            report["language_detection"] = cost
            print(f"\nlanguage detection: {cost['ms_per_sentence']:.3f} ms per sentence, "
                  f"{cost['share_of_server_p50']:.1%} of the server's p50 at "
                  f"{args.concurrency[0]} client(s); in process, one client: "
                  f"{cost['in_process_rps_with']:.1f} req/s with it, "
                  f"{cost['in_process_rps_without']:.1f} without "
                  f"({cost['in_process_slowdown']:+.1%} slower)")
        finally:
            process.send_signal(signal.SIGINT)
            process.wait(timeout=60)
    if args.json:
        args.json.write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
