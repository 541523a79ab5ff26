"""Test support that ships with the package (after dogpile.cache's ``dogpile.testing``).

- :mod:`.servers`, :mod:`.cluster`, :mod:`.sentinel`: real ``redis-server``,
  Redis Cluster and Sentinel processes on free loopback ports, with fault
  injection (kill, freeze, fail over); used by the tests, the benchmarks and
  ``mistral-cache bench``. Re-exported here.
- :mod:`.contract`: the generic contract suite every topology passes. It needs
  pytest, so it is not imported here: ``from mistral_cache.testing.contract
  import CacheContract``.

Nothing happens at import: no process, socket or atexit hook until a server is
started.
"""

from __future__ import annotations

from .cluster import RedisClusterServer
from .sentinel import RedisSentinelServer
from .servers import RedisServer
from .support import find_redis_server, free_port, seconds_until

__all__ = [
    "RedisClusterServer",
    "RedisSentinelServer",
    "RedisServer",
    "find_redis_server",
    "free_port",
    "seconds_until",
]
