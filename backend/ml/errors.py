"""Errors caused by user input: the CLI prints them without a traceback."""


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
