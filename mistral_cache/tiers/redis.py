"""The Redis tier: key layout, clients (sync and per-loop async), and the few
commands the cache needs, each built once as an *operation* that runs on either
client.

An operation is a function of a redis-py client. redis-py's sync and asyncio
clients share method names, so ``op(client)`` returns the result on the first
and an awaitable on the second; :meth:`RedisTier.run` and :meth:`RedisTier.arun`
are the only two places that differ, and both go through the same retry policy
and circuit breaker.
"""

from __future__ import annotations

import asyncio
import functools
import hashlib
import inspect
import logging
import os
import re
import weakref
from collections.abc import Callable, Sequence
from typing import Any, Final
from urllib.parse import parse_qs, unquote, urlsplit

import redis
import redis.asyncio
import redis.asyncio.cluster
import redis.asyncio.sentinel
import redis.cluster
import redis.exceptions as rex
import redis.sentinel
import tenacity
from redis.backoff import NoBackoff
from redis.lock import Lock
from redis.retry import Retry

from ..exceptions import ConfigurationError, TierUnavailable
from ..pending import Owed, Pending
from ..resilience import CircuitBreaker, as_async, as_sync, default_redis_retry
from ..serializers import WRITE_ID_OFFSET, WRITE_ID_SIZE

log = logging.getLogger("mistral_cache.redis")


class _Failed:
    def __repr__(self) -> str:
        return "FAILED"

    def __bool__(self) -> bool:
        return False


#: Returned by run/arun when Redis failed or the breaker is open (fail open).
FAILED: Final = _Failed()

Op = Callable[[Any], Any]

# Conditional write: store only if the entry still holds the write id we read
# before computing (an invalidation or a newer write replaces it, and then our
# value, computed from older data, must not land) or has expired meanwhile (an
# invalidation leaves a tombstone that outlives any locked computation, so an
# empty key means plain expiry: the RUNNING execution that was refreshed early
# must still be replaced by its SUCCESS); release our lock; announce.
_WRITE_LUA = f"""
local cur = redis.call('GET', KEYS[1])
local curid = ''
if cur then curid = string.sub(cur, {WRITE_ID_OFFSET + 1}, {WRITE_ID_OFFSET + WRITE_ID_SIZE}) end
local wrote = 0
if ARGV[7] == '1' or not cur or curid == ARGV[1] then
  redis.call('SET', KEYS[1], ARGV[2], 'PX', ARGV[3])
  wrote = 1
end
if ARGV[4] ~= '' and redis.call('GET', KEYS[2]) == ARGV[4] then redis.call('DEL', KEYS[2]) end
if wrote == 1 and ARGV[5] ~= '' then redis.call('PUBLISH', ARGV[5], ARGV[6]) end
return wrote
"""

# Take the lock and re-read the entry in the same round trip (dogpile's
# "re-check after acquiring", without paying for it).
# A lock already holding our token is ours: the retry of a call whose reply was lost.
_ACQUIRE_LUA = """
local got = redis.call('SET', KEYS[1], ARGV[1], 'NX', 'PX', ARGV[2]) or redis.call('GET', KEYS[1]) == ARGV[1]
local out = {got and 1 or 0}
for i = 2, #KEYS do out[#out + 1] = redis.call('GET', KEYS[i]) end
return out
"""


# The first read of a miss: the entry, and only if there is none (or it is one of
# ours past its created_at + ttl on the caller's clock, ARGV[3]) the lock, then the
# generations. A miss is then two round trips (this, and the write). The header
# is serializers' "!2sBB8sdddI": magic, version, flags, write id, created_at, ttl.
_READ_OR_ACQUIRE_LUA = """
local entry = redis.call('GET', KEYS[2])
local live = entry
if entry and string.len(entry) >= 28 and string.sub(entry, 1, 2) == 'MC' then
  local created, ttl = struct.unpack('>dd', entry, 13)
  if created + ttl <= tonumber(ARGV[3]) then live = false end
end
local got = 0
if not live then
  got = (redis.call('SET', KEYS[1], ARGV[1], 'NX', 'PX', ARGV[2]) or redis.call('GET', KEYS[1]) == ARGV[1]) and 1 or 0
end
local out = {got, entry}
for i = 3, #KEYS do out[#out + 1] = redis.call('GET', KEYS[i]) end
return out
"""

