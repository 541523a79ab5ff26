"""A cache's settings as small immutable objects, in tenacity's manner.

Stampede and staleness strategies (:class:`RedisLock`, :class:`EarlyRefresh`,
:class:`StaleIfError`): a :class:`~mistral_cache.Cache` takes one of each as its
default, and ``cache.cached(...)`` takes one to override it for a function;
``None`` turns the behaviour off. Then the local tier (:class:`Local`), Redis's
time limits (:class:`Timeouts`) and the clock (:class:`Clock`).
"""

from __future__ import annotations

import datetime as _dt
import math
import time as _time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Final, Literal

from .exceptions import ConfigurationError

__all__ = ["ttl_seconds", "check_ttl", "RedisLock", "EarlyRefresh", "StaleIfError", "Local", "Timeouts", "Clock", "INHERIT", "seconds"]


def seconds(value: float | _dt.timedelta | None, name: str, *, positive: bool = False, forever: bool = False) -> float:
    """A duration as float seconds: a number or a timedelta, not negative, and
    finite unless ``forever`` allows ``math.inf``."""
    if value is None:
        return 0.0
    if isinstance(value, _dt.timedelta):
        value = value.total_seconds()
    if (not isinstance(value, (int, float)) or isinstance(value, bool) or math.isnan(value)
            or (math.isinf(value) and not forever) or value < 0 or (positive and value == 0)):
        kind = "positive" if positive else "non-negative"
        raise ConfigurationError(f"{name} must be a {kind} number of seconds or a timedelta, got {value!r}")
    return float(value)


@dataclass(frozen=True)
class RedisLock:
    """One computation per key across processes: a Redis lock taken with a re-read
    of the entry (dogpile's "re-check after acquiring"), extended while the function
    runs, released token-checked.

    ``timeout``: the lock's expiry, so a holder that died frees it. ``wait``: how
    long a caller waits for another's value (across processes, or in this one)
    before ``on_timeout``: ``"compute"`` it itself or ``"raise"`` LockTimeout.
    """

    timeout: float = 10.0
    wait: float = 30.0
    on_timeout: Literal["compute", "raise"] = "compute"

    def __post_init__(self) -> None:
        object.__setattr__(self, "timeout", seconds(self.timeout, "RedisLock.timeout", positive=True))
        object.__setattr__(self, "wait", seconds(self.wait, "RedisLock.wait", positive=True))
        if self.on_timeout not in ("compute", "raise"):
            raise ConfigurationError(f"RedisLock.on_timeout must be 'compute' or 'raise', got {self.on_timeout!r}")


@dataclass(frozen=True)
class EarlyRefresh:
    """Refresh hot keys before they expire (XFetch, Vattani et al., VLDB 2015): one
    caller recomputes with a probability that rises as expiry nears and with the
    value's compute time, so a popular key never expires under load.

    ``beta`` scales how early (1.0 as in the paper). ``background``: the chosen
    caller returns the value it holds and the refresh runs in the background
    (stale-while-revalidate).
    """

    beta: float = 1.0
    background: bool = False

    def __post_init__(self) -> None:
        if not isinstance(self.beta, (int, float)) or isinstance(self.beta, bool) or not math.isfinite(self.beta) or self.beta < 0:
            raise ConfigurationError(f"EarlyRefresh.beta must be a non-negative number, got {self.beta!r}")
        object.__setattr__(self, "beta", float(self.beta))


def _any_exception(exc: BaseException) -> bool:
    return isinstance(exc, Exception)


@dataclass(frozen=True)
class StaleIfError:
    """When the function fails, serve a value that expired less than ``seconds`` ago
    (RFC 5861's stale-if-error), for exceptions that ``on`` accepts (any Exception)."""

    seconds: float
    on: Callable[[BaseException], bool] = field(default=_any_exception)

    def __post_init__(self) -> None:
        object.__setattr__(self, "seconds", seconds(self.seconds, "StaleIfError.seconds", forever=True))
        if not callable(self.on):
            raise ConfigurationError(f"StaleIfError.on must be a callable of the exception, got {self.on!r}")


