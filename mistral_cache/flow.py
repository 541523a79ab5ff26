"""The only seam between sync and async code.

Every decision of the cache (freshness, locks, early refresh, stale-if-error,
conditional writes, invalidation) is written once, as a generator that *yields*
the I/O it needs as one of the operation types below; :func:`drive` performs
them with blocking calls and :func:`adrive` with ``await``. tenacity separates
its retry decisions from the sleeping and calling the same way (``DoAttempt``,
``DoSleep``).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Generator
from typing import Any

from .tiers.local import LocalEntry
from .tiers.redis import Op

__all__ = ["Flow", "RedisCall", "FnCall", "Sleep", "Background", "drive", "adrive", "returns"]

#: A generator yielding operations, sent their results, returning the answer.
Flow = Generator[Any, Any, Any]


class RedisCall:
    """Run ``op`` on the Redis tier (fail open: the result may be ``FAILED``)."""

    __slots__ = ("op", "what")

    def __init__(self, op: Op, what: str) -> None:
        self.op, self.what = op, what


class FnCall:
    """Call the cached function; ``token`` is the Redis lock held meanwhile (kept alive)."""

    __slots__ = ("lock_key", "token")

    def __init__(self, lock_key: str, token: bytes | None) -> None:
        self.lock_key, self.token = lock_key, token


class Sleep:
    __slots__ = ("seconds",)

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds


class Background:
    """Refresh in the background; ``held`` is the value being replaced."""

    __slots__ = ("held",)

    def __init__(self, held: LocalEntry | None) -> None:
        self.held = held


def drive(flow: Flow, perform: Callable[[Any], Any]) -> Any:
    """Run a flow to its end, performing each yielded operation with blocking I/O."""
    send: Any = None
    error: BaseException | None = None
    while True:
        try:
            op = flow.throw(error) if error is not None else flow.send(send)
        except StopIteration as stop:
            return stop.value
        error = None
        try:
            send = perform(op)
        except BaseException as exc:
            error = exc


async def adrive(flow: Flow, perform: Callable[[Any], Awaitable[Any]]) -> Any:
    """The same, awaiting each operation."""
    send: Any = None
    error: BaseException | None = None
    while True:
        try:
            op = flow.throw(error) if error is not None else flow.send(send)
        except StopIteration as stop:
            return stop.value
        error = None
        try:
            send = await perform(op)
        except BaseException as exc:
            error = exc


def returns(value: Any) -> Flow:
    """A flow that does no I/O and answers ``value``."""
    return value
    yield  # makes this a generator
