"""`CachedMistralClient`: a drop-in for ``mistralclient.api.v2.client.Client``.

Every manager keeps the real manager's methods and signatures. Reads (``get``,
``list``, sub-execution lists) go through the cache: the cached value is the
resources' ``to_dict()`` and each call hands back real ``Resource`` objects
rebuilt from a copy of it. Writes pass through and then invalidate, by tag,
what they change. Anything else is delegated to the real manager or client.

Keys and tags carry the scope (the verified tenant and admin-ness, and the
server; see :mod:`.identity`), so tenants sharing one Redis never read each
other's entries; a caller whose identity Keystone does not confirm is passed to
the server uncached.
"""

from __future__ import annotations

import copy
import functools
import inspect
import logging
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import tenacity

from ..coherence import check_tag
from ..exceptions import ConfigurationError
from ..keys import encode_arg
from ..policies import INHERIT
from .events.lease import lease_tag, watch_for
from .events.mapping import ANY
from .identity import ADMIN_ROLES, DEFAULT_PROJECT, MAX_IDENTITY_TTL, TOKENS, Identity, SessionIdentity, scope_for
from .policies import STATEFUL, Policy, event_backed, is_not_found, make_policies, not_found_marker, resource_ttl

__all__ = [
    "Tags",
    "DEFAULT_TIMEOUT",
    "Read",
    "READS",
    "WRITES",
    "is_transient",
    "default_retry",
    "install_timeout",
    "CachedManager",
    "CachedMistralClient",
]

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
    list_filter: tuple[str, str] | None = None  # (parameter, tag name): lists tagged by that filter's value


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
        "list": Read(list_filter=("workflow_execution_id", "wx")),
        "get_task_sub_executions": Read(policy="executions", resource_class="mistralclient.api.v2.executions.Execution"),
    },
    "action_executions": {"get": Read("id"), "list": Read(list_filter=("task_execution_id", "task"))},
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
def _refused(exc: BaseException) -> bool:
    """Mistral answered with a 4xx: the write was not applied."""
    code = getattr(exc, "error_code", None)
    return isinstance(exc, _api_exception()) and isinstance(code, int) and 400 <= code < 500


def _api_exception() -> type[Exception]:
    from mistralclient.api.base import APIException

    cls: type[Exception] = APIException
    return cls


def is_transient(exc: BaseException) -> bool:
    """Worth retrying an idempotent read: a connection failure, a timeout, a 5xx
    (requests' own, or keystoneauth's when the client talks through a session)."""
    import requests

    if isinstance(exc, (requests.ConnectionError, requests.Timeout)):
        return True
    try:  # keystoneauth1 comes with python-mistralclient; imported here, not at import time
        from keystoneauth1.exceptions import RetriableConnectionFailure
    except ImportError:  # pragma: no cover
        pass
    else:
        if isinstance(exc, RetriableConnectionFailure):
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
def _is_requests_session(session: Any) -> bool:
    import requests

    return session is None or isinstance(session, requests.Session)


def _mistral_not_found(exc: BaseException) -> bool:
    """A 404 that Mistral itself answered. mistralclient turns any keystoneauth HTTP
    error into ``APIException`` -- Keystone's "token not found" during a session's
    re-authentication too, with no message, as Mistral's own 404s always have one."""
    if getattr(exc, "error_code", None) != 404:
        return False
    message = getattr(exc, "error_message", None)
    if not isinstance(message, str) or not message.strip():
        return False
    lowered = message.lower()
    return "token" not in lowered or "not found" not in lowered and "could not" not in lowered


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


def _copy(value: Any) -> Any:
    """A deep copy of JSON data (dicts, lists, immutable leaves), several times faster than
    ``copy.deepcopy``: a caller mutating a returned resource never touches the cached value."""
    if value.__class__ is dict:
        out = value.copy()
        for k, v in value.items():
            if v.__class__ in _CONTAINERS:
                out[k] = _copy(v)
        return out
    if value.__class__ is list:
        return [_copy(v) if v.__class__ in _CONTAINERS else v for v in value]
    return copy.deepcopy(value)


_CONTAINERS = (dict, list)
_SIMPLE = (str, int, bool, float, type(None))