_READ_OR_ACQUIRE_SHA = hashlib.sha1(_READ_OR_ACQUIRE_LUA.encode(), usedforsecurity=False).hexdigest()  # the script id Redis uses

# Bump counters (KEYS; ARGV[1] their TTL in ms, ARGV[1 + i] a random start for KEYS[i]).
# INCR and renew the TTL; a counter that did not exist (INCR made it 1) starts at its
# random value instead, so it never repeats a value an expired one had; and one that
# cannot be incremented (crafted, or at the limit) is reset the same way rather than
# failing every invalidation of its tag.
_BUMP_LUA = """
local out = {}
for i, key in ipairs(KEYS) do
  local v = redis.pcall('INCR', key)
  if type(v) ~= 'number' or v == 1 then
    v = ARGV[i + 1]
    redis.call('SET', key, v, 'PX', ARGV[1])
  else
    redis.call('PEXPIRE', key, ARGV[1])
  end
  out[i] = v
end
return out
"""


def _counter_start() -> str:
    """A random counter start in [2**32, 2**62 + 2**32): never "0" (what a missing counter reads as) and far from overflow."""
    return str((int.from_bytes(os.urandom(8), "big") >> 2) + 2**32)


def _in_order(steps: Sequence[Callable[[], Any]]) -> Any:
    """Call ``steps`` one after another (awaiting each on an asyncio client): their results."""
    out: list[Any] = []

    def step(i: int) -> Any:
        if i == len(steps):
            return out

        def then(result: Any) -> Any:
            out.append(result)
            return step(i + 1)

        return _then(steps[i](), then)

    return step(0)


def _evalsha(c: Any, sha: str, source: str, keys: list[str], args: list[Any]) -> Any:
    """EVALSHA, loading the script on NOSCRIPT: redis-py's ``Script`` objects cost
    a few microseconds more per call, which a Redis hit on this path would pay."""
    try:
        result = c.evalsha(sha, len(keys), *keys, *args)
    except rex.NoScriptError:
        c.script_load(source)
        return c.evalsha(sha, len(keys), *keys, *args)
    if not inspect.isawaitable(result):
        return result

    async def awaited() -> Any:
        try:
            return await result
        except rex.NoScriptError:
            await c.script_load(source)
            return await c.evalsha(sha, len(keys), *keys, *args)

    return awaited()


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


def _cluster_options(options: dict[str, Any]) -> dict[str, Any]:
    # Our retry (and breaker) applies; redis-py's cluster client still follows
    # MOVED/ASK itself and refreshes its slot map after a node error.
    return dict(options)


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
            startup_nodes=[redis.cluster.ClusterNode(h, p) for h, p in t.nodes], **t.auth(), **_cluster_options(options)
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
        opts = _cluster_options(options)
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


def _kind(client: Any) -> tuple[bool, bool, bool]:
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
    return _kind(client)[1]


def is_async(client: Any) -> bool:
    return _kind(client)[2]


def topology(client: Any) -> str:
    """``cluster``, ``sentinel`` or ``standalone``."""
    if is_cluster(client):
        return "cluster"
    pool = getattr(client, "connection_pool", None)
    if isinstance(pool, (redis.sentinel.SentinelConnectionPool, redis.asyncio.sentinel.SentinelConnectionPool)):
        return "sentinel"
    return "standalone"


