"""Language detectors on short news sentences: accuracy, time per sentence, load time, memory.

    python benchmarks/bench_language_detection.py                 # the detectors installed
    python benchmarks/bench_language_detection.py --babe final_labels_SG2_dev.csv  # BABE en share

Each detector runs in its own process (load time and memory are its own) on the 120 de/fr/it/en
news sentences of the tests (30 per language, most of 5-15 words) and, with ``--babe``, on
BABE's English sentences, where a detector should answer English (or, for py3langid below
its confidence floor, ``und``, which is never flagged). py3langid is the project's
detector; lingua-language-detector (``lingua``, all languages and its low-accuracy mode) and
pycld2 are measured when installed (``pip install lingua-language-detector pycld2``).
"""

from __future__ import annotations

import argparse
import csv
import json
import resource
import subprocess
import sys
import time
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
DETECTORS = ("py3langid", "lingua", "lingua-low-accuracy", "pycld2")


def _detector(name: str):
    """A function text -> ISO 639-1 code, or None when the detector is not installed."""
    try:
        if name == "py3langid":
            from backend.ml.languages import detect_language
            return lambda text: detect_language(text).code
        if name.startswith("lingua"):
            from lingua import LanguageDetectorBuilder
            builder = LanguageDetectorBuilder.from_all_languages()
            if name == "lingua-low-accuracy":
                builder = builder.with_low_accuracy_mode()
            detector = builder.build()

            def lingua_code(text: str) -> str:
                language = detector.detect_language_of(text)
                return language.iso_code_639_1.name.lower() if language else "und"
            return lingua_code
        import pycld2

        return lambda text: pycld2.detect(text)[2][0][1]
    except ImportError:
        return None


def measure(name: str, babe: Path | None) -> dict:
    """One detector's numbers; run in a fresh process by :func:`main`."""
    sys.path.insert(0, str(REPO_ROOT / "tests"))
    from support.multilingual_news import NEWS_BY_LANGUAGE

    started = time.perf_counter()
    detect = _detector(name)
    if detect is None:
        return {"detector": name, "installed": False}
    detect("A first sentence loads the model.")
    load_seconds = time.perf_counter() - started
    sentences = [(code, text) for code, texts in NEWS_BY_LANGUAGE.items() for text in texts]
    wrong = [f"{code}->{detect(text)}: {text}" for code, text in sentences
             if detect(text) != code]
    report = {"detector": name, "installed": True, "correct": len(sentences) - len(wrong),
              "sentences": len(sentences), "wrong": wrong, "load_seconds": load_seconds}
    english = []
    if babe is not None:
        with open(babe, encoding="utf-8-sig", newline="") as stream:
            english = [row["text"] for row in csv.DictReader(stream, delimiter=";")
                       if (row.get("text") or "").strip()]
    timed = english or [text for _, text in sentences] * 10
    started = time.perf_counter()
    codes = [detect(text) for text in timed]
    report["ms_per_sentence"] = (time.perf_counter() - started) * 1000 / len(timed)
    if english:
        report["babe_english_share"] = codes.count("en") / len(codes)
        # What a model trained on English would flag: a confident answer of another language.
        report["babe_other_share"] = sum(code not in ("en", "und", "un") for code in codes
                                         ) / len(codes)
        report["babe_sentences"] = len(codes)
    report["peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return report


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--babe", type=Path, help="a BABE .csv: share of its sentences "
                        "detected as English, and the timing corpus")
    parser.add_argument("--only", nargs="+", choices=DETECTORS, default=list(DETECTORS))
    parser.add_argument("--measure", choices=DETECTORS, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.measure:  # the child process of one detector
        print(json.dumps(measure(args.measure, args.babe)))
        return 0
    print(f"{'detector':<22}{'right':>9}{'ms/sentence':>13}{'load s':>8}{'peak MB':>9}"
          f"{'BABE en':>9}{'BABE other':>12}")
    for name in args.only:
        command = [sys.executable, __file__, "--measure", name]
        if args.babe:
            command += ["--babe", str(args.babe)]
        report = json.loads(subprocess.run(command, capture_output=True, text=True, check=True,
                                           cwd=REPO_ROOT).stdout)
        if not report["installed"]:
            print(f"{name:<22}not installed")
            continue
        babe_share, babe_other = ((f"{report['babe_english_share']:.2%}",
                                   f"{report['babe_other_share']:.2%}")
                                  if "babe_english_share" in report else ("-", "-"))
        print(f"{name:<22}{report['correct']:>4}/{report['sentences']:<4}"
              f"{report['ms_per_sentence']:>13.3f}{report['load_seconds']:>8.2f}"
              f"{report['peak_rss_mb']:>9.0f}{babe_share:>9}{babe_other:>12}")
        for line in report["wrong"]:
            print(f"    {line}")
    return 0


if __name__ == "__main__":
    sys.path.insert(0, str(REPO_ROOT))
    sys.exit(main())
