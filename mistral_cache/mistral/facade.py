"""`CachedMistralClient`: a drop-in for ``mistralclient.api.v2.client.Client``.

Every manager keeps the real manager's methods and signatures. Reads (``get``,
``list``, sub-execution lists) go through the cache (:mod:`.reads`): the cached
value is the resources' ``to_dict()`` and each call hands back real ``Resource``
objects rebuilt from a copy of it. Writes pass through and then invalidate, by tag,
what they change (:mod:`.writes`, :mod:`.catalog`). Anything else is delegated to
the real manager or client.

Keys and tags carry the scope (the verified tenant and admin-ness, and the
server; see :mod:`.identity`), so tenants sharing one Redis never read each
other's entries; a caller whose identity Keystone does not confirm is passed to
the server uncached.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable, Mapping
from typing import Any

import tenacity

from ..coherence import check_tag
from ..exceptions import ConfigurationError
from .catalog import READS, WRITES
from .events.lease import watch_for
from .identity import ADMIN_ROLES, DEFAULT_PROJECT, MAX_IDENTITY_TTL, TOKENS, Identity, SessionIdentity, scope_for
from .policies import Policy, make_policies
from .reads import CachedRead, make_read
from .transport import DEFAULT_TIMEOUT, default_retry, http_client_of, install_timeout, is_requests_session
from .writes import make_write

__all__ = ["CachedManager", "CachedMistralClient"]

log = logging.getLogger("mistral_cache.mistral")


class CachedManager:
    """One manager of the facade: cached reads, invalidating writes, the rest delegated."""

    def __init__(self, owner: CachedMistralClient, name: str, real: Any) -> None:
        self._owner = owner
        self._name = name
        self._real = real
        #: The cached fetch behind each read (``stats()``, ``invalidate()``...), by method.
        self.cached_reads: dict[str, Any] = {}
        self._reads: dict[str, CachedRead] = {}
        for method, spec in READS.get(name, {}).items():
            if hasattr(real, method):
                read = make_read(owner, self, real, name, method, spec)
                self._reads[method] = read
                self.cached_reads[method] = read.cached
                setattr(self, method, read.call)
        for method, tags in WRITES.get(name, {}).items():
            if hasattr(real, method):
                setattr(self, method, make_write(getattr(real, method), tags, owner._invalidate_after_write))

    def __getattr__(self, item: str) -> Any:
        return getattr(self._real, item)

    def cache_key(self, method: str, *args: Any, **kwargs: Any) -> str:
        """The cache key (as ``Cache.invalidate`` takes it) of the read ``method(*args, **kwargs)``."""
        read = self._reads[method]
        params = read.binder.bind(args, kwargs)
        scope = self._owner.scope
        if scope is None:
            raise LookupError("no verified identity: this client's reads are not cached")
        return read.cache_key(scope, params)

    def __repr__(self) -> str:
        return f"<CachedManager {self._name} of {self._real!r}>"


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
        self.http_client = http_client_of(client)
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

    def close(self) -> None:
        """Stop reading the event stream's lease in the background (before the Redis it
        reads goes away). The client stays usable: its next cached read starts it again."""
        if self.events is not None:
            self.events.stop()

    def _choose_identity(self, explicit: str | None) -> str:
        """How this client's scope is known: explicit, anonymous, session or token."""
        http, url = self.http_client, self.mistral_url
        session = getattr(http, "session", None)
        if explicit is not None:
            self._static_scope = scope_for(explicit, url)
            return "explicit"
        if is_requests_session(session):
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
