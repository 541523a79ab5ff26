"""One exception tree, rooted at :class:`CacheError`, so callers can catch ours only."""

from __future__ import annotations

__all__ = ["CacheError", "ConfigurationError", "KeyBuildError", "SerializationError", "TierUnavailable", "LockTimeout"]


class CacheError(Exception):
    """Base of every error this package raises; carries the key and tier involved."""

    def __init__(self, message: str, *, key: str | None = None, tier: str | None = None) -> None:
        super().__init__(message)
        self.key = key
        self.tier = tier

    def __str__(self) -> str:
        text = super().__str__()
        extra = [f"{n}={v!r}" for n, v in (("key", self.key), ("tier", self.tier)) if v is not None]
        return f"{text} ({', '.join(extra)})" if extra else text


class ConfigurationError(CacheError, ValueError):
    """A `Cache`, decorator or policy was given an option it cannot use."""


class KeyBuildError(CacheError, TypeError):
    """A cache key could not be built from a call's arguments."""


class SerializationError(CacheError):
    """A value could not be encoded for, or decoded from, the Redis tier."""


class TierUnavailable(CacheError):
    """Redis failed or the breaker is open; raised only in strict mode."""


class LockTimeout(CacheError):
    """Waited longer than `lock_wait` for another caller's value (with `on_lock_timeout="raise"`)."""
