"""The Redis tier, by concern: :mod:`.connect` (clients from URLs), :mod:`.keyspace`
(where things live), :mod:`.scripts` (the Lua), :mod:`.tier` (the operations and
:class:`RedisTier`, which runs them fail-open behind a breaker)."""

from .connect import (
    CLUSTER_SCHEMES,
    SENTINEL_SCHEMES,
    async_client_from_url,
    client_kind,
    client_options,
    is_async,
    is_cluster,
    redact,
    sync_client_from_url,
    topology,
)
from .keyspace import COUNTER_TTL, MAX_ENTRY_TTL, TAG_VERBATIM_MAX, Keyspace
from .tier import FAILED, Op, RedisTier, sequence

__all__ = [
    "CLUSTER_SCHEMES", "COUNTER_TTL", "FAILED", "MAX_ENTRY_TTL", "SENTINEL_SCHEMES", "TAG_VERBATIM_MAX", "Keyspace", "Op",
    "RedisTier", "async_client_from_url", "client_kind", "client_options", "is_async", "is_cluster", "redact",
    "sequence", "sync_client_from_url", "topology",
]
