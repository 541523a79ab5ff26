"""The cached reads: one manager method (``get``, ``list``...) through the cache.

The cached value is the resources' ``to_dict()`` (or Mistral's 404, remembered),
keyed and tagged by the caller's scope, so tenants sharing one Redis never read
each other's entries; a caller with no verified scope reaches the server uncached.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Protocol

import tenacity

from ..keys import ArgBinder
from ..policies import INHERIT
from .arguments import binder_for, call_bound, encode_arguments
from .catalog import Read
from .events.lease import lease_tag
from .events.mapping import ANY
from .policies import STATEFUL, Policy, event_backed, not_found_marker, resource_ttl
from .resources import import_dotted, rebuild, resource_builder
from .transport import api_exception, is_mistral_not_found

__all__ = ["FUNCTION_MODULE", "Facade", "CachedRead", "make_read"]

#: The module named in cached reads' function names (stats, metrics, the adaptive
#: learner's keys: ``mistral_cache.mistral.client.workflows.get``), as before the
#: facade was split out of that module.
FUNCTION_MODULE = "mistral_cache.mistral.client"


class Facade(Protocol):
    """What a read needs of its facade (:class:`~mistral_cache.mistral.CachedMistralClient`)."""

    @property
    def cache(self) -> Any: ...
    @property
    def policies(self) -> Mapping[str, Policy]: ...
    @property
    def events(self) -> Any: ...  # the event stream's lease as this process sees it; None: no Redis
    @property
    def mistral_url(self) -> str: ...
    @property
    def retry(self) -> tenacity.BaseRetrying | None: ...
    @property
    def scope(self) -> str | None: ...  # the caller's verified scope now; None: nothing is cached


@dataclass(frozen=True)
class CachedRead:
    """One cached read: the method the manager exposes, the cached fetch behind it
    (``stats()``, ``cache_key()``) and the binder of its arguments."""

    call: Callable[..., Any]
    cached: Any
    binder: ArgBinder

    def cache_key(self, scope: str, params: Mapping[str, Any]) -> str:
        """The key of a call with these bound arguments, in ``scope``."""
        return str(self.cached.cache_key(scope, "", encode_arguments(self.binder.names, params), params))


def make_read(facade: Facade, manager: Any, real_manager: Any, name: str, method: str, spec: Read) -> CachedRead:
    """``real_manager.<method>`` (of the manager ``name``) cached; resources it returns
    belong to ``manager``."""
    real = getattr(real_manager, method)
    binder = binder_for(real)
    names, varkw = binder.names, binder.varkw
    resource = spec.policy or name
    build = resource_builder(import_dotted(spec.resource_class) if spec.resource_class else real_manager.resource_class)
    not_found = api_exception()

    def fetch(scope: str, ident: str, encoded: str, params: dict[str, Any]) -> Any:
        try:
            result = call_bound(real, params, varkw)
        except not_found as exc:
            if spec.ident is not None and is_mistral_not_found(exc):
                return not_found_marker(getattr(exc, "error_message", None))
            raise
        if isinstance(result, list):
            return [r.to_dict() for r in result]
        return result.to_dict()

    fetch.__qualname__ = fetch.__name__ = f"{name}.{method}"
    fetch.__module__ = FUNCTION_MODULE
    if spec.ident is not None:
        tags = [f"{{scope}}|{resource}", f"{{scope}}|{resource}|id:{{ident}}"]
    else:
        tags = [f"{{scope}}|{resource}", f"{{scope}}|{resource}|list"]
        if spec.list_filter is not None:  # so that an event clears only the lists it changes
            tags.append(f"{{scope}}|{resource}|list|{spec.list_filter[1]}:{{ident}}")
    ttl = resource_ttl(resource, facade.policies)
    watch = facade.events
    if watch is not None and resource in STATEFUL:
        tags.append(lease_tag(facade.mistral_url))  # dropped when the event stream's epoch ends
        ttl = event_backed(ttl, watch)
    prefix = f"{name}.{method}|"

    def key(scope: str, ident: str, encoded: str, params: dict[str, Any]) -> str:
        return f"mistral|{scope}|{prefix}{encoded}"

    # No XFetch early refresh for stateful reads: their short TTLs end in a state
    # change anyway. Observed with it on (tests/mistral/test_facade.py, polling test):
    # the final SUCCESS of a polled execution reached the local tier but never Redis
    # (the early refresh's conditional write lost to the RUNNING entry's expiry?).
    cached = facade.cache.cached(
        ttl=ttl, key=key, tags=tags, retry=facade.retry,
        refresh=None if resource in STATEFUL else INHERIT,
    )(fetch)
    list_filter = spec.list_filter[0] if spec.list_filter is not None else None

    @functools.wraps(real)
    def read(*args: Any, **kwargs: Any) -> Any:
        if watch is not None and not watch.started:
            watch.ensure()
        scope = facade.scope
        if scope is None:  # no identity Keystone confirms: the server decides, nothing cached
            return real(*args, **kwargs)
        params = binder.bind(args, kwargs)
        if spec.ident is not None:
            ident = str(params.get(spec.ident))
        elif list_filter is not None:
            ident = str(params.get(list_filter) or (params.get(varkw or "") or {}).get(list_filter) or ANY)
        else:
            ident = ""
        try:
            encoded = encode_arguments(names, params)
        except TypeError:  # an argument without a stable key: don't cache this call
            value = fetch(scope, ident, "", params)
        else:
            value = cached(scope, ident, encoded, params)
        return rebuild(manager, build, value)

    return CachedRead(read, cached, binder)
