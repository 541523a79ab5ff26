"""Helpers shared by the Mistral tests (plain code, not fixtures)."""

from __future__ import annotations

from collections import Counter
from typing import Any

__all__ = ["Requests"]


class Requests:
    """Counts the HTTP requests a mistralclient client sends to Mistral (wraps its
    ``http_client``): the upstream requests a cached read did or did not make."""

    def __init__(self, client: Any) -> None:
        self.counts: Counter[str] = Counter()
        http = client.workflows.http_client
        for method in ("get", "post", "put", "delete"):
            original = getattr(http, method)

            def counted(*args: Any, _m: str = method, _o: Any = original, **kwargs: Any) -> Any:
                self.counts[_m] += 1
                return _o(*args, **kwargs)

            setattr(http, method, counted)

    @property
    def total(self) -> int:
        return sum(self.counts.values())
