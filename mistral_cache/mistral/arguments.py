"""A manager method's arguments: bound once, written into the read's key, and
handed back to the real method.

Bound as Python binds them (:class:`~mistral_cache.keys.ArgBinder` with
``error=TypeError``: a call that does not match raises the real method's own
error), defaults applied and ``**filters`` kept as one dict under its name, so
one call spelled two ways has one key.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from typing import Any

from ..keys import ArgBinder, encode_arg

__all__ = ["binder_for", "encode_arguments", "call_bound"]

_SIMPLE = (str, int, bool, float, type(None))


def binder_for(fn: Callable[..., Any]) -> ArgBinder:
    """The binder of a manager method: Python's TypeError for a call that does not match."""
    return ArgBinder(fn, error=TypeError)


def encode_arguments(names: Iterable[str], params: Mapping[str, Any]) -> str:
    """A stable text of the bound arguments, in signature order (TypeError if one has none)."""
    parts = []
    for name in names:
        value = params.get(name)
        parts.append(repr(value) if value.__class__ in _SIMPLE else encode_arg(value))
    return ",".join(parts)


def call_bound(fn: Callable[..., Any], params: Mapping[str, Any], varkw: str | None) -> Any:
    """``fn`` called with bound arguments, its ``**kwargs`` dict spread again."""
    kwargs = {k: v for k, v in params.items() if k != varkw}
    if varkw is not None:
        kwargs.update(params.get(varkw) or {})
    return fn(**kwargs)
