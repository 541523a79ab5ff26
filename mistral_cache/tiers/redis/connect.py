"""Clients from URLs (standalone, ``rediss://``, ``unix://``, Cluster, Sentinel),
what kind a client is, and URLs fit to show (passwords redacted)."""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any, Final
from urllib.parse import parse_qs, unquote, urlsplit

import redis
import redis.asyncio
import redis.asyncio.cluster
import redis.asyncio.sentinel
import redis.cluster
import redis.sentinel
from redis.backoff import NoBackoff
from redis.retry import Retry

from ...exceptions import ConfigurationError

__all__ = [
    "CLUSTER_SCHEMES", "SENTINEL_SCHEMES", "client_options", "sync_client_from_url", "async_client_from_url",
    "client_kind", "is_cluster", "is_async", "topology", "redact",
]

def client_options(socket_timeout: float, connect_timeout: float) -> dict[str, Any]:
    """redis-py's own retries are switched off: ours (bounded, breaker-aware) apply."""
    return {
        "socket_timeout": socket_timeout,
        "socket_connect_timeout": connect_timeout,
        "retry": Retry(NoBackoff(), 0),
        "health_check_interval": 15,
    }


CLUSTER_SCHEMES: Final = ("redis+cluster", "rediss+cluster")
SENTINEL_SCHEMES: Final = ("redis+sentinel", "rediss+sentinel")


_HOST = re.compile(r"[A-Za-z0-9._-]+|\[[0-9A-Fa-f:.]+\]")


def _bad_url(url: str) -> ConfigurationError:
    """The one error an unreadable URL gets: parsers' own messages quote the text
    they choked on, which with an unescaped ``/`` in a password is the password."""
    return ConfigurationError(
        f"cannot parse the Redis URL {redact(url)}: percent-encode any / ? # @ : in the user name and password")


