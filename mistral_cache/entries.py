"""What the engine reads back from Redis, checked: an entry's write id, the
generation counters it was stored under, and its meta. Everything here comes
from bytes someone else may have written, so nothing here raises on them."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from .serializers import WRITE_ID_OFFSET, WRITE_ID_SIZE

__all__ = ["write_id", "generations", "meta_problem"]


def write_id(raw: bytes | None) -> bytes:
    return raw[WRITE_ID_OFFSET:WRITE_ID_OFFSET + WRITE_ID_SIZE] if raw else b""


def generations(values: Sequence[Any]) -> list[str]:
    """Counter values as strings. Latin-1 maps every byte string to a distinct str, so a
    counter someone overwrote with non-UTF-8 bytes is just another value, never an error."""
    return [v.decode("latin-1") if isinstance(v, bytes) else "0" if v is None else str(v) for v in values]


def meta_problem(meta: Any, generations: int, tombstone: bool) -> str | None:
    """Why an envelope's meta is not one we wrote, or None: an object whose ``g`` is
    the list of ``generations`` counter values (strings) it was computed under (a
    tombstone has none). Other fields belong to TTL policies, which validate their own."""
    if not isinstance(meta, dict):
        return f"meta is a {type(meta).__name__}, not an object"
    if tombstone:
        return None
    g = meta.get("g")
    if not isinstance(g, list) or len(g) != generations or not all(isinstance(x, str) for x in g):
        return "meta has no list of generations of the expected length"
    return None