def _cluster_mget(c: Any, keys: Sequence[str]) -> list[Any]:
    """``mget_nonatomic`` without its per-call pipeline machinery: one MGET per
    slot, written to every node involved before any reply is read (one round
    trip). Anything unusual (a redirect, a node error, an unmapped slot) falls
    back to redis-py's ``mget_nonatomic``, which follows redirects and refreshes
    the slot map."""
    groups: dict[str, tuple[Any, list[list[int]]]] = {}
    try:
        by_slot: dict[int, list[int]] = {}
        for i, k in enumerate(keys):
            by_slot.setdefault(c.keyslot(k), []).append(i)
        for slot, idx in by_slot.items():
            node = c.nodes_manager.get_node_from_slot(slot)
            entry = groups.get(node.name)
            if entry is None:
                groups[node.name] = (node, [idx])
            else:
                entry[1].append(idx)
    except (rex.RedisError, LookupError):
        return list(c.mget_nonatomic(keys))
    taken: list[tuple[Any, Any]] = []
    out: list[Any] = [None] * len(keys)
    try:
        for node, idxs in groups.values():
            pool = (node.redis_connection or c.get_redis_connection(node)).connection_pool
            conn = pool.get_connection()
            taken.append((pool, conn))
            conn.send_packed_command(conn.pack_commands([("MGET", *(keys[i] for i in idx)) for idx in idxs]))
        for (_pool, conn), (_node, idxs) in zip(taken, groups.values()):
            for idx in idxs:
                reply = conn.read_response()
                for i, value in zip(idx, reply):
                    out[i] = value
    except (rex.RedisError, OSError):
        for _pool, conn in taken:
            conn.disconnect()  # unread replies may be pending
        for pool, conn in taken:
            pool.release(conn)
        taken = []
        return list(c.mget_nonatomic(keys))
    finally:
        for pool, conn in taken:
            pool.release(conn)
    return out


def _then(first: Any, then: Callable[[Any], Any]) -> Any:
    """``then(first)`` for a sync result; a coroutine for an awaitable one."""
    if not inspect.isawaitable(first):
        return then(first)

    async def chain() -> Any:
        out = then(await first)
        return await out if inspect.isawaitable(out) else out

    return chain()


def sequence(ops: Sequence[Op]) -> Op:
    """One operation running ``ops`` in order, on either client: a replay of what is owed."""

    def op(c: Any) -> Any:
        if not is_async(c):
            return [o(c) for o in ops]

        async def run() -> list[Any]:
            out = []
            for o in ops:
                r = o(c)
                out.append(await r if inspect.isawaitable(r) else r)
            return out

        return run()

    return op


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


def _replay(first: BaseException, op: Op) -> Op:
    """``op`` for a retry policy whose first attempt already happened and raised ``first``."""
    pending = [first]

    def again(client: Any) -> Any:
        if pending:
            raise pending.pop()
        return op(client)

    return again


def _areplay(first: BaseException, op: Callable[[Any], Any]) -> Callable[[Any], Any]:
    pending = [first]

    async def again(client: Any) -> Any:
        if pending:
            raise pending.pop()
        return await op(client)

    return again


#: Longest a Redis entry is kept (TTL plus stale retention): half the counters' TTL.
MAX_ENTRY_TTL: Final = 30 * 86400.0
#: Lifetime of a tag or namespace counter after its last bump.
COUNTER_TTL: Final = 2 * MAX_ENTRY_TTL
#: Tags longer than this name their counter by SHA-256, so a key name stays small.
TAG_VERBATIM_MAX: Final = 100

_BAD_NAMESPACE = re.compile(r"[\s:{}\x00-\x1f\x7f-\x9f]")


class Keyspace:
    """Where everything lives in Redis, under ``{prefix}:{namespace}:``.

    An entry and its lock share a Redis Cluster hash slot (the hash tag is the
    cache key, so a namespace spreads over every node); the generation counters
    (namespace, tags) live in slots of their own and are read beside them.

    Injective: a namespace is one segment (no ``:``), and each kind of name its own
    segment after it (``g``, ``inv``, ``stats``, ``k:``, ``l:``, ``t:``, ``h:``), so no
    namespace, key or tag can spell another's name.

    Counters expire :data:`COUNTER_TTL` after their last bump (which starts a new
    one at a random value: :data:`_BUMP_LUA`). An entry stores the values it was
    computed under, so one stored under a counter that later expired, or came back,
    never matches it again. One stored while its counter was missing matches a
    missing counter, but lives at most :data:`MAX_ENTRY_TTL`, so it is gone before
    any counter created after it can expire.
    """

    def __init__(self, namespace: str, prefix: str = "mc") -> None:
        if not isinstance(namespace, str) or not namespace or len(namespace) > 200 or _BAD_NAMESPACE.search(namespace):
            raise ConfigurationError(
                f"namespace {namespace!r} must be 1 to 200 characters, without ':', braces, spaces or control characters")
        base = f"{prefix}:{namespace}:"
        self.base = base
        self.generation = base + "g"
        self.channel = base + "inv"

    def entry(self, key: str) -> str:
        return self.base + "k:{=" + key + "}"

    def lock(self, key: str) -> str:
        return self.base + "l:{=" + key + "}"

    def tag(self, tag: str) -> str:
        """A tag's counter; a long tag's by its SHA-256 (``h:``, which no ``t:`` name can spell)."""
        if len(tag) <= TAG_VERBATIM_MAX:
            return self.base + "t:" + tag
        return self.base + "h:" + hashlib.sha256(tag.encode("utf-8", "surrogatepass")).hexdigest()


