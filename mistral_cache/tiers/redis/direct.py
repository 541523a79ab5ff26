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
import threading
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
    from the pool. When the tier's client (so its pool) changes, what was kept from
    the old pool goes back to it."""

    def __init__(self) -> None:
        self._state: tuple[Any, list[Any] | None] = (None, None)  # (pool, kept; None: not kept)
        self._switch = threading.Lock()
        _ALL.add(self)

    @property
    def pool(self) -> Any:
        """The pool the kept connections belong to."""
        return self._state[0]

    @property
    def connections(self) -> list[Any] | None:
        """The connections kept now (None: this pool's connections are not kept)."""
        return self._state[1]

    def run(self, c: Any, *command: Any) -> Any:
        """``command`` (a GET or an MGET) on a kept connection of ``c``'s pool."""
        pool = c.connection_pool
        state = self._state
        if state[0] is not pool:
            state = self._use(pool)
        spare = state[1]
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

    def _use(self, pool: Any) -> tuple[Any, list[Any] | None]:
        """Switch to ``pool``; what was kept from the previous one goes back to it."""
        with self._switch:
            old = self._state
            if old[0] is pool:
                return old
            state = self._state = (pool, [] if may_keep(pool) else None)
        if old[0] is not None:
            self._drop(*old)
        return state

    def forget(self) -> None:
        """In a forked child: the kept connections' sockets are the parent's."""
        self._state = (None, None)
        self._switch = threading.Lock()

    def _keep(self, pool: Any, spare: list[Any] | None, conn: Any) -> None:
        reconnect = getattr(conn, "should_reconnect", None)
        if reconnect is not None and reconnect():
            conn.disconnect()
            pool.release(conn)
        elif spare is not None and spare is self._state[1] and len(spare) < SPARE_MAX:
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
