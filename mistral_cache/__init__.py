"""mistral_cache: a two-tier (in-process LRU + Redis) cache with stampede
protection, coherent local tiers and cached OpenStack Mistral client wrappers."""

from __future__ import annotations

import os
import threading
from collections.abc import Callable
from typing import Any, TypeVar

from .adaptive import adaptive
from .api import NO_VALUE
from .cache import Cache
from .exceptions import (
    CacheError,
    ConfigurationError,
    KeyBuildError,
    LockTimeout,
    SerializationError,
    TierUnavailable,
)
from .policies import INHERIT, Clock, EarlyRefresh, Local, RedisLock, StaleIfError, Timeouts
from .serializers import Codec

__all__ = [
    "INHERIT", "NO_VALUE", "Cache", "CacheError", "Clock", "Codec", "ConfigurationError", "EarlyRefresh", "KeyBuildError",
    "Local", "LockTimeout", "RedisLock", "SerializationError", "StaleIfError", "TierUnavailable", "Timeouts",
    "adaptive", "cached", "configure", "default_cache",
]

F = TypeVar("F", bound=Callable[..., Any])
_default: Cache | None = None
_default_lock = threading.Lock()


def configure(**options: Any) -> Cache:
    """Set up the default cache used by :func:`cached` (before its first call).

    Takes :class:`Cache`'s arguments; ``redis_url`` defaults to the
    ``MISTRAL_CACHE_REDIS_URL`` environment variable (local tier only if unset).
    """
    global _default
    options.setdefault("redis_url", os.environ.get("MISTRAL_CACHE_REDIS_URL") or None)
    with _default_lock:
        if _default is not None:
            _default.close()
        _default = Cache(**options)
        return _default


def default_cache() -> Cache:
    """The default cache, created from the environment on first use, never at import."""
    cache = _default
    if cache is None:
        with _default_lock:
            cache = _default
        if cache is None:
            cache = configure()
    return cache


def cached(ttl: Any, key: Any = None, **options: Any) -> Callable[[F], F]:
    """``@cached(ttl=..., key=...)`` on the default cache; see :meth:`Cache.cached`.

    The wrapper binds to the default cache at its first call, so
    :func:`configure` may run after the decorated module is imported.
    """
    import functools
    import inspect

    def decorate(fn: F) -> F:
        real: list[Any] = []

        def resolve() -> Any:
            if not real:
                real.append(default_cache().cached(ttl, key, **options)(fn))
            return real[0]

        if inspect.iscoroutinefunction(fn):
            @functools.wraps(fn)
            async def awrapper(*args: Any, **kwargs: Any) -> Any:
                return await resolve()(*args, **kwargs)
            wrapper: Any = awrapper
        else:
            @functools.wraps(fn)
            def swrapper(*args: Any, **kwargs: Any) -> Any:
                return resolve()(*args, **kwargs)
            wrapper = swrapper
        for name in ("invalidate", "refresh", "stats", "cache_key"):
            setattr(wrapper, name, (lambda n: lambda *a, **k: getattr(resolve(), n)(*a, **k))(name))
        return wrapper  # type: ignore[no-any-return]

    return decorate