class RedisTier:
    """Fail-open access to one Redis deployment, shared by every wrapper of a Cache."""

    name = "redis"

    def __init__(
        self,
        url: str | None = None,
        *,
        client: Any = None,
        async_client: Any = None,
        breaker: CircuitBreaker | None = None,
        retry: tenacity.BaseRetrying | None = None,
        socket_timeout: float = 0.25,
        connect_timeout: float = 0.25,
        strict: bool = False,
        on_error: Callable[[BaseException], None] | None = None,
    ) -> None:
        if url is None and client is None and async_client is None:
            raise ConfigurationError("RedisTier needs a URL or a client")
        self.url = url
        self._options = client_options(socket_timeout, connect_timeout)
        self._client = client
        self._given_async = async_client
        self._async_clients: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, Any] = weakref.WeakKeyDictionary()
        self._pid = os.getpid()
        self.breaker = breaker or CircuitBreaker()
        policy = retry or default_redis_retry()
        self._retry = as_sync(policy)
        self._aretry = as_async(policy)
        self.strict = strict
        self._on_error = on_error
        self._scripts: weakref.WeakKeyDictionary[Any, dict[str, Any]] = weakref.WeakKeyDictionary()
        self._pending: Pending | None = None
        self._settle_op: Callable[[Owed], Op] = lambda owed: sequence(())

    def owe(self, pending: Pending, settle: Callable[[Owed], Op]) -> None:
        """Before every command, send ``settle(owed)`` for what ``pending`` records, and
        send nothing else until Redis acknowledged it: a replayed invalidation must
        land before this process reads or writes anything it covers."""
        self._pending, self._settle_op = pending, settle

    @property
    def can_probe(self) -> bool:
        """A background probe needs a sync client (a URL or one given)."""
        return self.url is not None or self._client is not None

    # -- clients ---------------------------------------------------------
    @functools.cached_property
    def topology(self) -> str:
        """``cluster``, ``sentinel`` or ``standalone``, without opening a connection."""
        given = self._client if self._client is not None else self._given_async
        if given is not None:
            return topology(given)
        scheme = urlsplit(self.url or "").scheme
        return "cluster" if scheme in CLUSTER_SCHEMES else "sentinel" if scheme in SENTINEL_SCHEMES else "standalone"

    def client(self) -> Any:
        """The sync client, created on first use (and again in a forked child)."""
        if self._client is None or (self.url is not None and self._pid != os.getpid()):
            if self.url is None:
                raise ConfigurationError("this cache was given only an asyncio Redis client; call it from async code")
            self._client = sync_client_from_url(self.url, **self._options)
            self._pid = os.getpid()
        return self._client

    def async_client(self) -> Any:
        """One asyncio client per event loop: redis-py's async connections belong to the loop that made them."""
        if self._given_async is not None:
            return self._given_async
        loop = asyncio.get_running_loop()
        client = self._async_clients.get(loop)
        if client is None:
            if self.url is None:
                raise ConfigurationError(
                    "this cache was given only a sync Redis client; pass async_redis= or a URL for async code"
                )
            client = async_client_from_url(self.url, **self._options)
            self._async_clients[loop] = client
        return client

    def script(self, client: Any, source: str) -> Any:
        per_client = self._scripts.get(client)
        if per_client is None:
            per_client = self._scripts[client] = {}
        script = per_client.get(source)
        if script is None:
            script = per_client[source] = client.register_script(source)
        return script

    # -- running operations ---------------------------------------------
    def _failed(self, exc: BaseException, what: str) -> Any:
        self.breaker.failure()
        log.warning("redis %s failed: %s: %s", what, type(exc).__name__, exc)
        if self._on_error is not None:
            self._on_error(exc)
        if self.strict:
            raise TierUnavailable(f"redis {what} failed: {exc}", tier="redis") from exc
        return FAILED

    def _closed(self) -> Any:
        if self.strict:
            raise TierUnavailable("redis circuit breaker is open", tier="redis")
        return FAILED

    def _settle(self, client: Any) -> None:
        pending = self._pending
        owed = pending.snapshot() if pending is not None else None
        if owed is not None and pending is not None:
            self._retry(self._settle_op(owed), client)
            pending.settle(owed)

    async def _asettle(self, client: Any) -> None:
        pending = self._pending
        owed = pending.snapshot() if pending is not None else None
        if owed is not None and pending is not None:
            op = self._settle_op(owed)

            async def attempt(c: Any) -> Any:
                result = op(c)
                return await result if inspect.isawaitable(result) else result

            await self._aretry(attempt, client)
            pending.settle(owed)

    def probe(self) -> bool:
        """PING past the breaker and settle what is owed; close the breaker if both
        succeed. A background thread calls this while Redis is sick, so recovery
        follows Redis answering, not the breaker's reset timer."""
        try:
            client = self.client()
            client.ping()
            self._settle(client)
        except (rex.RedisError, OSError, ConfigurationError):
            return False
        self.breaker.success()
        return True

    def run(self, op: Op, what: str = "command") -> Any:
        if not self.breaker.allow():
            return self._closed()
        pending = self._pending
        try:
            client = self.client()
            if pending is not None and pending.owed:
                self._settle(client)
            try:
                result = op(client)  # the common case, without tenacity's per-call bookkeeping
            except (rex.RedisError, OSError) as first:
                result = self._retry(_replay(first, op), client)  # the policy sees `first` as attempt 1
        except (rex.RedisError, OSError) as exc:
            return self._failed(exc, what)
        self.breaker.success()
        return result

    async def arun(self, op: Op, what: str = "command") -> Any:
        if not self.breaker.allow():
            return self._closed()
        pending = self._pending

        async def attempt(c: Any) -> Any:
            result = op(c)
            return await result if inspect.isawaitable(result) else result

        try:
            client = self.async_client()
            if pending is not None and pending.owed:
                await self._asettle(client)
            try:
                result: Any = await attempt(client)
            except (rex.RedisError, OSError) as first:
                result = await self._aretry(_areplay(first, attempt), client)
        except (rex.RedisError, OSError) as exc:
            return self._failed(exc, what)
        self.breaker.success()
        return result

    # -- operations ------------------------------------------------------
    @staticmethod
    def read(keys: Sequence[str]) -> Op:
        """One round trip: the entry, the generations it depends on, the lock.

        On a cluster the entry and its lock share a slot and the generations
        live elsewhere: redis-py's ``mget_nonatomic`` sends one MGET per slot,
        pipelined per node."""

        def op(c: Any) -> Any:
            sync_cluster, cluster, _ = _kind(c)
            if sync_cluster:
                return _cluster_mget(c, keys)
            return c.mget_nonatomic(keys) if cluster else c.mget(keys)

        return op

    def read_or_acquire(self, lock_key: str, token: bytes, timeout_ms: int, now: float, keys: Sequence[str]) -> Op:
        """:meth:`read`, taking the lock in the same round trip when the entry is
        absent or expired at ``now``: ``[got, entry, *generations]``. On a cluster
        (the generations live in other slots) it is a plain read with ``got`` 0."""

        def op(c: Any) -> Any:
            if is_cluster(c):
                return _then(self.read(keys)(c), lambda res: [0, *res])
            return _evalsha(c, _READ_OR_ACQUIRE_SHA, _READ_OR_ACQUIRE_LUA, [lock_key, *keys], [token, timeout_ms, repr(float(now))])

        return op

    def acquire(self, lock_key: str, token: bytes, timeout_ms: int, keys: Sequence[str]) -> Op:
        """Take the lock and re-read ``keys`` (the entry first, then generations):
        ``[got, entry, *generations]``. On a cluster the script touches only the
        lock and the entry (one slot); the generations are read right after it."""

        def op(c: Any) -> Any:
            if not is_cluster(c):
                return self.script(c, _ACQUIRE_LUA)(keys=[lock_key, *keys], args=[token, timeout_ms])
            got = self.script(c, _ACQUIRE_LUA)(keys=[lock_key, keys[0]], args=[token, timeout_ms])
            # redis-py refuses EVAL in a cluster pipeline: the generations follow in a second round trip
            # (read after the lock is taken: the newest a computation can depend on).
            return _then(got, lambda g: _then(c.mget_nonatomic(keys[1:]) if len(keys) > 1 else [], lambda gens: [*g, *gens]))

        return op

    def write(
        self,
        entry_key: str,
        lock_key: str,
        data: bytes,
        px: int,
        *,
        expected: bytes | None,
        token: bytes | None,
        announce: tuple[str, str] | None,
    ) -> Op:
        """Conditional (``expected`` write id) or forced (``expected=None``) write,
        lock release and announcement in one round trip. Returns 1 if written."""
        channel, message = announce or ("", "")
        args = [expected or b"", data, px, token or b"", channel, message, "1" if expected is None else "0"]
        return lambda c: self.script(c, _WRITE_LUA)(keys=[entry_key, lock_key], args=args)

    @staticmethod
    def put_and_announce(entry_key: str, data: bytes, px: int, channel: str, message: str, wait_ms: int = 0) -> Op:
        """SET and PUBLISH in one round trip; with ``wait_ms``, a Redis WAIT for one
        replica last in the same pipeline (WAIT only covers its own connection's
        writes). The last element of the result is then the replicas that acked."""

        def op(c: Any) -> Any:
            if is_cluster(c):
                return _then(c.set(entry_key, data, px=px), lambda _: c.publish(channel, message))
            pipe = c.pipeline(transaction=False)
            pipe.set(entry_key, data, px=px)
            pipe.publish(channel, message)
            if wait_ms:
                pipe.wait(1, wait_ms)
            return pipe.execute()

        return op

    @staticmethod
    def bump_and_announce(counters: Sequence[str], channel: str, message: str, wait_ms: int = 0) -> Op:
        """Bump the counters (:data:`_BUMP_LUA`) and PUBLISH; ``wait_ms`` as in
        :meth:`put_and_announce`. Returns the counters' new values, then PUBLISH's
        (and WAIT's) replies."""

        def op(c: Any) -> Any:
            ttl_ms = int(COUNTER_TTL * 1000)
            starts = [_counter_start() for _ in counters]
            if is_cluster(c):  # one slot per counter, and no EVAL or PUBLISH in a cluster pipeline
                steps = [functools.partial(c.eval, _BUMP_LUA, 1, k, ttl_ms, s) for k, s in zip(counters, starts)]
                return _then(_in_order(steps), lambda res: _then(
                    c.publish(channel, message), lambda n: [*(v for r in res for v in r), n]))
            pipe = c.pipeline(transaction=False)
            if counters:
                pipe.eval(_BUMP_LUA, len(counters), *counters, ttl_ms, *starts)
            pipe.publish(channel, message)
            if wait_ms:
                pipe.wait(1, wait_ms)
            return _then(pipe.execute(), lambda res: [*res[0], *res[1:]] if counters else res)

        return op

    def release(self, lock_key: str, token: bytes) -> Op:
        """Token-checked release, with redis-py's own Lock script (0 if the lock was lost)."""
        return lambda c: self.script(c, Lock.LUA_RELEASE_SCRIPT)(keys=[lock_key], args=[token])

    def reacquire(self, lock_key: str, token: bytes, timeout_ms: int) -> Op:
        """Reset a held lock's expiry (redis-py's Lock script); 0 if it was lost meanwhile."""
        return lambda c: self.script(c, Lock.LUA_REACQUIRE_SCRIPT)(keys=[lock_key], args=[token, timeout_ms])
