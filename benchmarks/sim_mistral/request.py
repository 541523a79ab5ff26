"""One API request as the handlers see it, and the handler signature."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from .schema import DEFAULT_PROJECT, JSON, ApiError

__all__ = ["Request", "Handler"]


@dataclass
class Request:
    """Query parameters, body, the path's id (and action namespace), the caller's
    project and Host; a list handler sets ``items`` (it prices the response)."""

    params: dict[str, str]
    body: bytes
    ident: str = ""
    extra: str = ""
    project: str = DEFAULT_PROJECT
    host: str = "127.0.0.1"
    items: int = 0

    def text(self) -> str:
        return self.body.decode("utf-8")

    def json(self) -> JSON:
        try:
            data = json.loads(self.body or b"{}")
        except ValueError:
            raise ApiError(400, "Request body is not valid JSON") from None
        if not isinstance(data, dict):
            raise ApiError(400, "Request body must be a JSON object")
        return data

    def flag(self, name: str) -> bool:
        return self.params.get(name, "").lower() in ("true", "1", "yes", "on")

    def allow(self, names: Iterable[str]) -> None:
        for name in self.params.keys() - set(names):
            raise ApiError(400, f'Unknown argument: "{name}"')


Handler = Callable[[Request], tuple[int, Any]]
"""A route's handler: the request in, (HTTP status, JSON body or None) out."""
