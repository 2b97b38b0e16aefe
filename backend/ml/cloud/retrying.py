"""Riding out the laptop's network while it watches a cloud run.

A laptop on Wi-Fi drops its connection, sleeps with the lid shut, and meets Google's front end
answering 500, 502, 503 or 429. None of that says anything about the VM, so the attached watch
(:func:`orchestrate.watch_run`) makes its calls through :class:`Backoff`: a call that fails for
the network's sake is tried again after an exponentially growing, jittered wait (at least what a
429's ``Retry-After`` asks), and only when the calls keep failing for ``patience`` seconds of
waiting does it give up with :class:`NetworkLost`. The waits are counted, not the wall clock: a
laptop that slept for hours has not been retrying for hours.

>>> calls = Backoff(sleep=time.sleep, log=print)  # doctest: +SKIP
>>> marker = calls.call(storage.read_json, client, url)  # doctest: +SKIP
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TypeVar

from .compute import CloudError

# Exit status when the watch stops for want of a network: EX_TEMPFAIL, "try again later".
NETWORK_LOST_EXIT = 75
NETWORK_PATIENCE_SECONDS = 15 * 60

Result = TypeVar("Result")


class NetworkLost(CloudError):
    """Google Cloud stayed unreachable; the VM was left running."""

    exit_code = NETWORK_LOST_EXIT


def is_transient(error: BaseException) -> bool:
    """Whether ``error`` is the network's or a busy server's: 5xx but 501, 429, a dropped,
    reset or refused connection, a time-out, a token refresh that could not connect."""
    import requests
    from google.api_core import exceptions
    from google.auth import exceptions as auth_exceptions

    if isinstance(error, (exceptions.ServerError, exceptions.TooManyRequests)):
        return not isinstance(error, exceptions.MethodNotImplemented)
    return isinstance(error, (requests.ConnectionError, requests.Timeout, ConnectionError,
                              TimeoutError, exceptions.RetryError,
                              auth_exceptions.TransportError))


def retry_after_seconds(error: BaseException) -> float:
    """The ``Retry-After`` seconds of an HTTP answer, 0 without one."""
    response = getattr(error, "response", None)
    value = getattr(response, "headers", {}).get("Retry-After", "") if response else ""
    try:
        return max(0.0, float(value))
    except ValueError:  # an HTTP date: rare from Google; the backoff applies
        return 0.0


def describe(error: BaseException) -> str:
    """One short line: the HTTP status, or the kind of connection failure."""
    code = getattr(error, "code", None)
    if isinstance(code, int):
        return f"HTTP {code} {type(error).__name__}"
    text = str(error).splitlines()[0] if str(error) else ""
    return f"{type(error).__name__}: {text[:100]}" if text else type(error).__name__


@dataclass
class Backoff:
    """Retries transient failures of consecutive calls: the n-th failure in a row waits a random
    time between half and all of ``min(ceiling, first * 2**n)`` (and at least Retry-After);
    once the waits would pass ``patience`` it raises :class:`NetworkLost`. A success starts
    the count again."""

    sleep: Callable[[float], object]
    log: Callable[[str], object]
    first: float = 2.0
    ceiling: float = 120.0
    patience: float = NETWORK_PATIENCE_SECONDS
    jitter: Callable[[], float] = field(default=random.random)
    failures: int = 0
    waited: float = 0.0

    def call(self, action: Callable[..., Result], *args, **kwargs) -> Result:
        while True:
            try:
                result = action(*args, **kwargs)
            except Exception as error:
                if not is_transient(error):
                    raise
                self._wait_after(error)
                continue
            self.failures, self.waited = 0, 0.0
            return result

    def _wait_after(self, error: BaseException) -> None:
        step = min(self.ceiling, self.first * 2 ** self.failures)
        delay = max(step * (0.5 + 0.5 * self.jitter()), retry_after_seconds(error))
        if self.waited + delay > self.patience:
            raise NetworkLost(f"Google Cloud did not answer for {self.waited / 60:.0f} min of "
                              f"retries ({self.failures + 1} failed calls in a row, the last: "
                              f"{describe(error)})") from error
        self.failures += 1
        self.waited += delay
        self.log(f"  no answer from Google Cloud ({describe(error)}); retrying in {delay:.0f} s "
                 f"(attempt {self.failures + 1})")
        self.sleep(delay)
