"""`CachedMistralClient`: a drop-in for ``mistralclient.api.v2.client.Client``.

Every manager keeps the real manager's methods and signatures. Reads (``get``,
``list``, sub-execution lists) go through the cache: the cached value is the
resources' ``to_dict()`` and each call hands back real ``Resource`` objects
rebuilt from a copy of it. Writes pass through and then invalidate, by tag,
what they change. Anything else is delegated to the real manager or client.

Keys and tags carry the scope (the tenant, and the server), so tenants sharing
one Redis never read each other's entries.
"""

from __future__ import annotations

import copy
import functools
import hashlib
import inspect
import logging
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import tenacity

from ..keys import encode_arg
from .policies import STATEFUL, Policy, is_not_found, make_policies, not_found_marker, ttl_for

log = logging.getLogger("mistral_cache.mistral")

Tags = Callable[[Mapping[str, Any], Any], Iterable[str]]

#: Default (connect, read) timeouts put on the client's requests session.
DEFAULT_TIMEOUT = (3.05, 30.0)


# -- what is a read, what a write invalidates -------------------------------
@dataclass(frozen=True)
class Read:
    ident: str | None = None  # the parameter naming one resource (None: a list)
    policy: str | None = None  # the policy (and tags) of another manager, e.g. sub-executions
    resource_class: str | None = None  # dotted name of the class to rebuild, if not the manager's


def _all(*resources: str) -> Tags:
    """Invalidate every entry (items and lists) of these managers in the scope."""

    def tags(args: Mapping[str, Any], result: Any) -> Iterable[str]:
        return [f"{r}" for r in resources]

    return tags


def _lists(resource: str) -> Tags:
    def tags(args: Mapping[str, Any], result: Any) -> Iterable[str]:
        return [f"{resource}|list"]

    return tags


def _one(resource: str, param: str, *others: str) -> Tags:
    """That resource, its manager's lists and every entry of ``others``."""

    def tags(args: Mapping[str, Any], result: Any) -> Iterable[str]:
        return [f"{resource}|id:{args.get(param)}", f"{resource}|list", *others]

    return tags


def _rerun(args: Mapping[str, Any], result: Any) -> Iterable[str]:
    out = [f"tasks|id:{args.get('task_ex_id')}", "tasks|list", "tasks", "action_executions", "executions|list"]
    execution = getattr(result, "workflow_execution_id", None)
    out.append(f"executions|id:{execution}" if execution else "executions")
    return out


_DEFS = {"get": Read("identifier"), "list": Read()}
READS: dict[str, dict[str, Read]] = {
    "workflows": _DEFS,
    "workbooks": {"get": Read("name"), "list": Read()},
    "executions": {"get": Read("id"), "list": Read(), "get_ex_sub_executions": Read()},
    "tasks": {
        "get": Read("id"),
        "list": Read(),
        "get_task_sub_executions": Read(policy="executions", resource_class="mistralclient.api.v2.executions.Execution"),
    },
    "action_executions": {"get": Read("id"), "list": Read()},
    "actions": _DEFS,
    "environments": {"get": Read("name"), "list": Read()},
    "cron_triggers": {"get": Read("name"), "list": Read()},
    "event_triggers": {"get": Read("id"), "list": Read()},
    "members": {"get": Read("resource_id"), "list": Read()},
    "code_sources": _DEFS,
    "dynamic_actions": _DEFS,
}

_CUD = ("create", "update", "delete")
WRITES: dict[str, dict[str, Tags]] = {
    "workflows": dict.fromkeys(_CUD, _all("workflows")),
    "workbooks": dict.fromkeys(_CUD, _all("workbooks", "workflows", "actions")),
    "actions": dict.fromkeys(_CUD, _all("actions")),
    "environments": dict.fromkeys(_CUD, _all("environments")),
    "cron_triggers": dict.fromkeys(("create", "delete"), _all("cron_triggers")),
    "event_triggers": dict.fromkeys(("create", "delete"), _all("event_triggers")),
    "members": dict.fromkeys(_CUD, _all("members", "workflows", "workbooks")),
    "code_sources": dict.fromkeys(_CUD, _all("code_sources", "dynamic_actions", "actions")),
    "dynamic_actions": dict.fromkeys(_CUD, _all("dynamic_actions", "actions")),
    "executions": {
        "create": _lists("executions"),
        "update": _one("executions", "id", "tasks", "action_executions"),
        "delete": _one("executions", "id", "tasks", "action_executions"),
    },
    "tasks": {"rerun": _rerun},
    "action_executions": {
        "create": _lists("action_executions"),
        "update": _one("action_executions", "id", "tasks", "executions"),
        "delete": _one("action_executions", "id", "tasks", "executions"),
    },
}


# -- transport -------------------------------------------------------------
def _api_exception() -> type[Exception]:
    from mistralclient.api.base import APIException

    cls: type[Exception] = APIException
    return cls


def is_transient(exc: BaseException) -> bool:
    """Worth retrying an idempotent read: a connection failure, a timeout, a 5xx."""
    import requests

    if isinstance(exc, (requests.ConnectionError, requests.Timeout)):
        return True
    code = getattr(exc, "error_code", None)
    return isinstance(exc, _api_exception()) and isinstance(code, int) and code >= 500


