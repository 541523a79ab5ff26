"""Resources handed to callers, rebuilt from cached dicts.

The cache holds each resource's ``to_dict()``; every read returns new ``Resource``
objects over a copy of it, so a caller mutating one never touches the cached value.
"""

from __future__ import annotations

import copy
import importlib
from collections.abc import Callable
from typing import Any

from .policies import is_not_found
from .transport import api_exception

__all__ = ["copy_json", "resource_builder", "import_dotted", "rebuild"]

_CONTAINERS = (dict, list)


def copy_json(value: Any) -> Any:
    """A deep copy of JSON data (dicts, lists, immutable leaves), several times faster than
    ``copy.deepcopy``: a caller mutating a returned resource never touches the cached value."""
    if value.__class__ is dict:
        out = value.copy()
        for k, v in value.items():
            if v.__class__ in _CONTAINERS:
                out[k] = copy_json(v)
        return out
    if value.__class__ is list:
        return [copy_json(v) if v.__class__ in _CONTAINERS else v for v in value]
    return copy.deepcopy(value)


def import_dotted(dotted: str) -> Any:
    """The object a dotted name (``package.module.Name``) names."""
    module, _, name = dotted.rpartition(".")
    return getattr(importlib.import_module(module), name)


def resource_builder(cls: Any) -> Callable[[Any, dict[str, Any]], Any]:
    """``cls(manager, data)``, without its per-key ``setattr`` loop when the class keeps
    the base behaviour (no defaults, no custom ``_set_attributes``): the same object."""
    from mistralclient.api.base import Resource

    plain = (
        getattr(cls, "_set_attributes", None) is Resource._set_attributes
        and getattr(cls, "_set_defaults", None) is Resource._set_defaults
        and not getattr(cls, "defaults", None)
        and getattr(cls, "__init__", None) is Resource.__init__
        and not any(isinstance(v, property) for k in dir(cls) for v in [getattr(cls, k, None)])
    )
    if not plain:
        return cls  # type: ignore[no-any-return]
    new = object.__new__

    def build(manager: Any, data: dict[str, Any]) -> Any:
        obj = new(cls)
        state = obj.__dict__
        state["manager"] = manager
        state["_data"] = data
        state.update(data)
        return obj

    return build


def rebuild(manager: Any, build: Callable[[Any, dict[str, Any]], Any], value: Any) -> Any:
    """The read's answer from a cached value: resources, or Mistral's 404 raised again."""
    if is_not_found(value):
        raise api_exception()(error_code=404, error_message=value.get("error_message"))  # type: ignore[call-arg]
    if isinstance(value, list):
        return [build(manager, copy_json(item)) for item in value]
    return build(manager, copy_json(value))
