"""Run the CLI in this process and SIGKILL it at a named point of the training code.

``python tests/support/kill_at.py POINT run_experiment.py ARGS...``: the process is killed by a
real SIGKILL, exactly where POINT says, so a test of what a crash leaves behind needs no race
against the clock (polling the run directory for the right moment).
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
    "evaluation": ("backend.ml.training.trainer", "ClassifierTrainer._evaluate"),
}


def _die(*_args, **_kwargs):
    sys.stdout.flush()
    sys.stderr.flush()
    os.kill(os.getpid(), signal.SIGKILL)


def main() -> None:
    point, script, *args = sys.argv[1:]
    module_name, attribute = KILL_POINTS[point]
    owner = importlib.import_module(module_name)
    *path, name = attribute.split(".")
    for part in path:
        owner = getattr(owner, part)
    setattr(owner, name, _die)
    sys.argv = [script, *args]
    runpy.run_path(script, run_name="__main__")


if __name__ == "__main__":
    main()