def _builder(cls: Any) -> Callable[[Any, dict[str, Any]], Any]:
    """``cls(manager, data)``, without its per-key ``setattr`` loop when the class keeps
    the base behaviour (no defaults, no custom ``_set_attributes``): the same object."""
    from mistralclient.api.base import Resource

    plain = (
        getattr(cls, "_set_attributes", None) is Resource._set_attributes
        and getattr(cls, "_set_defaults", None) is Resource._set_defaults
        and not getattr(cls, "defaults", None)
        and getattr(cls, "__init__", None) is Resource.__init__
        and not any(isinstance(v, property) for k in dir(cls) for v in [getattr(cls, k, None)])
    )
    if not plain:
        return cls  # type: ignore[no-any-return]
    new = object.__new__

    def build(manager: Any, data: dict[str, Any]) -> Any:
        obj = new(cls)
        state = obj.__dict__
        state["manager"] = manager
        state["_data"] = data
        state.update(data)
        return obj

    return build


class _Binder:
    """Binds a manager method's arguments to a dict of all its parameters, defaults
    applied and ``**filters`` kept as one dict under their own name; TypeError as
    Python would raise it. (``inspect.Signature.bind`` costs several microseconds.)"""

    def __init__(self, fn: Callable[..., Any]) -> None:
        self.signature = inspect.signature(fn)
        params = list(self.signature.parameters.values())
        kinds = {p.kind for p in params}
        self.simple = not kinds & {inspect.Parameter.VAR_POSITIONAL, inspect.Parameter.POSITIONAL_ONLY, inspect.Parameter.KEYWORD_ONLY}
        self.varkw = next((p.name for p in params if p.kind is inspect.Parameter.VAR_KEYWORD), None)
        self.names = tuple(p.name for p in params if p.kind is inspect.Parameter.POSITIONAL_OR_KEYWORD)
        self.defaults = {p.name: p.default for p in params if p.default is not inspect.Parameter.empty}
        self.required = frozenset(n for n in self.names if n not in self.defaults)
        self.known = frozenset(self.names)
        self.order = tuple(self.signature.parameters)

    def bind(self, args: tuple[Any, ...], kwargs: dict[str, Any]) -> dict[str, Any]:
        if not self.simple or len(args) > len(self.names):
            return self._slow(args, kwargs)
        params = dict(self.defaults)
        params.update(zip(self.names, args))
        extra: dict[str, Any] = {}
        for name, value in kwargs.items():
            if name in self.known:
                if name in self.names[:len(args)]:
                    return self._slow(args, kwargs)
                params[name] = value
            elif self.varkw is not None:
                extra[name] = value
            else:
                return self._slow(args, kwargs)
        if not self.required <= params.keys():
            return self._slow(args, kwargs)
        if self.varkw is not None:
            params[self.varkw] = extra
        return params

    def encode(self, params: dict[str, Any]) -> str:
        """A stable text of the bound arguments (TypeError if one has none)."""
        parts = []
        for name in self.order:
            value = params.get(name)
            parts.append(repr(value) if value.__class__ in _SIMPLE else encode_arg(value))
        return ",".join(parts)

    def _slow(self, args: tuple[Any, ...], kwargs: dict[str, Any]) -> dict[str, Any]:
        bound = self.signature.bind(*args, **kwargs)  # raises TypeError as a call would
        bound.apply_defaults()
        return dict(bound.arguments)