@dataclass(frozen=True)
class Local:
    """The in-process tier: ``maxsize`` entries (and about ``max_bytes`` of values:
    None for the tier's default bound, 0 for none), each served at most ``ttl``
    seconds before Redis is asked again (None: until the entry's own TTL), and kept
    coherent with other processes over pub/sub when ``coherence`` is on.
    ``admission="tinylfu"`` lets a new key evict the LRU victim only if it was asked
    for more often lately (scan- and long-tail-resistant; None: plain LRU)."""

    maxsize: int = 4096
    max_bytes: int | None = None
    ttl: float | None = 60.0
    coherence: bool = True
    admission: str | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.maxsize, int) or isinstance(self.maxsize, bool) or self.maxsize < 0:
            raise ConfigurationError(f"Local.maxsize must be an int >= 0, got {self.maxsize!r}")
        if self.max_bytes is not None and (not isinstance(self.max_bytes, int) or self.max_bytes < 0):
            raise ConfigurationError(f"Local.max_bytes must be an int >= 0 or None, got {self.max_bytes!r}")
        from .tiers.admission import ADMISSIONS  # here: the settings module imports no tier at load

        if self.admission is not None and self.admission not in ADMISSIONS:
            raise ConfigurationError(f"Local.admission must be None or one of {ADMISSIONS}, got {self.admission!r}")
        object.__setattr__(self, "ttl", seconds(self.ttl, "Local.ttl") or None)


@dataclass(frozen=True)
class Timeouts:
    """Redis time limits: ``socket`` per command, ``connect`` per connection, and
    ``replica_wait``, how long an invalidation waits for a replica to hold it (None:
    0.1 s under Sentinel, none elsewhere; it must stay below ``socket``)."""

    socket: float = 0.25
    connect: float = 0.25
    replica_wait: float | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "socket", seconds(self.socket, "Timeouts.socket", positive=True))
        object.__setattr__(self, "connect", seconds(self.connect, "Timeouts.connect", positive=True))
        if self.replica_wait is not None:
            wait = seconds(self.replica_wait, "Timeouts.replica_wait")
            if wait >= self.socket:
                raise ConfigurationError(
                    f"Timeouts.replica_wait ({wait!r}) must be shorter than Timeouts.socket ({self.socket!r}): "
                    "a WAIT that outlives the socket would count as a Redis failure")
            object.__setattr__(self, "replica_wait", wait)


@dataclass(frozen=True)
class Clock:
    """The clock and the sleep the cache uses, injectable (cachetools' ``timer=``) so
    expiry and backoff are tested exactly and fast."""

    time: Callable[[], float] = _time.time
    sleep: Callable[[float], Any] = _time.sleep


class Inherit:
    """The type of :data:`INHERIT`."""

    def __repr__(self) -> str:
        return "INHERIT"


#: ``cache.cached(lock=INHERIT)`` (the default): use the cache's policy; None turns it off.
INHERIT: Final = Inherit()


def ttl_seconds(ttl: Any, value: Any, fn_name: str) -> float:
    """A TTL given as seconds, a timedelta, or a callable of the result (a strategy)."""
    if callable(ttl) and not isinstance(ttl, _dt.timedelta):
        ttl = ttl(value)
    if isinstance(ttl, _dt.timedelta):
        return ttl.total_seconds()
    if isinstance(ttl, (int, float)) and not isinstance(ttl, bool) and math.isfinite(ttl):
        return float(ttl)
    raise ConfigurationError(f"{fn_name}: ttl must be finite seconds, a timedelta or a callable returning one; got {ttl!r}")


def check_ttl(ttl: Any, fn_name: str) -> None:
    if callable(ttl) and not isinstance(ttl, _dt.timedelta):
        return
    if ttl_seconds(ttl, None, fn_name) <= 0:
        raise ConfigurationError(f"{fn_name}: ttl must be positive, got {ttl!r}")
