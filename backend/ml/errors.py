"""Errors caused by user input: the CLI prints them without a traceback."""

from __future__ import annotations

from pathlib import Path


class UserError(Exception):
    """A mistake the user can fix (bad config, bad data file, unknown run), or a stop the user
    asked for; ``exit_code`` is the status the CLI exits with."""

    exit_code = 1

    def __init__(self, *args, exit_code: int | None = None):
        super().__init__(*args)
        if exit_code is not None:
            self.exit_code = exit_code


class ConfigError(UserError):
    """The experiment config is invalid; ``problems`` lists every issue found."""

    exit_code = 2

    def __init__(self, source: str, problems: list[str]):
        self.source = source
        self.problems = list(problems)
        listing = "\n".join(f"  - {problem}" for problem in self.problems)
        super().__init__(f"{source}: {len(self.problems)} problem(s) in the config:\n{listing}")


class DataError(UserError):
    """A data file is missing, unreadable or malformed."""


# How a single process starts this project's commands; torchrun names its own launcher.
LAUNCHER = "python run_experiment.py"


class ResumableError(UserError):
    """A failure a run can go on from: the message ends with the command that resumes it.

    The run the failure stopped names itself in ``run_dir`` as the error passes through its
    recording (``training.outcome``); an enclosing run, recorded later, names itself instead (a
    cross-validation fold is resumed through its cross-validation run). ``RUN_DIR`` stands in
    where no run recorded it.
    """

    def __init__(self, message: str, run_dir: Path | None = None,
                 launcher: str = LAUNCHER):
        super().__init__(message)
        self.run_dir = run_dir
        self.launcher = launcher

    def __str__(self) -> str:
        return f"{self.args[0]} {resume_command(self.run_dir, self.launcher)}"


def resume_command(run_dir: Path | None, launcher: str = LAUNCHER) -> str:
    """The command that continues ``run_dir`` (``RUN_DIR`` where no run directory is known)."""
    return f"{launcher} resume {run_dir or 'RUN_DIR'}"