# -- the managers ------------------------------------------------------------
class CachedManager:
    """One manager of the facade: cached reads, invalidating writes, the rest delegated."""

    def __init__(self, owner: CachedMistralClient, name: str, real: Any) -> None:
        self._owner = owner
        self._name = name
        self._real = real
        self.cached_reads: dict[str, Any] = {}
        self._binders: dict[str, _Binder] = {}
        for method, spec in READS.get(name, {}).items():
            if hasattr(real, method):
                setattr(self, method, self._make_read(method, spec))
        for method, tags in WRITES.get(name, {}).items():
            if hasattr(real, method):
                setattr(self, method, self._make_write(method, tags))

    def __getattr__(self, item: str) -> Any:
        return getattr(self._real, item)

    def cache_key(self, method: str, *args: Any, **kwargs: Any) -> str:
        """The cache key (as ``Cache.invalidate`` takes it) of the read ``method(*args, **kwargs)``."""
        binder = self._binders[method]
        params = binder.bind(args, kwargs)
        scope = self._owner.scope
        if scope is None:
            raise LookupError("no verified identity: this client's reads are not cached")
        return str(self.cached_reads[method].cache_key(scope, "", binder.encode(params), params))

    def __repr__(self) -> str:
        return f"<CachedManager {self._name} of {self._real!r}>"

    def _make_read(self, method: str, spec: Read) -> Callable[..., Any]:
        owner, name, real_manager = self._owner, self._name, self._real
        real = getattr(real_manager, method)
        binder = _Binder(real)
        varkw = binder.varkw
        resource = spec.policy or name
        cls = _builder(_import(spec.resource_class) if spec.resource_class else real_manager.resource_class)
        api_exception = _api_exception()

        def call(params: Mapping[str, Any]) -> Any:
            kwargs = {k: v for k, v in params.items() if k != varkw}
            if varkw is not None:
                kwargs.update(params.get(varkw) or {})
            return real(**kwargs)

        def fetch(scope: str, ident: str, encoded: str, params: dict[str, Any]) -> Any:
            try:
                result = call(params)
            except api_exception as exc:
                if spec.ident is not None and _mistral_not_found(exc):
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
            if spec.list_filter is not None:  # so that an event clears only the lists it changes
                tags.append(f"{{scope}}|{resource}|list|{spec.list_filter[1]}:{{ident}}")
        policies = owner.policies
        ttl = resource_ttl(resource, policies)
        watch = owner.events
        if watch is not None and resource in STATEFUL:
            tags.append(lease_tag(owner.mistral_url))  # dropped when the event stream's epoch ends
            ttl = event_backed(ttl, watch)
        prefix = f"{name}.{method}|"

        def key(scope: str, ident: str, encoded: str, params: dict[str, Any]) -> str:
            return f"mistral|{scope}|{prefix}{encoded}"

        # No XFetch early refresh for stateful reads: their short TTLs end in a state
        # change anyway. Observed with it on (tests/mistral/test_facade.py, polling test):
        # the final SUCCESS of a polled execution reached the local tier but never Redis
        # (the early refresh's conditional write lost to the RUNNING entry's expiry?).
        cached = owner.cache.cached(
            ttl=ttl, key=key, tags=tags, retry=owner.retry,
            refresh=None if resource in STATEFUL else INHERIT,
        )(fetch)
        self.cached_reads[method] = cached
        self._binders[method] = binder
        rebuild = owner._rebuild
        list_filter = spec.list_filter[0] if spec.list_filter is not None else None

        @functools.wraps(real)
        def read(*args: Any, **kwargs: Any) -> Any:
            if watch is not None and not watch.started:
                watch.ensure()
            scope = owner._static_scope or owner._verified_scope()
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
                encoded = binder.encode(params)
            except TypeError:  # an argument without a stable key: don't cache this call
                value = fetch(scope, ident, "", params)
            else:
                value = cached(scope, ident, encoded, params)
            return rebuild(self, cls, value)

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
            try:
                result = real(*args, **kwargs)
            except Exception as exc:
                # A definite refusal (4xx) changed nothing: invalidating would let any
                # caller flush entries with writes the server rejects. Anything else (a
                # timeout, a reset, a 5xx) may have been applied: invalidate.
                if not _refused(exc):
                    owner._invalidate_after_write(list(tags(bound.arguments, None)), None)
                raise
            owner._invalidate_after_write(list(tags(bound.arguments, result)), result)
            return result

        return write


