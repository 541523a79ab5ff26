"""The few names every layer shares: the "no value" sentinel and the TTL policy protocol.

Nothing here imports the rest of the package, so any module may import it.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, NamedTuple, Protocol, runtime_checkable

if TYPE_CHECKING:
    from .observability.stats import Stats

__all__ = ["NO_VALUE", "NoValue", "Decision", "TTLPolicy"]


class NoValue:
    """The "nothing cached" sentinel: a cached ``None`` is a hit."""

    _instance: NoValue | None = None

    def __new__(cls) -> NoValue:
        if cls._instance is None:
            cls._instance = super().__new__(cls)
        return cls._instance

    def __repr__(self) -> str:
        return "NO_VALUE"

    def __bool__(self) -> bool:
        return False


NO_VALUE = NoValue()


class Decision(NamedTuple):
    """What a :class:`TTLPolicy` chose for one value."""

    ttl: float
    """Seconds the value is fresh; 0 or less: do not cache it."""
    meta: Mapping[str, Any] = {}
    """JSON-able state stored in the entry's envelope (under keys of the policy's own)
    and handed back to the next ``decide`` of the same key."""
    retain: float = 0.0
    """Seconds to keep the entry in Redis past its expiry, so its meta survives until
    the next recompute reads it."""


@runtime_checkable
class TTLPolicy(Protocol):
    """A TTL that needs context: the previous entry's state, the key, the time.

    A plain ``ttl=`` is seconds, a timedelta, or a callable of the result. An object
    with these two methods is a policy instead (adaptive expiry is one); write your
    own from this docstring alone:

    - ``bind(name, stats)`` is called once when a function is decorated with the
      policy. ``name`` is the function's qualified name and ``stats`` its counters;
      return the :class:`~mistral_cache.observability.stats.Stats` the function should count into
      (``stats`` itself, or a subclass carrying the policy's own figures, which then
      appear in ``fn.stats()``).
    - ``decide(value, key=, meta=, now=, name=)`` is called on every store, after the
      function ran: ``meta`` is the previous entry's meta for this key (or None; it
      came from Redis, so validate it and treat anything malformed as none), ``now``
      the cache's clock. Return a :class:`Decision` (a plain ``(ttl, meta, retain)``
      tuple works too).
    - ``__call__(value)`` gives a context-free TTL in seconds, used where no engine
      runs (the policy is then an ordinary TTL callable).
    """

    def bind(self, name: str, stats: Stats) -> Stats: ...

    def decide(self, value: Any, *, key: str, meta: Mapping[str, Any] | None, now: float, name: str) -> tuple[float, Mapping[str, Any], float]: ...

    def __call__(self, value: Any) -> float: ...
