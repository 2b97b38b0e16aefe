"""Run the CLI in this process and SIGKILL it at a named point of the training code.

``python tests/support/kill_at.py POINT[@N][:SIGNAL] run_experiment.py ARGS...``: the process is
sent a real SIGKILL (or SIGNAL, e.g. ``TERM``) at POINT's Nth call (its first without ``@N``), so
a test of what a crash or a stop request leaves behind needs no race against the clock (polling
the run directory for the right moment). A signal the process handles lets the call go on.
"""

from __future__ import annotations

import importlib
import os
import runpy
import signal
import sys

# Point name -> (module, attribute path) of the function whose first call is the moment to die.
KILL_POINTS = {
    # Mid-checkpoint: the model and training state are in the staging directory, the manifest
    # that vouches for them is not.
    "checkpoint-manifest": ("backend.ml.training.checkpoints", "write_manifest"),
    # The first evaluation of the run (an epoch's end, when no eval_steps are set).
    "evaluation": ("backend.ml.training.trainer", "Trainer._evaluate"),
    # An optimiser step, before it is applied (fine-tuning and pre-training alike).
    "optimizer-step": ("backend.ml.training.trainer", "Trainer._optimizer_step"),
    # A batch of a distilled run's teacher pass, before training begins.
    "teacher-batch": ("backend.ml.distillation", "model_logits"),
    # A run's model being built, before its run directory is (each fold's, under CV).
    "model-creation": ("backend.ml.model_factory", "ModelFactory.create"),
}


def _die_at_call(number: int, original, sent: signal.Signals = signal.SIGKILL):
    calls = 0

    def maybe_die(*args, **kwargs):
        nonlocal calls
        calls += 1
        if calls == number:
            sys.stdout.flush()
            sys.stderr.flush()
            os.kill(os.getpid(), sent)
        return original(*args, **kwargs)

    return maybe_die


def main() -> None:
    point, script, *args = sys.argv[1:]
    point, _, sent = point.partition(":")
    point, _, number = point.partition("@")
    module_name, attribute = KILL_POINTS[point]
    owner = importlib.import_module(module_name)
    *path, name = attribute.split(".")
    for part in path:
        owner = getattr(owner, part)
    setattr(owner, name, _die_at_call(int(number or 1), getattr(owner, name),
                                      signal.Signals[f"SIG{sent or 'KILL'}"]))
    # SIGINT raises KeyboardInterrupt as at a terminal, even where the test run inherited it
    # ignored (a background job of a non-interactive shell does).
    signal.signal(signal.SIGINT, signal.default_int_handler)
    sys.argv = [script, *args]
    runpy.run_path(script, run_name="__main__")


if __name__ == "__main__":
    main()
