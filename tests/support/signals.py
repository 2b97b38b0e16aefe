"""Real Ctrl-C inside the test process, delivered where a user's would land.

``_thread.interrupt_main()`` only fakes a signal: it does nothing when SIGINT is ignored (a test
run started as a background job of a non-interactive shell inherits SIGINT ignored), and it cannot
wake a main thread blocked in a socket read. A SIGINT sent to the main thread itself does both:
the blocking read returns EINTR and Python raises ``KeyboardInterrupt`` right there.
"""

from __future__ import annotations

import signal
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager


def ctrl_c_main_thread() -> None:
    """Send SIGINT to the main thread, from any thread (a fake server's handler, say)."""
    main = threading.main_thread().ident
    assert main is not None
    signal.pthread_kill(main, signal.SIGINT)


def once(action: Callable[[], None]) -> Callable[..., None]:
    """A hook that runs ``action`` the first time it is called and ignores later calls."""
    done = threading.Event()

    def hook(*_args) -> None:
        if not done.is_set():
            done.set()
            action()
    return hook


@contextmanager
def ctrl_c_raises_keyboard_interrupt() -> Iterator[None]:
    """Python's own SIGINT handler for the duration, whatever the test run inherited."""
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)