def default_retry() -> tenacity.Retrying:
    """Bounded: at most 4 attempts within about 10 s, exponential backoff with jitter."""
    return tenacity.Retrying(
        retry=tenacity.retry_if_exception(is_transient),
        stop=tenacity.stop_after_attempt(4) | tenacity.stop_after_delay(10),
        wait=tenacity.wait_exponential_jitter(initial=0.1, max=2.0),
        reraise=True,
    )


def install_timeout(session: Any, timeout: Any) -> None:
    """Give a session a default timeout: requests sets none, nor does mistralclient."""
    if timeout is None or session is None:
        return
    import requests

    if isinstance(session, requests.Session):
        if getattr(session, "_mistral_cache_timeout", None) is not None:
            session._mistral_cache_timeout = timeout  # type: ignore[attr-defined]
            return
        original = session.request

        @functools.wraps(original)
        def request(method: Any, url: Any, **kwargs: Any) -> Any:
            if kwargs.get("timeout") is None:
                kwargs["timeout"] = session._mistral_cache_timeout  # type: ignore[attr-defined]
            return original(method, url, **kwargs)

        session._mistral_cache_timeout = timeout  # type: ignore[attr-defined]
        setattr(session, "request", request)  # noqa: B010 (an instance attribute, on purpose)
    elif hasattr(session, "timeout") and session.timeout is None:  # a keystoneauth1 Session
        session.timeout = timeout[1] if isinstance(timeout, tuple) else timeout


# -- scope -------------------------------------------------------------------
def scope_of(client: Any, explicit: str | None = None) -> str:
    """``<tenant>@<server>``: the tenant is ``explicit``, else the client's project
    id (its own, or its keystone session's), else ``default``; the server is a hash
    of the API URL, so two Mistral servers sharing a Redis never collide either."""
    http = _http_client(client)
    base = str(getattr(http, "base_url", "") or "")
    project = explicit
    if not project:
        project = getattr(http, "project_id", None)
    if not project:
        getter = getattr(getattr(http, "session", None), "get_project_id", None)
        if callable(getter):
            try:
                project = getter()
            except Exception:  # no auth plugin, or auth failing: fall back
                project = None
    server = hashlib.sha256(base.encode()).hexdigest()[:12]
    return f"{project or 'default'}@{server}"


def _http_client(client: Any) -> Any:
    http = getattr(client, "http_client", None)
    if http is None:
        manager = getattr(client, "executions", None) or getattr(client, "workflows", None)
        http = getattr(manager, "http_client", None)
    return http


def _import(dotted: str) -> Any:
    module, _, name = dotted.rpartition(".")
    import importlib

    return getattr(importlib.import_module(module), name)


# -- the managers ------------------------------------------------------------
class CachedManager:
    """One manager of the facade: cached reads, invalidating writes, the rest delegated."""

    def __init__(self, owner: CachedMistralClient, name: str, real: Any) -> None:
        self._owner = owner
        self._name = name
        self._real = real
        self.cached_reads: dict[str, Any] = {}
        for method, spec in READS.get(name, {}).items():
            if hasattr(real, method):
                setattr(self, method, self._make_read(method, spec))
        for method, tags in WRITES.get(name, {}).items():
            if hasattr(real, method):
                setattr(self, method, self._make_write(method, tags))

    def __getattr__(self, item: str) -> Any:
        return getattr(self._real, item)

    def __repr__(self) -> str:
        return f"<CachedManager {self._name} of {self._real!r}>"

    def _make_read(self, method: str, spec: Read) -> Callable[..., Any]:
        owner, name, real_manager = self._owner, self._name, self._real
        real = getattr(real_manager, method)
        sig = inspect.signature(real)
        varkw = next((p.name for p in sig.parameters.values() if p.kind is inspect.Parameter.VAR_KEYWORD), None)
        resource = spec.policy or name
        cls = _import(spec.resource_class) if spec.resource_class else real_manager.resource_class
        api_exception = _api_exception()

        def call(params: Mapping[str, Any]) -> Any:
            kwargs = {k: v for k, v in params.items() if k != varkw}
            if varkw is not None:
                kwargs.update(params.get(varkw) or {})
            return real(**kwargs)

        def fetch(scope: str, ident: str, params: dict[str, Any]) -> Any:
            try:
                result = call(params)
            except api_exception as exc:
                if getattr(exc, "error_code", None) == 404 and spec.ident is not None:
                    return not_found_marker(getattr(exc, "error_message", None))
                raise
            if isinstance(result, list):
                return [r.to_dict() for r in result]
            return result.to_dict()

        fetch.__qualname__ = fetch.__name__ = f"{name}.{method}"
        fetch.__module__ = __name__
        if spec.ident is not None:
            tags = [f"{{scope}}|{resource}", f"{{scope}}|{resource}|id:{{ident}}"]
        else:
            tags = [f"{{scope}}|{resource}", f"{{scope}}|{resource}|list"]
        policies = owner.policies

        def key(scope: str, ident: str, params: dict[str, Any]) -> str:
            return f"mistral|{scope}|{name}.{method}|{encode_arg(params)}"

        # No XFetch early refresh for stateful reads: their short TTLs end in a state
        # change, and an early refresh racing the entry's expiry loses its conditional
        # Redis write (the final SUCCESS would then live in the local tier only).
        cached = owner.cache.cached(
            ttl=lambda value: ttl_for(resource, value, policies), key=key, tags=tags, retry=owner.retry,
            early_refresh=False if resource in STATEFUL else None,
        )(fetch)
        self.cached_reads[method] = cached

        @functools.wraps(real)
        def read(*args: Any, **kwargs: Any) -> Any:
            bound = sig.bind(*args, **kwargs)
            bound.apply_defaults()
            params = dict(bound.arguments)
            ident = str(params.get(spec.ident)) if spec.ident is not None else ""
            try:
                encode_arg(params)
            except TypeError:  # an argument without a stable key: don't cache this call
                value = fetch(owner.scope, ident, params)
            else:
                value = cached(owner.scope, ident, params)
            return owner._rebuild(self, cls, value)

        return read

    def _make_write(self, method: str, tags: Tags) -> Callable[..., Any]:
        owner, real = self._owner, getattr(self._real, method)
        sig = inspect.signature(real)

        @functools.wraps(real)
        def write(*args: Any, **kwargs: Any) -> Any:
            try:
                bound = sig.bind(*args, **kwargs)
            except TypeError:
                return real(*args, **kwargs)  # let the client raise its own error
            bound.apply_defaults()
            result = None
            try:
                result = real(*args, **kwargs)
                return result
            finally:
                # Also after a failure: the server may have applied the write anyway.
                owner.invalidate(*tags(bound.arguments, result))

        return write