class CachedMistralClient:
    """A caching facade over a python-mistralclient v2 ``Client``.

    ``client``: an existing client; else one is built from ``mistral_url`` and
    ``client_kwargs`` (``auth_type``, ``auth_token``, ``username``...), as
    ``mistralclient.api.client.client`` would. ``cache``: a :class:`~mistral_cache.Cache`
    (default: :func:`mistral_cache.default_cache`). ``policies``: overrides of
    :data:`~mistral_cache.mistral.policies.DEFAULT_POLICIES`. ``retry``: the tenacity
    policy of reads that reach the server (``None``: no retry). ``timeout``: (connect,
    read) seconds put on the client's session (``None``: leave it alone).

    The scope (README, "Tenant scopes") comes from verified identity: a keystoneauth
    session's confirmed project; for a bare ``auth_token``, its project as Keystone at
    ``auth_url`` validates it (the token is passed to Mistral as is, never re-issued);
    no credentials at all: Mistral's own ``"<default-project>"``. A bare token without
    ``auth_url`` is refused (:class:`~mistral_cache.ConfigurationError`) unless ``scope=``
    names the tenant explicitly (the caller vouches for it). ``admin_roles``: the roles
    that make Mistral show a token every project (Mistral 23: ``admin``).
    ``identity_ttl``: how long a confirmed identity is trusted before Keystone is asked
    again (capped at 300 s, keystonemiddleware's ``token_cache_time``, and at the
    token's expiry).
    """

    MANAGERS = tuple(READS)

    def __init__(
        self,
        client: Any = None,
        *,
        mistral_url: str | None = None,
        cache: Any = None,
        scope: str | None = None,
        auth_url: str | None = None,
        admin_roles: Iterable[str] = ADMIN_ROLES,
        identity_ttl: float = MAX_IDENTITY_TTL,
        policies: Mapping[str, Policy | float] | None = None,
        retry: tenacity.BaseRetrying | None | str = "default",
        timeout: float | tuple[float, float] | None = DEFAULT_TIMEOUT,
        **client_kwargs: Any,
    ) -> None:
        if client is None:
            from mistralclient.api import client as mistral_client

            if mistral_url is not None:
                client_kwargs["mistral_url"] = mistral_url
            rescoping = any(client_kwargs.get(k) for k in ("session", "project_id", "project_name", "username", "user_id"))
            if auth_url is not None and (rescoping or not client_kwargs.get("auth_token")):
                client_kwargs["auth_url"] = auth_url  # keystoneauth logs in: a session, confirmed by Keystone
            elif auth_url is None and client_kwargs.get("auth_token") and client_kwargs.get("auth_url") and not rescoping:
                auth_url = client_kwargs.pop("auth_url")  # a bare token: passed through, validated for the scope
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
        self.mistral_url = str(getattr(self.http_client, "base_url", "") or "")
        self.auth_url = auth_url
        self.admin_roles = frozenset(admin_roles)
        self.identity_ttl = min(float(identity_ttl), MAX_IDENTITY_TTL)
        self._static_scope: str | None = None
        self._identity_kind = self._choose_identity(scope)
        self._memo: tuple[Any, Identity, str] | None = None
        self.policies = make_policies(policies)
        #: The event stream's lease as this process sees it (None: no Redis, state rules only).
        self.events = watch_for(cache, self.mistral_url) if self.mistral_url else None
        self.retry: tenacity.BaseRetrying | None = default_retry() if retry == "default" else retry  # type: ignore[assignment]
        self._managers: dict[str, CachedManager] = {}
        for name in self.MANAGERS:
            real = getattr(client, name, None)
            if real is not None:
                manager = CachedManager(self, name, real)
                self._managers[name] = manager
                setattr(self, name, manager)

    def _choose_identity(self, explicit: str | None) -> str:
        """How this client's scope is known: explicit, anonymous, session or token."""
        http, url = self.http_client, self.mistral_url
        session = getattr(http, "session", None)
        if explicit is not None:
            self._static_scope = scope_for(explicit, url)
            return "explicit"
        if _is_requests_session(session):
            if not getattr(http, "auth_token", None):
                # No credentials: Mistral answers (auth off) as "<default-project>", or refuses (401).
                self._static_scope = scope_for(DEFAULT_PROJECT, url)
                return "anonymous"
            if not self.auth_url:
                raise ConfigurationError(
                    "CachedMistralClient: an auth_token without auth_url has no verifiable project; pass "
                    "auth_url= (the Keystone that issued it) or scope= (the tenant, if you vouch for it)"
                )
            return "token"
        if getattr(session, "auth", None) is None:
            self._static_scope = scope_for(DEFAULT_PROJECT, url)
            return "anonymous"
        self._session_identity = SessionIdentity(session, admin_roles=self.admin_roles, ttl=self.identity_ttl)
        return "session"

    def identity(self) -> Identity | None:
        """The verified identity behind the scope now (None: explicit/anonymous, or unconfirmed)."""
        kind = self._identity_kind
        if kind == "session":
            return self._session_identity.current()
        if kind == "token":
            token = self.http_client.auth_token
            memo = self._memo
            if memo is not None and memo[0] is token and time.monotonic() < memo[1].trusted_until:
                return memo[1]
            if not token:
                return None
            timeout = getattr(getattr(self.http_client, "session", None), "_mistral_cache_timeout", None) or DEFAULT_TIMEOUT
            identity = TOKENS.lookup(token, str(self.auth_url), admin_roles=self.admin_roles, ttl=self.identity_ttl, timeout=timeout)
            if identity is not None:  # a failed lookup keeps the last confirmed one, for invalidation only
                self._memo = (token, identity, scope_for(identity.project_id, self.mistral_url, admin=identity.admin))
            return identity
        return None

    def _verified_scope(self) -> str | None:
        """The scope of the identity Keystone confirms now, None if it confirms none."""
        if self._identity_kind == "token":
            memo = self._memo
            if memo is not None and memo[0] is self.http_client.auth_token and time.monotonic() < memo[1].trusted_until:
                return memo[2]
        identity = self.identity()
        if identity is None:
            return self._static_scope
        memo = self._memo
        if memo is not None and memo[1] is identity:
            return memo[2]
        scope = scope_for(identity.project_id, self.mistral_url, admin=identity.admin)
        if self._identity_kind == "session":
            self._memo = (None, identity, scope)
        return scope

    @property
    def scope(self) -> str | None:
        """The scope reads are cached under now (None: identity not confirmed, nothing cached)."""
        return self._static_scope or self._verified_scope()

    def __getattr__(self, item: str) -> Any:
        return getattr(self.client, item)

    def __repr__(self) -> str:
        return f"<CachedMistralClient identity={self._identity_kind} cache={self.cache!r}>"

    def invalidate(self, *tags: str) -> None:
        """Invalidate tags of this scope: ``"workflows"`` (every workflow entry),
        ``"executions|list"``, ``"executions|id:<uuid>"``..."""
        scope = self.scope
        if tags and scope is not None:
            self.cache.invalidate_tags(*(f"{scope}|{t}" for t in tags))

    def invalidate_all(self) -> None:
        """Forget every entry of this scope, of every manager."""
        self.invalidate(*self.MANAGERS)

    def _invalidate_after_write(self, tags: list[str], result: Any) -> None:
        """A write changes what its project's members see and what every admin sees:
        invalidate both scopes (and, for an admin writing into another project, that
        project's, when the result names it)."""
        if not tags:
            return
        scopes = set()
        if self._identity_kind in ("session", "token"):
            identity = self.identity()
            if identity is None and self._memo is not None:
                # Unconfirmed now, yet Mistral's own token cache may have accepted the
                # write: invalidate for the identity last confirmed (extra is harmless).
                identity = self._memo[1]
            if identity is None:
                return  # never confirmed: nothing of this caller was ever cached
            scopes.add(scope_for(identity.project_id, self.mistral_url))
            scopes.add(scope_for(identity.project_id, self.mistral_url, admin=True))
            owner_project = getattr(result, "project_id", None)
            if isinstance(owner_project, str) and owner_project:
                scopes.add(scope_for(owner_project, self.mistral_url))
        elif self._static_scope is not None:
            scopes.add(self._static_scope)
        valid = []
        for tag in (f"{scope}|{t}" for scope in sorted(scopes) for t in tags):
            try:
                check_tag(tag)
            except ConfigurationError:  # an identifier no read could have been cached under
                log.warning("not invalidating a tag built from an invalid identifier")
                continue
            valid.append(tag)
        if valid:
            self.cache.invalidate_tags(*valid)

    def _rebuild(self, manager: CachedManager, cls: Any, value: Any) -> Any:
        if is_not_found(value):
            raise _api_exception()(error_code=404, error_message=value.get("error_message"))  # type: ignore[call-arg]
        if isinstance(value, list):
            return [cls(manager, _copy(item)) for item in value]
        return cls(manager, _copy(value))