class _Topology:
    """A ``redis+cluster://`` or ``redis+sentinel://`` URL, parsed:
    ``scheme://[user:password@]host:port[,host:port...][/service[/db]][?query]``.
    Anything else (an unescaped reserved character in the password shifts every
    part) is a :class:`ConfigurationError` that shows the URL redacted."""

    def __init__(self, url: str) -> None:
        try:
            self._parse(url)
        except ValueError:
            raise _bad_url(url) from None

    def _parse(self, url: str) -> None:
        parts = urlsplit(url)
        if "@" in parts.path or "@" in parts.fragment:
            raise ValueError("an @ after the host list")
        self.scheme = parts.scheme.lower()
        self.ssl = self.scheme.startswith("rediss")
        netloc = parts.netloc
        creds, _, hosts = netloc.rpartition("@")
        self.username: str | None = None
        self.password: str | None = None
        if creds:
            user, _, password = creds.partition(":")
            self.username = unquote(user) or None
            self.password = unquote(password) or None
        self.nodes: list[tuple[str, int]] = []
        for item in hosts.split(","):
            item = item.strip()
            if not item:
                continue
            host, _, port = item.rpartition(":")
            if not host or item.endswith("]"):
                host, port = item, "26379" if self.scheme in SENTINEL_SCHEMES else "6379"
            if not _HOST.fullmatch(host) or not (port.isascii() and port.isdigit()):
                raise ValueError("not host:port")
            self.nodes.append((host.strip("[]"), int(port)))
        if not self.nodes:
            raise ValueError("no host:port")
        path = [p for p in parts.path.split("/") if p]
        self.service = path[0] if path else None
        self.db = int(path[1]) if len(path) > 1 else 0
        self.query = {k: v[-1] for k, v in parse_qs(parts.query).items()}

    def auth(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        if self.username:
            out["username"] = self.username
        if self.password:
            out["password"] = self.password
        if self.ssl:
            out["ssl"] = True
        return out


def _standalone(factory: Callable[..., Any], url: str, options: dict[str, Any]) -> Any:
    """redis-py's own URL parsing, behind :func:`_bad_url` (its ValueErrors quote the URL)."""
    try:
        if "@" in urlsplit(url).path and not url.lower().startswith("unix:"):
            raise ValueError("an @ after the host")
        return factory(url, **options)
    except ValueError:
        raise _bad_url(url) from None


def sync_client_from_url(url: str, **options: Any) -> Any:
    scheme = url.split("://", 1)[0].lower()
    if scheme in ("redis", "rediss", "unix"):
        return _standalone(redis.Redis.from_url, url, options)
    if scheme in CLUSTER_SCHEMES:
        t = _Topology(url)
        return redis.cluster.RedisCluster(
            startup_nodes=[redis.cluster.ClusterNode(h, p) for h, p in t.nodes], **t.auth(), **options
        )
    if scheme in SENTINEL_SCHEMES:
        t = _Topology(url)
        if not t.service:
            raise ConfigurationError(f"a sentinel URL names its service: {redact(url)} has no /service")
        sentinel = redis.sentinel.Sentinel(
            t.nodes, sentinel_kwargs=_sentinel_kwargs(options, t), **options, **t.auth(), db=t.db
        )
        return sentinel.master_for(t.service)
    raise ConfigurationError(f"unsupported Redis URL scheme {scheme!r} in {redact(url)}")


def async_client_from_url(url: str, **options: Any) -> Any:
    scheme = url.split("://", 1)[0].lower()
    if scheme in ("redis", "rediss", "unix"):
        return _standalone(redis.asyncio.Redis.from_url, url, options)
    if scheme in CLUSTER_SCHEMES:
        t = _Topology(url)
        opts = dict(options)  # our retry and breaker apply; the cluster client still follows MOVED/ASK
        opts.pop("retry", None)  # the asyncio cluster client takes only its own Retry semantics
        return redis.asyncio.cluster.RedisCluster(
            startup_nodes=[redis.asyncio.cluster.ClusterNode(h, p) for h, p in t.nodes], **t.auth(), **opts
        )
    if scheme in SENTINEL_SCHEMES:
        t = _Topology(url)
        if not t.service:
            raise ConfigurationError(f"a sentinel URL names its service: {redact(url)} has no /service")
        sentinel = redis.asyncio.sentinel.Sentinel(
            t.nodes, sentinel_kwargs=_sentinel_kwargs(options, t), **options, **t.auth(), db=t.db
        )
        return sentinel.master_for(t.service)
    raise ConfigurationError(f"unsupported Redis URL scheme {scheme!r} in {redact(url)}")


def _sentinel_kwargs(options: dict[str, Any], t: _Topology) -> dict[str, Any]:
    out: dict[str, Any] = {k: options[k] for k in ("socket_timeout", "socket_connect_timeout") if k in options}
    if "sentinel_password" in t.query:
        out["password"] = t.query["sentinel_password"]
    return out


_KINDS: dict[type, tuple[bool, bool, bool]] = {}


def client_kind(client: Any) -> tuple[bool, bool, bool]:
    """(sync cluster, any cluster, async) per client *type*: redis-py's client classes
    have a typing.Protocol metaclass, whose isinstance costs about half a
    microsecond, and every Redis round trip asked it several times."""
    cls = client.__class__  # not type(): a proxy reports the class it stands for
    kind = _KINDS.get(cls)
    if kind is None:
        if len(_KINDS) > 256:  # e.g. a Mock per test: keep it bounded
            _KINDS.clear()
        kind = _KINDS[cls] = (
            isinstance(client, redis.cluster.RedisCluster),
            isinstance(client, (redis.cluster.RedisCluster, redis.asyncio.cluster.RedisCluster)),
            isinstance(client, (redis.asyncio.Redis, redis.asyncio.cluster.RedisCluster)),
        )
    return kind


def is_cluster(client: Any) -> bool:
    return client_kind(client)[1]


def is_async(client: Any) -> bool:
    return client_kind(client)[2]


def topology(client: Any) -> str:
    """``cluster``, ``sentinel`` or ``standalone``."""
    if is_cluster(client):
        return "cluster"
    pool = getattr(client, "connection_pool", None)
    if isinstance(pool, (redis.sentinel.SentinelConnectionPool, redis.asyncio.sentinel.SentinelConnectionPool)):
        return "sentinel"
    return "standalone"


_SECRET_PARAM = re.compile(r"pass|pwd|secret|token|auth|credential", re.IGNORECASE)
_QUERY_PARAM = re.compile(r"([?&;])([^=&;#]*)=([^&;]*)")
_SHOWN_USER = re.compile(r"[A-Za-z0-9._~!$'()*+,%-]*")


def _hide_param(m: re.Match[str]) -> str:
    return f"{m[1]}{m[2]}=***" if _SECRET_PARAM.search(unquote(m[2])) else m[0]


def redact(url: str) -> str:
    """A URL fit for logs and output: the userinfo's password and every password-like
    query parameter (``password``, ``sentinel_password``, ...) replaced by ``***``.
    Never raises. A password with an unescaped ``@ / ? #`` makes a URL ambiguous:
    then more is hidden, never less (everything before the last ``@``)."""
    scheme, sep, rest = url.partition("://")
    if not sep:
        return _QUERY_PARAM.sub(_hide_param, url)
    rest = _QUERY_PARAM.sub(_hide_param, rest)
    creds, at, hosts = rest.rpartition("@")
    if not at:
        return f"{scheme}://{rest}"
    user = creds.split(":", 1)[0] if ":" in creds else ""
    if not _SHOWN_USER.fullmatch(user):
        user = ""  # that "@" was not the userinfo's: show nothing before it
    return f"{scheme}://{user}:***@{hosts}"