class CachedMistralClient:
    """A caching facade over a python-mistralclient v2 ``Client``.

    ``client``: an existing client; else one is built from ``mistral_url`` and
    ``client_kwargs`` (``auth_type``, ``auth_url``, ``project_id``...), as
    ``mistralclient.api.client.client`` would. ``cache``: a :class:`~mistral_cache.Cache`
    (default: :func:`mistral_cache.default_cache`). ``scope``: the tenant part of every
    key (default: the client's project id, else ``"default"``). ``policies``: overrides
    of :data:`~mistral_cache.mistral.policies.DEFAULT_POLICIES`. ``retry``: the tenacity
    policy of reads that reach the server (``None``: no retry). ``timeout``: (connect,
    read) seconds put on the client's session (``None``: leave it alone).
    """

    MANAGERS = tuple(READS)

    def __init__(
        self,
        client: Any = None,
        *,
        mistral_url: str | None = None,
        cache: Any = None,
        scope: str | None = None,
        policies: Mapping[str, Policy | float] | None = None,
        retry: tenacity.BaseRetrying | None | str = "default",
        timeout: float | tuple[float, float] | None = DEFAULT_TIMEOUT,
        **client_kwargs: Any,
    ) -> None:
        if client is None:
            from mistralclient.api import client as mistral_client

            if mistral_url is not None:
                client_kwargs["mistral_url"] = mistral_url
            if timeout is not None and "session" not in client_kwargs and not client_kwargs.get("auth_url"):
                import requests

                client_kwargs["session"] = requests.Session()
            client = mistral_client.client(**client_kwargs)
        elif mistral_url is not None or client_kwargs:
            raise TypeError("pass either client= or mistral_url=/client arguments, not both")
        if cache is None:
            from .. import default_cache

            cache = default_cache()
        self.client = client
        self.cache = cache
        self.http_client = _http_client(client)
        install_timeout(getattr(self.http_client, "session", None), timeout)
        self.scope = scope_of(client, scope)
        self.policies = make_policies(policies)
        self.retry: tenacity.BaseRetrying | None = default_retry() if retry == "default" else retry  # type: ignore[assignment]
        self._managers: dict[str, CachedManager] = {}
        for name in self.MANAGERS:
            real = getattr(client, name, None)
            if real is not None:
                manager = CachedManager(self, name, real)
                self._managers[name] = manager
                setattr(self, name, manager)

    def __getattr__(self, item: str) -> Any:
        return getattr(self.client, item)

    def __repr__(self) -> str:
        return f"<CachedMistralClient scope={self.scope!r} cache={self.cache!r}>"

    def invalidate(self, *tags: str) -> None:
        """Invalidate tags of this scope: ``"workflows"`` (every workflow entry),
        ``"executions|list"``, ``"executions|id:<uuid>"``..."""
        if tags:
            self.cache.invalidate_tags(*(f"{self.scope}|{t}" for t in tags))

    def invalidate_all(self) -> None:
        """Forget every entry of this scope, of every manager."""
        self.invalidate(*self.MANAGERS)

    def _rebuild(self, manager: CachedManager, cls: Any, value: Any) -> Any:
        if is_not_found(value):
            raise _api_exception()(error_code=404, error_message=value.get("error_message"))  # type: ignore[call-arg]
        if isinstance(value, list):
            return [cls(manager, copy.deepcopy(item)) for item in value]
        return cls(manager, copy.deepcopy(value))
