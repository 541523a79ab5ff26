"""The Lua scripts the Redis tier runs, and how it runs them.

Their offsets into an entry come from the envelope's header layout
(:mod:`mistral_cache.serializers`), so a header change shows up here.
"""

from __future__ import annotations

import hashlib
import inspect
import os
from typing import Any

import redis.exceptions as rex

from ...serializers import WRITE_ID_OFFSET, WRITE_ID_SIZE

__all__ = ["WRITE_LUA", "ACQUIRE_LUA", "READ_OR_ACQUIRE_LUA", "READ_OR_ACQUIRE_SHA", "BUMP_LUA", "counter_start", "evalsha", "sha1"]

# Conditional write: store only if the entry still holds the write id we read
# before computing (an invalidation or a newer write replaces it, and then our
# value, computed from older data, must not land) or has expired meanwhile (an
# invalidation leaves a tombstone that outlives any locked computation, so an
# empty key means plain expiry: the RUNNING execution that was refreshed early
# must still be replaced by its SUCCESS); release our lock; announce.
WRITE_LUA = f"""
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
ACQUIRE_LUA = """
local got = redis.call('SET', KEYS[1], ARGV[1], 'NX', 'PX', ARGV[2]) or redis.call('GET', KEYS[1]) == ARGV[1]
local out = {got and 1 or 0}
for i = 2, #KEYS do out[#out + 1] = redis.call('GET', KEYS[i]) end
return out
"""


# The first read of a miss: the entry, and only if there is none (or it is one of
# ours that is a tombstone or past its created_at + ttl on the caller's clock,
# ARGV[3]) the lock, then the generations (KEYS[3..], none when the caller holds
# them). A miss is then two round trips (this, and the write). The header is
# serializers' "!2sBB8sdddI": magic, version, flags (F_TOMBSTONE = 4), write id,
# created_at, ttl.
READ_OR_ACQUIRE_LUA = """
local entry = redis.call('GET', KEYS[2])
local live = entry
if entry and string.len(entry) >= 28 and string.sub(entry, 1, 2) == 'MC' then
  local created, ttl = struct.unpack('>dd', entry, 13)
  if created + ttl <= tonumber(ARGV[3]) or math.floor(string.byte(entry, 4) / 4) % 2 == 1 then live = false end
end
local got = 0
if not live then
  got = (redis.call('SET', KEYS[1], ARGV[1], 'NX', 'PX', ARGV[2]) or redis.call('GET', KEYS[1]) == ARGV[1]) and 1 or 0
end
local out = {got, entry}
for i = 3, #KEYS do out[#out + 1] = redis.call('GET', KEYS[i]) end
return out
"""

READ_OR_ACQUIRE_SHA = hashlib.sha1(READ_OR_ACQUIRE_LUA.encode(), usedforsecurity=False).hexdigest()  # the script id Redis uses

# Bump counters (KEYS; ARGV[1] their TTL in ms, ARGV[1 + i] a random start for KEYS[i]).
# INCR and renew the TTL; a counter that did not exist (INCR made it 1) starts at its
# random value instead, so it never repeats a value an expired one had; and one that
# cannot be incremented (crafted, or at the limit) is reset the same way rather than
# failing every invalidation of its tag.
BUMP_LUA = """
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


def counter_start() -> str:
    """A random counter start in [2**32, 2**62 + 2**32): never "0" (what a missing counter reads as) and far from overflow."""
    return str((int.from_bytes(os.urandom(8), "big") >> 2) + 2**32)


def sha1(source: str) -> str:
    """The id Redis gives a script."""
    return hashlib.sha1(source.encode(), usedforsecurity=False).hexdigest()


def evalsha(c: Any, sha: str, source: str, keys: list[str], args: list[Any], loaded: set[str] | None = None) -> Any:
    """Run a script in one round trip, on either client. ``loaded``: the scripts this
    caller has run on its Redis already; one not in it is sent whole (EVAL, which
    also caches it on the server), then by id (EVALSHA). A server that lost it
    (restart, failover, SCRIPT FLUSH, another node of a cluster) answers NOSCRIPT,
    and it is sent whole again: two round trips, never three (redis-py's ``Script``
    does EVALSHA, SCRIPT LOAD, EVALSHA, and costs a few microseconds more per call)."""
    if loaded is not None and sha not in loaded:
        result = c.eval(source, len(keys), *keys, *args)
        if not inspect.isawaitable(result):
            loaded.add(sha)
            return result

        async def first() -> Any:
            out = await result
            loaded.add(sha)
            return out

        return first()
    try:
        result = c.evalsha(sha, len(keys), *keys, *args)
    except rex.NoScriptError:
        return c.eval(source, len(keys), *keys, *args)
    if not inspect.isawaitable(result):
        return result

    async def awaited() -> Any:
        try:
            return await result
        except rex.NoScriptError:
            return await c.eval(source, len(keys), *keys, *args)

    return awaited()
