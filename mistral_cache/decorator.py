"""The wrapper handed back by ``@cache.cached``: one for plain functions, one for
coroutine functions, both thin shells over the same :class:`~.core.Engine`."""

from __future__ import annotations

import functools
from typing import Any

from .core import Engine


def make_wrapper(engine: Engine) -> Any:
    fn = engine.fn
    key = engine.key
    cache = engine.cache
    # The local hit is inlined in both wrappers, over closure variables: it is
    # the path whose cost we promise (no slower than cachetools.cached).
    build, prefix, local, timer, stats = engine.keys.build, engine.prefix, engine.local, cache.timer, engine.stats

    if engine.is_async:
        call_async = engine.call_async

        @functools.wraps(fn)
        async def wrapper(*args: Any, **kwargs: Any) -> Any:
            k = prefix + build(args, kwargs) if prefix else build(args, kwargs)
            if local is not None:
                entry = local.peek(k)
                if entry is not None and timer() < entry.soft_at:
                    stats.local_hits += 1
                    return entry.value
            return await call_async(k, args, kwargs)

        async def invalidate(*args: Any, **kwargs: Any) -> bool:
            return bool(await cache._adrive(engine.invalidate_flow(key(args, kwargs))))

        async def refresh(*args: Any, **kwargs: Any) -> Any:
            return await engine.arun_flight(key(args, kwargs), args, kwargs, "refresh", None)

        wrapper_any: Any = wrapper
    else:
        call_sync = engine.call_sync

        @functools.wraps(fn)
        def swrapper(*args: Any, **kwargs: Any) -> Any:
            k = prefix + build(args, kwargs) if prefix else build(args, kwargs)
            if local is not None:
                entry = local.peek(k)
                if entry is not None and timer() < entry.soft_at:
                    stats.local_hits += 1
                    return entry.value
            return call_sync(k, args, kwargs)

        def invalidate(*args: Any, **kwargs: Any) -> bool:  # type: ignore[misc]
            return bool(cache._drive(engine.invalidate_flow(key(args, kwargs))))

        def refresh(*args: Any, **kwargs: Any) -> Any:  # type: ignore[misc]
            return engine.run_flight(key(args, kwargs), args, kwargs, "refresh", None)

        wrapper_any = swrapper

    wrapper_any.invalidate = invalidate
    wrapper_any.refresh = refresh
    wrapper_any.stats = engine.stats.snapshot
    wrapper_any.cache_key = lambda *args, **kwargs: key(args, kwargs)
    wrapper_any.cache = cache
    wrapper_any.engine = engine
    return wrapper_any
