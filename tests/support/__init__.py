"""Helpers the test modules share: the CLI as a user runs it, tiny configs, run directories
built through the project's own writers, and loopback stand-ins for Google Cloud (``fakes``).

Fixtures live in ``tests/conftest.py``; everything here is a plain function or constant that a
test module imports (``from support.cli import run_cli``).
"""
