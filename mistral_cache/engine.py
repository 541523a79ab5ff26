"""The call path of one decorated function, written once.

:meth:`Engine.flow` decides what to do and yields the I/O it needs (see
:mod:`.flow`); the wrappers drive it with blocking calls or with ``await``. It is
composed of small steps, each a sub-generator over one :class:`Attempt`:

- :meth:`~Engine._read`: the entry and its generations (and, when this process's
  own value has expired, the lock, in the same round trip); a fresh entry is a hit;
- :meth:`~Engine._lock`: the Redis lock with a re-read of the entry; a caller that
  loses the race waits for the winner's value (:meth:`~Engine._wait`);
- :meth:`~Engine._compute`: the function, with stale-if-error;
- :meth:`~Engine._store`: a conditional write (only over the entry read before
  computing), the lock's release and the announcement, in one round trip.

It is longer than the project's 400-line aim on purpose: the steps share one
:class:`Attempt` and their order is the cache's correctness argument, which
reads best in one place.
"""

from __future__ import annotations

import asyncio
import enum
import inspect
import logging
import os
import time
from collections.abc import Callable, Sequence
from typing import Any

import tenacity

from .api import NO_VALUE, TTLPolicy
from .coherence import check_tag
from .entries import generations, meta_problem, write_id
from .exceptions import ConfigurationError, KeyBuildError, LockTimeout, SerializationError
from .flow import Background, Flow, FnCall, RedisCall, Sleep
from .keys import KeyBuilder, format_template, template_fields
from .observability.stats import Stats
from .policies import EarlyRefresh, RedisLock, StaleIfError, check_ttl, ttl_seconds
from .resilience import as_async, as_sync
from .runtime import Runtime
from .serializers import Envelope
from .stampede import soft_deadline, xfetch_due
from .tiers.local import LocalEntry, approx_size
from .tiers.redis import FAILED, MAX_ENTRY_TTL, Op

__all__ = ["Attempt", "Engine", "Mode"]

log = logging.getLogger("mistral_cache")

#: How fast :attr:`Engine.absent` follows the first reads' outcomes (weight of the newest).
ABSENT_WEIGHT = 1 / 16
#: Above this share of first reads finding no live entry, a miss reads and locks in one
#: script. The script costs ~4-7 us more than a GET or MGET on a hit (pinned, one
#: CPU); a plain read that finds nothing costs a whole extra round trip (~35 us)
#: for the lock: the script pays off from about one such read in seven.
ABSENT_LIKELY = 0.15


class Mode(enum.Enum):
    """Why a flow runs."""

    MISS = "miss"  # nothing fresh in this process
    EARLY = "early"  # XFetch chose this caller to refresh a value it still holds
    BACKGROUND = "background"  # the same, in the background (stale-while-revalidate)
    REFRESH = "refresh"  # fn.refresh(): recompute and overwrite


class Attempt:
    """The state one flow carries from step to step (built by :meth:`Engine.attempt`)."""

    __slots__ = ("key", "args", "kwargs", "mode", "held", "background", "started", "since", "tags", "entry_key",
                 "lock_key", "gen_keys", "gens", "raw", "expected", "current", "stale", "token", "locked", "prev",
                 "first", "read_at", "pending", "held_gens", "epoch")

    since: int
    tags: tuple[str, ...]
    entry_key: str
    lock_key: str
    gen_keys: list[str]

    def __init__(self, key: str, args: tuple[Any, ...], kwargs: dict[str, Any], mode: Mode, held: LocalEntry | None) -> None:
        self.key, self.args, self.kwargs, self.held = key, args, kwargs, held
        self.background = mode is Mode.BACKGROUND
        self.mode = Mode.EARLY if self.background else mode
        self.started = time.perf_counter()
        self.gens: list[str] | None = None
        self.raw: bytes | None = None
        self.expected = b""
        self.current: Envelope | None = None  # a fresh value we may hand out while someone else refreshes
        self.stale: Any = NO_VALUE
        self.token: bytes | None = None
        self.locked = False
        self.prev: Envelope | None = None  # the latest entry seen, fresh or not: a TTL policy learns from its meta
        self.first: Any = None  # the first read's reply, as [entry, *generations] (take_first), and when
        self.read_at = 0.0
        self.pending: bytes | None = None  # the lock token the first read may take (read_or_acquire)
        self.held_gens: list[Any] | None = None  # counter values held here, when the first read is a GET
        self.epoch = 0  # of the held counters, before the first read (Generations.store)

    def keeping(self) -> Any:
        """What an early refresher hands out while another caller refreshes."""
        if self.current is not None:
            return self.current.value
        return self.held.value if self.held is not None else self.stale


