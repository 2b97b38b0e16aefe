"""The production subcommands: ``serve``, ``promote``, ``registry``, ``retrain`` (``monitor``,
which reads what serving logs, is :mod:`backend.ml.monitoring`'s).

``python run_experiment.py serve production --candidate candidate --candidate-share 0.5`` etc.;
``add_production_subcommands`` adds them to the CLI's parser, each with its handler.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from ..languages import add_language_policy_argument
from ..registry import DEFAULT_REGISTRY_DIR
from ..run_directory import DEFAULT_RUNS_DIR
from .logs import DEFAULT_LOG_DIR


def _common(parser: argparse.ArgumentParser, log_dir: bool = False) -> None:
    parser.add_argument("--runs-dir", type=Path, default=DEFAULT_RUNS_DIR,
                        help="where run ids are looked up (default: experiments/runs)")
    parser.add_argument("--registry-dir", type=Path, default=DEFAULT_REGISTRY_DIR,
                        help="the model registry (default: experiments/registry)")
    if log_dir:
        parser.add_argument("--log-dir", type=Path, default=DEFAULT_LOG_DIR,
                            help="prediction log and feedback (default: experiments/serving)")


def add_production_subcommands(sub) -> None:
    """Add serve, promote, registry and retrain to ``sub`` (``add_subparsers()``'s)."""
    _add_serve(sub)
    _add_promote(sub)
    registry = sub.add_parser("registry", help="current stages and promotion history")
    registry.set_defaults(handler=_registry)
    _common(registry)
    _add_retrain(sub)


def _add_serve(sub) -> None:
    serve = sub.add_parser("serve", help="HTTP API for a model (and an A/B candidate)")
    serve.set_defaults(handler=_serve)
    serve.add_argument("model", metavar="RUN_OR_MODEL",
                       help="production, candidate, a run id, a run or model directory")
    serve.add_argument("--candidate", metavar="RUN_OR_MODEL",
                       help="a second version that answers --candidate-share of the traffic")
    serve.add_argument("--candidate-share", type=float, metavar="SHARE",
                       help="share of article ids routed to the candidate (default 0.5)")
    serve.add_argument("--shadow", action="store_true",
                       help="each version also classifies the other's traffic (logged only) so "
                       "that the monitor can measure their agreement")
    serve.add_argument("--host", default="127.0.0.1")
    serve.add_argument("--port", type=int, default=8000)
    serve.add_argument("--runtime", default="pytorch", choices=("pytorch", "onnx", "int8"),
                       help="onnx / int8 serve the run's `export` files")
    serve.add_argument("--log-text", action="store_true",
                       help="keep input texts in the prediction log (off: lengths and hashes only)")
    serve.add_argument("--max-texts", type=int, default=256, help="inputs per request at most")
    serve.add_argument("--batch-wait-ms", type=float, default=0.0,
                       help="hold a batch open this long for more requests (default 0: batch "
                       "only what arrived while the previous forward pass ran)")
    add_language_policy_argument(serve)
    _common(serve, log_dir=True)


def _add_promote(sub) -> None:
    promote = sub.add_parser("promote", help="make a run the production or candidate model")
    promote.set_defaults(handler=_promote)
    promote.add_argument("run", metavar="RUN", help="run id or run directory")
    promote.add_argument("--as", dest="stage", required=True, choices=("production", "candidate"))
    promote.add_argument("--reason", default="", help="why, kept in the history")
    promote.add_argument("--require-better", action="store_true",
                         help="refuse unless the run beats production on production's test "
                         "split (paired bootstrap p < --alpha)")
    promote.add_argument("--metric", default="f1_macro",
                         help="metric of the comparison (default f1_macro)")
    promote.add_argument("--alpha", type=float, default=0.05)
    _common(promote)


def _add_retrain(sub) -> None:
    retrain = sub.add_parser("retrain", help="new run from a run's config plus feedback; "
                             "registered as candidate")
    retrain.set_defaults(handler=_retrain)
    retrain.add_argument("base", metavar="RUN", nargs="?", default="production",
                         help="the run whose config and data to start from (default production)")
    retrain.add_argument("--data", type=Path, nargs="*", default=[], metavar="FILE",
                         help="new labelled BABE-format files (.csv / .xlsx: text, label_bias)")
    retrain.add_argument("--feedback", type=Path, metavar="FILE",
                         help="feedback.jsonl to learn from (default: the log dir's)")
    retrain.add_argument("--output-dir", type=Path, help="where the new run goes (default: "
                         "--runs-dir)")
    retrain.add_argument("--run-id", help="name of the new run directory")
    retrain.add_argument("--no-register", action="store_true",
                         help="do not register the new run as the candidate")
    retrain.add_argument("--metric", default="f1_macro")
    retrain.add_argument("--include-languages", metavar="CODES", default="",
                         help="learn from feedback in these languages too (ISO 639-1, e.g. "
                         "de,fr); needs a multilingual encoder in the run's config. Without it, "
                         "rows in languages production was not trained on are left out")
    _common(retrain, log_dir=True)


# Handlers: each runs one subcommand; UserErrors propagate to the CLI's handler.

def _serve(args) -> int:
    from .server import serve_command
    return serve_command(args, args.runs_dir)


def _promote(args) -> int:
    from ..registry.commands import promote_command
    return promote_command(args.run, args.stage, args.runs_dir, args.registry_dir, args.reason,
                           args.require_better, args.metric, args.alpha)


def _registry(args) -> int:
    from ..registry.commands import registry_command
    return registry_command(args.registry_dir)


def _retrain(args) -> int:
    from ..languages import parse_language_codes
    from ..registry import describe_comparison
    from .retrain import describe_left_out, retrain
    include = (parse_language_codes(args.include_languages, "--include-languages")
               if args.include_languages else [])
    retrained = retrain(args.base, args.runs_dir, args.registry_dir, args.log_dir, args.data,
                        args.feedback, args.output_dir, args.run_id,
                        register=not args.no_register, metric=args.metric,
                        include_languages=include)
    left_out = describe_left_out(retrained["languages"])
    if left_out:
        print(left_out)
    print(describe_comparison(retrained["comparison"]))
    if not args.no_register:
        name = retrained["run_dir"].name
        print(f"{name} is registered as the candidate; serve it beside production with "
              f"`serve production --candidate candidate`, or promote it with `promote {name} "
              f"--as production --require-better`.")
    return 0
