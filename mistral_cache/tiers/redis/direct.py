"""A Redis hit's GET/MGET on a pool connection kept between hits.

Why: redis-py 8 spends more on a command than the command costs. ``Redis.get``
runs its retry wrapper (ours are off in redis-py: ``client_options``), operation
metrics and closures, ~5 us; the pool's checkout (its lock, connection-count
metrics, health probing) ~7 us more. Pinned, a loopback GET: 23 us through
``Redis.get``, 18 us with a checkout per call, 10.5 us on a kept connection.

Kept: the same parser (hiredis when installed; no response callback applies to
either command), redis-py's health check (in the connection's send), the reconnect
it does after a maintenance notification. A connection is kept only after a
complete reply (or an error reply, which leaves it in step); on anything else it is
dropped, and so are all the others kept with it (a restarted server or a cut
connection leaves them as dead), so the retry that follows reconnects through the
pool. Kept connections are forgotten in a forked child. Only an exact sync
``redis.Redis`` that is not a single-connection client takes this path
(:func:`plain`); a subclass that may override ``get``/``mget``, a cluster or
asyncio takes redis-py's own call.
"""

from __future__ import annotations

import os
import weakref
from typing import Any

import redis
import redis.exceptions as rex

__all__ = ["SPARE_MAX", "KeptConnections", "may_keep", "plain"]

#: Pool connections kept between hits, at most (more in use at once go back to the pool).
SPARE_MAX = 24


def plain(c: Any) -> bool:
    """Whether ``c`` may take :meth:`KeptConnections.run`."""
    return c.__class__ is redis.Redis and c.connection is None


class KeptConnections:
    """Connections of one client's pool kept between hits, shared by the threads of a
    tier (a list's ``pop``/``append`` are atomic); a thread finding none takes one
    from the pool."""

    def __init__(self) -> None:
        #: The pool they belong to, and the connections kept (None: this pool's are not kept).
        self.pool: Any = None
        self.connections: list[Any] | None = None
        _ALL.add(self)

    def run(self, c: Any, *command: Any) -> Any:
        """``command`` (a GET or an MGET) on a kept connection of ``c``'s pool."""
        pool = c.connection_pool
        if pool is not self.pool:
            self.pool, self.connections = pool, [] if may_keep(pool) else None
        spare = self.connections
        try:
            conn = spare.pop()  # type: ignore[union-attr]
            kept = True
        except (IndexError, AttributeError):  # none kept, or a pool whose connections are not kept
            conn, kept = pool.get_connection(), False
        try:
            conn.send_command(*command)
            result = conn.read_response()
        except rex.ResponseError:
            self._keep(pool, spare, conn)
            raise
        except BaseException:
            conn.disconnect()
            pool.release(conn)
            if kept:  # the server restarted or a proxy cut us: the other kept ones are as dead
                self._drop(pool, spare)
            raise
        self._keep(pool, spare, conn)
        return result

    def forget(self) -> None:
        """In a forked child: the kept connections' sockets are the parent's."""
        self.pool, self.connections = None, None

    @staticmethod
    def _keep(pool: Any, spare: list[Any] | None, conn: Any) -> None:
        reconnect = getattr(conn, "should_reconnect", None)
        if reconnect is not None and reconnect():
            conn.disconnect()
            pool.release(conn)
        elif spare is not None and len(spare) < SPARE_MAX:
            spare.append(conn)
        else:
            pool.release(conn)

    @staticmethod
    def _drop(pool: Any, spare: list[Any] | None) -> None:
        """Hand every kept connection back, disconnected: the retry that follows then
        takes a fresh one from the pool (whose checkout reconnects) instead of the next dead one."""
        while spare:
            try:
                conn = spare.pop()
            except IndexError:
                return
            conn.disconnect()
            pool.release(conn)


def may_keep(pool: Any) -> bool:
    """Whether connections of ``pool`` may be kept between hits: not from a blocking
    pool (its users chose to wait for a few connections), nor where :data:`SPARE_MAX`
    would be more than a quarter of the pool's bound (redis-py 8's default: 100)."""
    if isinstance(pool, redis.BlockingConnectionPool):
        return False
    bound = getattr(pool, "max_connections", None)
    return isinstance(bound, int) and bound >= 4 * SPARE_MAX


_ALL: weakref.WeakSet[KeptConnections] = weakref.WeakSet()


def _forget_all() -> None:
    for kept in list(_ALL):
        kept.forget()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_forget_all)
