"""The writes that invalidate: a manager's ``create``/``update``/``delete``... passed
through to Mistral, then the tags they change invalidated.

A definite refusal (4xx) changed nothing and invalidates nothing, so no caller can
flush entries with writes the server rejects; a timeout, a reset or a 5xx may have
been applied, so it invalidates before the error is raised.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

from .arguments import binder_for
from .catalog import Tags
from .transport import is_refused

__all__ = ["Invalidate", "make_write"]

#: Invalidates a write's tags (relative to the scope) given the write's result (None if it raised).
Invalidate = Callable[[list[str], Any], None]


def make_write(real: Callable[..., Any], tags: Tags, invalidate: Invalidate) -> Callable[..., Any]:
    """``real`` (a manager's write method), then ``invalidate`` of what ``tags`` names."""
    binder = binder_for(real)

    @functools.wraps(real)
    def write(*args: Any, **kwargs: Any) -> Any:
        try:
            params = binder.bind(args, kwargs)
        except TypeError:
            return real(*args, **kwargs)  # let the client raise its own error
        try:
            result = real(*args, **kwargs)
        except Exception as exc:
            if not is_refused(exc):
                invalidate(list(tags(params, None)), None)
            raise
        invalidate(list(tags(params, result)), result)
        return result

    return write
