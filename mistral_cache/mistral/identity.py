"""Tenant scopes from verified identity.

Mistral shows a request the resources of the project its Keystone token is
scoped to, and everything to a token carrying the ``admin`` role (Mistral 23:
``context.is_admin = 'admin' in roles``, and every read of an admin context
drops the project filter). So a cache entry may only be served to a caller whose
*verified* project and admin-ness equal the ones it was fetched with. This
module turns credentials into that pair, and the pair into a scope:

- :func:`scope_for` is the one mapping from (project id, admin?, Mistral URL) to
  a scope; the facade and anything else that must name the same entries (an
  events receiver, given an event's ``project_id``) use it.
- A keystoneauth session or plugin: the project and roles Keystone returned when
  it issued the token, trusted for at most :data:`MAX_IDENTITY_TTL` seconds, then
  confirmed again by a fresh authentication.
- A bare token plus ``auth_url``: ``GET /v3/auth/tokens`` (the token validating
  itself), remembered per token for at most ``min(token expiry, 300 s)`` --
  keystonemiddleware's own ``token_cache_time``, so nothing is served longer than
  Mistral itself would accept a revoked token.
- A token Keystone rejects, or an identity that cannot be confirmed, gives no
  scope: the facade then passes the call to the server uncached.
"""

from __future__ import annotations

import datetime
import hashlib
import hmac
import logging
import re
import secrets
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

__all__ = [
    "DEFAULT_PROJECT",
    "ADMIN_ROLES",
    "MAX_IDENTITY_TTL",
    "KEYSTONE_DOWN_BACKOFF",
    "ADMIN_SCOPE",
    "server_id",
    "scope_for",
    "Identity",
    "trusted_until",
    "TokenIdentities",
    "TOKENS",
    "SessionIdentity",
]

log = logging.getLogger("mistral_cache.mistral")

#: The project Mistral gives every request when its authentication is off.
DEFAULT_PROJECT = "<default-project>"
#: Roles that make a Mistral 23 context ``is_admin`` (hard-coded in mistral/context.py).
ADMIN_ROLES = frozenset({"admin"})
#: Longest time a confirmed identity is trusted without asking Keystone again:
#: keystonemiddleware's default ``token_cache_time``.
MAX_IDENTITY_TTL = 300.0
#: After Keystone fails to answer, seconds during which reads pass through uncached
#: without trying it again.
KEYSTONE_DOWN_BACKOFF = 1.0
#: The single scope of every admin: an admin context reads all projects.
ADMIN_SCOPE = "*admin"

_SAFE = re.compile(r"[A-Za-z0-9_.<>-]{1,64}\Z")


def server_id(mistral_url: str) -> str:
    """A short hash of the API URL (trailing ``/`` ignored): two servers never share entries."""
    return hashlib.sha256(mistral_url.rstrip("/").encode()).hexdigest()[:12]


def scope_for(project_id: str, mistral_url: str, *, admin: bool = False) -> str:
    """The cache scope of a Mistral project as Mistral sees it.

    ``project_id``: the project of a validated token, or :data:`DEFAULT_PROJECT`
    for a server without authentication (what its events carry). ``admin``: the
    caller's token has an admin role; every admin shares one scope per server,
    whatever its project, because Mistral shows an admin every project's
    resources. A project id that is not a short plain identifier is hashed, so
    no value can forge a separator (``@``, ``|``) or the admin scope.
    """
    server = server_id(mistral_url)
    if admin:
        return f"{ADMIN_SCOPE}@{server}"
    if not project_id:
        raise ValueError("a scope needs a project id")
    tenant = project_id if _SAFE.match(project_id) else "h-" + hashlib.sha256(project_id.encode()).hexdigest()[:32]
    return f"{tenant}@{server}"


@dataclass(frozen=True)
class Identity:
    """What Keystone confirmed about a token, and until when it may be trusted (monotonic)."""

    project_id: str
    admin: bool
    trusted_until: float


def _parse_expiry(value: Any) -> float | None:
    """Seconds from now until an ISO-8601 / datetime expiry (None: unknown)."""
    if value is None:
        return None
    if isinstance(value, str):
        try:
            value = datetime.datetime.fromisoformat(value.replace("Z", "+00:00"))
        except ValueError:
            return None
    if not isinstance(value, datetime.datetime):
        return None
    if value.tzinfo is None:
        value = value.replace(tzinfo=datetime.timezone.utc)
    delta: float = (value - datetime.datetime.now(datetime.timezone.utc)).total_seconds()
    return delta


def trusted_until(validated_at: float, expires_at: float, ttl: float) -> float:
    """When a validation stops being trusted: ``ttl`` after it (never more than 300 s),
    and never past the token's expiry."""
    return min(validated_at + min(ttl, MAX_IDENTITY_TTL), expires_at)


@dataclass(frozen=True)
class _Validated:
    """Keystone's answer about one token, as remembered (monotonic times)."""

    project_id: str
    roles: frozenset[str]
    validated_at: float
    expires_at: float


