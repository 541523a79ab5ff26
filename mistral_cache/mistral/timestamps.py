"""Mistral's API timestamps: ``"YYYY-MM-DD HH:MM:SS"`` in UTC, whole seconds.

One place for reading them (TTL policies, the events' definition check) and for
writing them into list filters (``updated_at=gte:...``), so every reader agrees
on the zone and the resolution.
"""

from __future__ import annotations

import datetime as _dt
from typing import Any

__all__ = ["parse", "stamp"]

_FORMATS = ("%Y-%m-%d %H:%M:%S", "%Y-%m-%dT%H:%M:%S", "%Y-%m-%d %H:%M:%S.%f", "%Y-%m-%dT%H:%M:%S.%f")


def parse(text: Any) -> float | None:
    """Seconds since the epoch, or None for anything that is not one of Mistral's timestamps."""
    if not isinstance(text, str) or not text:
        return None
    for fmt in _FORMATS:
        try:
            moment = _dt.datetime.strptime(text.rstrip("Z"), fmt)
        except ValueError:
            continue
        return moment.replace(tzinfo=_dt.timezone.utc).timestamp()
    return None


def stamp(t: float) -> str:
    """``t`` (seconds since the epoch) as Mistral writes it, for a ``gte:`` filter."""
    return _dt.datetime.fromtimestamp(t, _dt.timezone.utc).strftime("%Y-%m-%d %H:%M:%S")