class Engine:
    """Everything one decorated function needs to answer a call."""

    def __init__(
        self,
        runtime: Runtime,
        fn: Callable[..., Any],
        *,
        ttl: Any,
        key: str | Callable[..., str] | None,
        tags: Sequence[str],
        exclude: Sequence[str],
        version: str | int | None,
        lock: RedisLock | None,
        refresh: EarlyRefresh | None,
        stale: StaleIfError | None,
        retry: tenacity.BaseRetrying | None,
        should_cache: Callable[[Any], bool] | None,
        local: bool,
    ) -> None:
        self.fn = fn
        self.name = f"{fn.__module__}.{fn.__qualname__}"
        self.is_async = inspect.iscoroutinefunction(fn)
        check_ttl(ttl, self.name)
        self.ttl = ttl
        self.keys = KeyBuilder(fn, key, exclude=exclude)
        self.prefix = f"v{version}:" if version is not None else ""
        names = set(self.keys.binder.names)
        for template in tags:
            unknown = template_fields(template) - names
            if unknown:
                raise ConfigurationError(f"{self.name}: tag {template!r} names unknown parameters {sorted(unknown)}")
        self.tag_templates = tuple(tags)
        self.runtime = runtime
        self.lock, self.refresh, self.stale = lock, refresh, stale
        self.stale_seconds = stale.seconds if stale is not None else 0.0
        self.retry = (as_async(retry) if self.is_async else as_sync(retry)) if retry is not None else None
        self.should_cache = should_cache
        self.local = runtime.local if local else None
        self.redis = runtime.redis
        self.stats = Stats()
        self.policy = ttl if isinstance(ttl, TTLPolicy) else None  # a context-aware TTL (api.TTLPolicy)
        if self.policy is not None:
            self.stats = self.policy.bind(self.name, self.stats)
        runtime.register(self)
        self._warned_size = False
        #: The share of recent first reads of keys not held here that found no live
        #: entry in Redis (a moving average, updated without a lock: an estimate).
        #: Starts at 1: a process's first misses take 2 round trips.
        self.absent = 1.0
        self._gen_keys = [runtime.keyspace.generation]

    # -- keys ------------------------------------------------------------
    def key(self, args: tuple[Any, ...], kwargs: dict[str, Any]) -> str:
        return self.prefix + self.keys.build(args, kwargs)

    def tags(self, args: tuple[Any, ...], kwargs: dict[str, Any], bound: dict[str, Any] | None = None) -> tuple[str, ...]:
        """``bound``: the arguments bound already (the wrapper's key build), or None."""
        if not self.tag_templates:
            return ()
        if bound is None:
            bound = self.keys.binder.bind(args, kwargs)
        tags = tuple(format_template(t, bound, self.name) for t in self.tag_templates)
        for tag in tags:
            try:
                check_tag(tag)  # invalidate_tags refuses it: an entry it could never reach is not stored
            except ConfigurationError as exc:
                raise KeyBuildError(f"{self.name}: {exc}") from None
        return tags

    # -- the local tier ---------------------------------------------------
    def _fill(self, key: str, value: Any, created_at: float, ttl: float, compute_time: float,
              tags: tuple[str, ...], since: int, size: int) -> None:
        local = self.local
        if local is None:
            return
        rt = self.runtime
        local_ttl = rt.settings.local_ttl
        expires = created_at + ttl
        local_expires = min(expires, rt.timer() + local_ttl) if local_ttl else expires
        refresh = self.refresh
        soft = min(local_expires, soft_deadline(expires, compute_time, refresh.beta)) if refresh is not None else local_expires
        entry = LocalEntry(
            value, created_at=created_at, ttl=ttl, expires_at=local_expires, soft_at=soft,
            stale_until=expires + self.stale_seconds, compute_time=compute_time, tags=tags, size=size,
        )
        local.put(key, entry, since)

    def local_lookup(self, entry: LocalEntry | None) -> tuple[Any, Mode | None, LocalEntry | None]:
        """What to do with the local tier's ``entry`` for a call (None: it holds none),
        which the wrapper looked up already: (value, None, entry) to return now, or
        (NO_VALUE, mode of the flow to run, entry)."""
        if entry is None:
            return NO_VALUE, Mode.MISS, None
        now = self.runtime.timer()
        if now < entry.soft_at:
            self.stats.local_hits += 1
            return entry.value, None, entry
        if now < entry.expires_at:
            refresh = self.refresh
            if refresh is not None and entry.soft_at < entry.expires_at and xfetch_due(
                now, entry.created_at + entry.ttl, entry.compute_time, refresh.beta
            ):
                return NO_VALUE, Mode.EARLY, entry
            self.stats.local_hits += 1
            return entry.value, None, entry
        return NO_VALUE, Mode.MISS, entry

    # -- the flow ---------------------------------------------------------
    def attempt(self, key: str, args: tuple[Any, ...], kwargs: dict[str, Any], mode: Mode, held: LocalEntry | None,
                bound: dict[str, Any] | None = None) -> Attempt:
        rt = self.runtime
        a = Attempt(key, args, kwargs, mode, held)
        a.since = self.local.begin() if self.local is not None else 0
        ks = rt.keyspace
        a.entry_key, a.lock_key = ks.entry(key), ks.lock(key)
        if self.tag_templates:
            a.tags = self.tags(args, kwargs, bound)
            a.gen_keys = [ks.generation, *(ks.tag(t) for t in a.tags)]
        else:  # no tags: the namespace counter alone, one list for every call (never mutated)
            a.tags, a.gen_keys = (), self._gen_keys
        if held is not None and rt.timer() < held.stale_until:
            a.stale = held.value
        return a

    # -- the first read ---------------------------------------------------------
    def reads_first(self, mode: Mode | None) -> bool:
        """Whether the wrappers may do the flow's first read themselves (every miss in
        this process; see :meth:`first_read` and :meth:`pre_read`), so a Redis hit pays
        for no generator, driver or flow step."""
        return self.redis is not None and mode is Mode.MISS

    def first_read(self, a: Attempt) -> Op:
        """The flow's first Redis read, one round trip whatever it finds:

        - a miss here (``MISS``) that probably finds no live entry in Redis (the value
          held here passed its TTL; or, for a key not held here, most recent such reads
          of this function found none: :attr:`absent`) reads and takes the lock in one
          script, so a miss is 2 round trips, this and the write;
        - any other miss, probably a Redis hit, reads plainly: one GET of the entry
          when the generations are held (:mod:`.generations`), else an MGET of the
          entry and its generations, whose values are then held;
        - other modes (early, background, refresh) read entry and generations.

        The lock, when taken, is the same one :meth:`_lock` takes (same script
        semantics, re-read included); its token is ``a.pending`` until the reply says."""
        assert self.redis is not None
        rt, redis, lock, held = self.runtime, self.redis, self.lock, a.held
        a.read_at = now = rt.timer()
        if a.mode is not Mode.MISS:
            return redis.read([a.entry_key, *a.gen_keys])
        store = rt.generations
        values = a.held_gens = store.lookup(a.gen_keys) if store.enabled else None
        if values is None:
            a.epoch = store.epoch()
        if lock is not None and (self.absent >= ABSENT_LIKELY if held is None else now >= held.created_at + held.ttl):
            token = a.pending = os.urandom(16)
            keys = [a.entry_key] if values is not None else [a.entry_key, *a.gen_keys]
            return redis.read_or_acquire(a.lock_key, token, int(lock.timeout * 1000), now, keys)
        if values is not None:
            return redis.get(a.entry_key)
        return redis.read([a.entry_key, *a.gen_keys])

    def read_lost(self, a: Attempt) -> None:
        """The first read raised: a lock it may have taken on the server (its reply
        lost) is owed a token-checked release."""
        if a.pending is not None:
            self.runtime.invalidator.owe_release(a.lock_key, a.pending)

    def take_first(self, a: Attempt, res: Any) -> None:
        """Record :meth:`first_read`'s reply on ``a``: ``a.first`` as ``[entry,
        *generations]`` (or FAILED), the lock if it was taken, the entry decoded once."""
        token = a.pending
        if res is FAILED:
            a.first = res
            self.read_lost(a)
            return
        values = a.held_gens
        if token is not None:  # the script: [got, entry, *generations read]
            a.locked = res[0] == 1
            a.token = token if a.locked else None
            res = res[1:]
        elif values is not None:  # a GET: the entry alone
            res = [res]
        if values is not None:
            res = [res[0], *values]
        elif a.mode is Mode.MISS:
            store = self.runtime.generations
            if store.enabled:  # store() checks again under its lock
                store.store(a.gen_keys, res[1:], a.epoch)
        a.first = res
        a.raw, a.gens = res[0], generations(res[1:])
        a.expected = write_id(a.raw)
        env = a.prev = self._decode(a.raw, a.gens, a)
        if a.held is None and a.mode is Mode.MISS:  # the predictor of first_read
            live = 0.0 if env is None or a.read_at >= env.expires_at else 1.0
            self.absent += (1.0 - live - self.absent) * ABSENT_WEIGHT

    def pre_read(self, a: Attempt, res: Any) -> Any:
        """Judge the first read done by the wrappers: the value on a clean Redis hit
        (the common case, so it pays for no generator, driver or flight), else NO_VALUE,
        and ``a`` carries the read into :meth:`flow` (no second round trip)."""
        self.take_first(a, res)
        env = a.prev
        if env is None:
            return NO_VALUE
        now = max(self.runtime.timer(), a.read_at)
        refresh = self.refresh
        if now < env.expires_at and not (refresh is not None and xfetch_due(now, env.expires_at, env.compute_time, refresh.beta)):
            return self._hit(a, env)
        return NO_VALUE

    def flow(self, key: str, args: tuple[Any, ...], kwargs: dict[str, Any], mode: Mode, held: LocalEntry | None,
             a: Attempt | None = None, bound: dict[str, Any] | None = None) -> Flow:
        """``a``: an attempt whose plain read was done already (:meth:`pre_read`);
        ``bound``: the arguments bound already, if the key's build bound them."""
        rt = self.runtime
        if a is None:
            a = self.attempt(key, args, kwargs, mode, held, bound)
        if self.redis is not None:
            rt.ensure_listener()
            done, value = yield from self._read(a)
            if done:
                return value
            if a.gens is not None:  # Redis answered
                done, value = yield from self._lock(a)
                if done:
                    return value
        done, value, compute_time = yield from self._compute(a)
        if done:
            return value
        try:
            yield from self._store(a, value, compute_time)
        except BaseException:
            # should_cache, a TTL policy or the serializer raised: free the lock now, not
            # after lock_timeout (the release is token-checked, so a second one is harmless).
            if a.token is not None:
                yield from self._unlock(a.lock_key, a.token)
            raise
        self.stats.latency["miss"].add(time.perf_counter() - a.started)
        return value

    def _read(self, a: Attempt) -> Flow:
        """(done, value): a hit, a value to keep serving, or (False, None) to go on."""
        rt = self.runtime
        assert self.redis is not None
        held = a.held
        if a.first is None:  # not read by the wrappers already
            op = self.first_read(a)
            try:
                res = yield RedisCall(op, "lock" if a.pending is not None else "read")
            except BaseException:
                self.read_lost(a)
                raise
            self.take_first(a, res)
        if a.first is FAILED:
            return False, None
        read_at = a.read_at
        env = a.prev
        now = max(rt.timer(), read_at)  # a clock stepping back must not undo what the script judged
        refresh = self.refresh
        if env is not None:
            if now < env.expires_at:
                newer = held is None or env.created_at > held.created_at
                if a.mode is Mode.MISS and not (refresh is not None and xfetch_due(now, env.expires_at, env.compute_time, refresh.beta)):
                    return True, self._hit(a, env)
                if a.mode is Mode.EARLY and newer:
                    return True, self._hit(a, env)
                a.current = env
                if a.mode is Mode.MISS:
                    a.mode = Mode.EARLY
            elif now < env.expires_at + self.stale_seconds:
                a.stale = env.value
        if a.mode is Mode.EARLY and refresh is not None and refresh.background and not a.background:
            current = a.current
            yield Background(held if current is None else LocalEntry(
                current.value, created_at=current.created_at, ttl=current.ttl,
                expires_at=current.expires_at, soft_at=current.expires_at,
                stale_until=current.expires_at + self.stale_seconds,
            ))
            return True, a.keeping()
        return False, None

    def _lock(self, a: Attempt) -> Flow:
        """Take the Redis lock (re-reading the entry in the same script), or wait for
        the holder's value. (done, value) as :meth:`_read`."""
        lock = self.lock
        if lock is None or a.mode is Mode.REFRESH or a.locked:
            return False, None
        assert self.redis is not None
        token = os.urandom(16)
        acq = yield from self._lock_call(self.redis.acquire(
            a.lock_key, token, int(lock.timeout * 1000), [a.entry_key, *a.gen_keys]), a.lock_key, token)
        if acq is FAILED:
            return False, None
        env = a.prev
        new_gens = generations(acq[2:])
        if acq[1] != a.raw or new_gens != a.gens:  # unchanged bytes need no second decode
            env = self._decode(acq[1], new_gens, a)
            a.prev = env or a.prev
        a.gens = new_gens
        current = a.current
        fresh = env is not None and self.runtime.timer() < env.expires_at
        if acq[0] == 1:
            a.token = token
            if fresh and env is not None and (current is None or env.created_at > current.created_at):
                yield from self._unlock(a.lock_key, token)
                a.token = None
                return True, self._hit(a, env)
            a.expected = write_id(acq[1])
            return False, None
        if fresh and env is not None and (a.mode is Mode.MISS or current is None or env.created_at > current.created_at):
            return True, self._hit(a, env)
        if a.mode is Mode.EARLY:  # someone else is refreshing: keep serving
            return True, a.keeping()
        return (yield from self._wait(a, lock))

    def _wait(self, a: Attempt, lock: RedisLock) -> Flow:
        """Another process computes: poll the key (bounded, backing off) for its value,
        take over if its lock goes away, compute ourselves after ``lock.wait``."""
        assert self.redis is not None
        rt = self.runtime
        self.stats.lock_waits += 1
        deadline = time.monotonic() + lock.wait
        delay = 0.002
        a.expected = b""
        while True:
            yield Sleep(delay)
            delay = min(delay * 1.5, 0.05)
            res = yield RedisCall(self.redis.read([a.entry_key, *a.gen_keys, a.lock_key]), "read")
            if res is FAILED:
                return False, None
            env = self._decode(res[0], generations(res[1:-1]), a)
            if env is not None and rt.timer() < env.expires_at:
                return True, self._hit(a, env)
            if res[-1] is None:  # the holder finished without a value, or died and its lock expired
                token = os.urandom(16)
                acq = yield from self._lock_call(self.redis.acquire(
                    a.lock_key, token, int(lock.timeout * 1000), [a.entry_key, *a.gen_keys]), a.lock_key, token)
                if acq is FAILED:
                    return False, None
                if acq[0] == 1:
                    a.token, a.expected = token, write_id(acq[1])
                    # The generations read with the lock, not the first read's: an
                    # invalidation since then would make our value one nobody can read
                    # (stored under the old counters), and every waiter would compute again.
                    a.gens = generations(acq[2:])
                    env = self._decode(acq[1], a.gens, a)
                    if env is not None:
                        a.prev = env
                        if rt.timer() < env.expires_at:  # stored since our last poll
                            yield from self._unlock(a.lock_key, token)
                            a.token = None
                            return True, self._hit(a, env)
                    return False, None
            if time.monotonic() >= deadline:
                self.stats.lock_timeouts += 1
                if lock.on_timeout == "raise":
                    raise LockTimeout(f"{self.name}: waited {lock.wait}s for another caller's value", key=a.key, tier="redis")
                log.warning("%s: lock wait over %.1fs; computing without the lock", self.name, lock.wait)
                return False, None

    def _compute(self, a: Attempt) -> Flow:
        """(done, value, compute time): the function's value to store, or (True, a
        value kept or served stale) after it failed."""
        t0 = time.perf_counter()
        try:
            value = yield FnCall(a.lock_key, a.token)
        except Exception as exc:
            self.stats.compute_errors += 1
            if a.token is not None:
                yield from self._unlock(a.lock_key, a.token)
            if a.mode is Mode.EARLY:  # XFetch picked this caller to refresh a value that has not expired yet
                held = a.held
                keep = a.current.value if a.current is not None else (
                    held.value if held is not None and self.runtime.timer() < held.expires_at else NO_VALUE)
                if keep is not NO_VALUE:
                    log.warning("%s: early refresh failed, keeping the current value: %s: %s", self.name, type(exc).__name__, exc)
                    return True, keep, 0.0
            fallback = a.current.value if a.current is not None else a.stale
            if fallback is not NO_VALUE and self.stale is not None and self.stale_seconds and self.stale.on(exc):
                self.stats.stale_served += 1
                log.warning("%s: serving a stale value after %s: %s", self.name, type(exc).__name__, exc)
                return True, fallback, 0.0
            raise
        except (asyncio.CancelledError, KeyboardInterrupt):
            # the caller gave up mid-computation: free the lock now, not after lock_timeout
            if a.token is not None:
                yield from self._unlock(a.lock_key, a.token)
            raise
        self.stats.computes += 1
        if a.mode is Mode.EARLY:
            self.stats.early_refreshes += 1
        elif a.mode is Mode.MISS:
            self.stats.misses += 1
        return False, value, time.perf_counter() - t0

    def _store(self, a: Attempt, value: Any, compute_time: float) -> Flow:
        rt, redis = self.runtime, self.redis
        key, token = a.key, a.token
        cacheable = self.should_cache is None or self.should_cache(value)
        now = rt.timer()
        extra: dict[str, Any] = {}
        retain = 0.0
        if not cacheable:
            ttl = 0.0
        elif self.policy is not None:
            prev_meta = a.prev.meta if a.prev is not None else None
            ttl, extra_meta, retain = self.policy.decide(value, key=key, meta=prev_meta, now=now, name=self.name)
            extra = dict(extra_meta)
        else:
            ttl = ttl_seconds(self.ttl, value, self.name)
        size = 1
        wrote = False
        if redis is not None and ttl > 0 and a.gens is not None:
            try:
                data = rt.codec.encode(value, created_at=now, ttl=ttl, compute_time=compute_time,
                                       meta={**extra, "g": a.gens}, key=a.entry_key)
            except SerializationError as exc:
                raise SerializationError(f"{self.name}: result not cacheable: {exc}", key=key, tier="redis") from exc
            except ValueError as exc:
                self.stats.rejected += 1
                if not self._warned_size:
                    self._warned_size = True
                    log.warning("%s: not caching: %s", self.name, exc)
                ttl = 0.0
            else:
                size = len(data)
                announce = (rt.keyspace.channel, rt.invalidator.message("k", key)) if a.mode is not Mode.MISS else None
                # Bounded, so the entry expires before the counters it depends on (Keyspace).
                px = max(1, int(min(MAX_ENTRY_TTL, ttl + max(self.stale_seconds, retain)) * 1000))
                result = yield RedisCall(redis.write(
                    a.entry_key, a.lock_key, data, px,
                    expected=None if a.mode is Mode.REFRESH else a.expected, token=token, announce=announce,
                ), "write")
                wrote = result == 1
        if token is not None and not wrote and redis is not None:
            yield from self._unlock(a.lock_key, token)
        a.token = None
        if ttl > 0:
            if redis is None and rt.settings.local_max_bytes:
                size = approx_size(value)
            self._fill(key, value, now, ttl, compute_time, a.tags, a.since, size)

    def _hit(self, a: Attempt, env: Envelope) -> Any:
        if self.local is not None:
            self._fill(a.key, env.value, env.created_at, env.ttl, env.compute_time, a.tags, a.since, 1)
        self.stats.redis_hits += 1
        self.stats.latency["redis_hit"].add(time.perf_counter() - a.started)
        return env.value

    def _decode(self, raw: bytes | None, gens: list[str], a: Attempt) -> Envelope | None:
        """The entry, or None for a miss: absent, unreadable, a tombstone, computed
        under other generations, or older than an invalidation Redis has not yet
        acknowledged (this process must not serve what it asked to drop)."""
        if raw is None:
            return None
        try:
            env = self.runtime.codec.decode(raw, key=a.entry_key)
            meta = env.meta
            # The common case: a value stored under exactly these generations (a list
            # equal to ``gens``, all str, is what meta_problem accepts); else the details.
            if env.tombstone or type(meta) is not dict or meta.get("g") != gens:
                problem = meta_problem(meta, len(gens), env.tombstone)
                if problem:
                    raise SerializationError(problem)
                if env.tombstone or meta["g"] != gens:
                    return None
        except SerializationError as exc:
            self.stats.corrupt += 1
            log.warning("%s: discarding an unreadable Redis entry: %s", self.name, exc)
            return None
        pending = self.runtime.pending
        if pending.owed and pending.blocks(a.key, a.tags, env.created_at):
            self.stats.pending_misses += 1
            return None
        return env

    # -- locks whose reply was lost -------------------------------------------
    def _lock_call(self, op: Op, lock_key: str, token: bytes) -> Flow:
        """A lock request whose reply is lost may still have taken the lock on the
        server (a frozen Redis runs it when it wakes): owe a token-checked release."""
        try:
            res = yield RedisCall(op, "lock")
        except BaseException:
            self.runtime.invalidator.owe_release(lock_key, token)
            raise
        if res is FAILED:
            self.runtime.invalidator.owe_release(lock_key, token)
        return res

    def _unlock(self, lock_key: str, token: bytes) -> Flow:
        assert self.redis is not None
        try:
            done = yield RedisCall(self.redis.release(lock_key, token), "unlock")
        except BaseException:
            self.runtime.invalidator.owe_release(lock_key, token)
            raise
        if done is FAILED:
            self.runtime.invalidator.owe_release(lock_key, token)

    def invalidate_flow(self, key: str) -> Flow:
        self.stats.invalidations += 1
        return (yield from self.runtime.invalidator.key(key))