class TokenIdentities:
    """Process-wide memory of validated bare tokens: (Keystone URL, token) digest ->
    Keystone's answer, from which each caller's :class:`Identity` is derived with its
    own ``admin_roles`` and ``ttl`` (a facade asking for 1 s is never handed a 300 s one).

    Tokens are held only as an HMAC under a per-process random key, so a dump of
    this memory reveals no token. Bounded in entries (oldest dropped first)."""

    def __init__(self, maxsize: int = 10_000, clock: Callable[[], float] = time.monotonic) -> None:
        self._key = secrets.token_bytes(32)
        self._entries: OrderedDict[bytes, _Validated] = OrderedDict()
        self._lock = threading.Lock()
        self._maxsize = maxsize
        self._clock = clock
        self._down_until: dict[str, float] = {}  # Keystone URL -> no retry before (monotonic)
        self.validations = 0  # requests sent to Keystone (observable in tests and stats)

    def _digest(self, auth_url: str, token: str) -> bytes:
        return hmac.new(self._key, f"{auth_url}\n{token}".encode(), hashlib.sha256).digest()

    def lookup(
        self, token: str, auth_url: str, *, admin_roles: Iterable[str] = ADMIN_ROLES, ttl: float = MAX_IDENTITY_TTL,
        timeout: Any = (3.05, 10.0), session: Any = None,
    ) -> Identity | None:
        """The token's identity, from memory while trusted, else from Keystone (None: rejected or unknown)."""
        digest = self._digest(auth_url, token)
        now = self._clock()
        with self._lock:
            known = self._entries.get(digest)
        if known is None or now >= trusted_until(known.validated_at, known.expires_at, ttl):
            if now < self._down_until.get(auth_url, 0.0):
                return None  # Keystone just failed to answer: no connect timeout per read meanwhile
            known = self._validate(token, auth_url, timeout, session)
            with self._lock:
                if known is None:
                    self._entries.pop(digest, None)
                    return None
                self._entries[digest] = known
                self._entries.move_to_end(digest)
                while len(self._entries) > self._maxsize:
                    self._entries.popitem(last=False)
        admin = bool(known.roles & frozenset(admin_roles))
        return Identity(known.project_id, admin, trusted_until(known.validated_at, known.expires_at, ttl))

    def forget_all(self) -> None:
        with self._lock:
            self._entries.clear()

    def _validate(self, token: str, auth_url: str, timeout: Any, session: Any) -> _Validated | None:
        import requests

        self.validations += 1
        url = auth_url.rstrip("/")
        if not url.endswith("/v3"):
            url += "/v3"
        http = session if session is not None else requests
        try:
            resp = http.get(
                url + "/auth/tokens", headers={"X-Auth-Token": token, "X-Subject-Token": token}, timeout=timeout,
            )
        except requests.RequestException as exc:
            log.warning("Keystone at %s did not answer a token validation (%s): not caching", url, type(exc).__name__)
            self._down_until[auth_url] = self._clock() + KEYSTONE_DOWN_BACKOFF
            return None
        if resp.status_code in (401, 403, 404):
            log.debug("Keystone rejected a token (%d): not caching", resp.status_code)
            return None
        if resp.status_code != 200:
            log.warning("Keystone token validation answered %d: not caching", resp.status_code)
            return None
        try:
            body = resp.json()["token"]
            project = body.get("project") or {}
            project_id = project.get("id")
            roles = frozenset(str(r.get("name")) for r in body.get("roles") or ())
            expires_in = _parse_expiry(body.get("expires_at"))
        except (ValueError, KeyError, TypeError, AttributeError):
            log.warning("Keystone token validation returned an unexpected body: not caching")
            return None
        if not isinstance(project_id, str) or not project_id:
            return None  # unscoped or domain-scoped: Mistral has no project for it
        now = self._clock()
        return _Validated(project_id, roles, now, now + expires_in if expires_in is not None else float("inf"))


#: The memory every facade shares, so a web app building one facade per request
#: validates each token once per trust window, not once per request.
TOKENS = TokenIdentities()


class SessionIdentity:
    """The identity of a keystoneauth session's auth plugin: the project and roles
    Keystone returned with the token, re-confirmed by a fresh authentication once
    the trust window has passed: at most 300 s after Keystone issued the token (a
    session shared for an hour is not trusted for an hour), at most its life."""

    def __init__(
        self, session: Any, *, admin_roles: Iterable[str] = ADMIN_ROLES, ttl: float = MAX_IDENTITY_TTL,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.session = session
        self.admin_roles = frozenset(admin_roles)
        self.ttl = ttl
        self.clock = clock
        self._ref: Any = None
        self._identity: Identity | None = None

    def current(self) -> Identity | None:
        """Confirmed identity, or None when Keystone cannot confirm one now (raises nothing)."""
        now = self.clock()
        auth = getattr(self.session, "auth", None)
        if auth is None:
            return None
        identity = self._identity
        ref = getattr(auth, "auth_ref", None)
        if identity is not None and ref is self._ref and now < identity.trusted_until:
            return identity
        try:
            if identity is not None and ref is self._ref:
                auth.invalidate()  # trust window over: ask Keystone again
            access = auth.get_access(self.session)
            window = self._window(access)
            if window <= 0:  # a token issued longer ago than the window: a fresh one
                auth.invalidate()
                access = auth.get_access(self.session)
                window = self._window(access)
        except Exception as exc:  # any keystoneauth failure: no verified identity now
            log.info("no verified Keystone identity (%s): not caching", type(exc).__name__)
            self._identity = None
            return None
        project_id = getattr(access, "project_id", None)
        if not isinstance(project_id, str) or not project_id or window <= 0:
            self._identity = None
            return None
        roles = set(getattr(access, "role_names", None) or ())
        identity = Identity(project_id, bool(roles & self.admin_roles), now + window)
        self._ref = getattr(auth, "auth_ref", access)
        self._identity = identity
        return identity

    def _window(self, access: Any) -> float:
        """Seconds this access may still be trusted: ttl from its issue, and not past its expiry."""
        window = min(self.ttl, MAX_IDENTITY_TTL)
        issued_ago = _parse_expiry(getattr(access, "issued", None))
        if issued_ago is not None:
            window += min(issued_ago, 0.0)  # issued N s ago: N s of the window are spent
        expires_in = _parse_expiry(getattr(access, "expires", None))
        if expires_in is not None:
            window = min(window, expires_in)
        return window
