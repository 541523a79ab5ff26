"""Batch Redis operations the dogpile backend and the oslo proxy need: many writes
(or deletes) and their announcements in one round trip.

They are operations in the tier's sense (a function of a redis-py client, run by
:meth:`RedisTier.run` behind its retry policy and breaker). They belong on
``RedisTier`` as static op builders; they live here until the core takes them.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from ..tiers.redis import Op, is_cluster

__all__ = ["write_many", "delete_many"]


def write_many(items: Sequence[tuple[str, bytes]], px: int | None, channel: str, messages: Sequence[str],
               read_after: Sequence[str] = ()) -> Op:
    """SET each ``(key, data)`` (with ``PX px`` unless None), PUBLISH each message,
    then MGET ``read_after`` (the counters, to learn whether they moved while we
    wrote): one pipelined round trip. Returns the MGET's list (or [])."""

    def op(c: Any) -> Any:
        if is_cluster(c):  # redis-py refuses PUBLISH in a cluster pipeline
            pipe = c.pipeline()
            for key, data in items:
                pipe.set(key, data, px=px)
            pipe.execute()
            for m in messages:
                c.publish(channel, m)
            return c.mget_nonatomic(list(read_after)) if read_after else []
        pipe = c.pipeline(transaction=False)
        for key, data in items:
            pipe.set(key, data, px=px)
        for m in messages:
            pipe.publish(channel, m)
        if read_after:
            pipe.mget(list(read_after))
        res = pipe.execute()
        return res[-1] if read_after else []

    return op


def delete_many(keys: Sequence[str], channel: str, messages: Sequence[str]) -> Op:
    """DEL the keys and PUBLISH each message: one round trip."""

    def op(c: Any) -> Any:
        if is_cluster(c):  # one slot per key: no multi-key DEL, no PUBLISH in the pipeline
            pipe = c.pipeline()
            for key in keys:
                pipe.delete(key)
            out = pipe.execute()
            for m in messages:
                c.publish(channel, m)
            return out
        pipe = c.pipeline(transaction=False)
        if keys:
            pipe.delete(*keys)
        for m in messages:
            pipe.publish(channel, m)
        return pipe.execute()

    return op
