"""Cache keys: templates, the default key and the hashing of long keys.

Keys must be stable across processes and Python runs (so no ``hash()`` and no
default ``repr`` of objects) and must never collide for different arguments.
"""

from __future__ import annotations

import datetime as _dt
import decimal
import enum
import hashlib
import inspect
import string
import uuid
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from .exceptions import ConfigurationError, KeyBuildError

#: Keys longer than this keep a readable prefix and hash the rest.
MAX_KEY_LENGTH = 200

_SIMPLE = (str, int, float, bool, type(None), bytes)
_FAST = frozenset(_SIMPLE)


def encode_arg(value: Any) -> str:
    """A canonical, stable text for one argument, or KeyBuildError."""
    if isinstance(value, _SIMPLE):
        return repr(value)
    hook = getattr(value, "__cache_key__", None)
    if hook is not None and callable(hook):
        return f"{type(value).__qualname__}<{hook()}>"
    if isinstance(value, enum.Enum):
        return f"{type(value).__qualname__}.{value.name}"
    if isinstance(value, tuple):
        return "(" + ",".join(map(encode_arg, value)) + ")"
    if isinstance(value, list):
        return "[" + ",".join(map(encode_arg, value)) + "]"
    if isinstance(value, Mapping):
        items = sorted((encode_arg(k), encode_arg(v)) for k, v in value.items())
        return "{" + ",".join(f"{k}:{v}" for k, v in items) + "}"
    if isinstance(value, (set, frozenset)):
        return "{" + ",".join(sorted(map(encode_arg, value))) + "}"
    if isinstance(value, (_dt.datetime, _dt.date, _dt.time)):
        return f"{type(value).__name__}({value.isoformat()})"
    if isinstance(value, (uuid.UUID, decimal.Decimal, _dt.timedelta)):
        return f"{type(value).__name__}({value})"
    raise TypeError(type(value).__qualname__)


def shorten(key: str, keep: int = 64) -> str:
    """Bound a key's length: keep a readable head, replace the rest with its SHA-256."""
    if len(key) <= MAX_KEY_LENGTH:
        return key
    digest = hashlib.sha256(key.encode("utf-8", "surrogatepass")).hexdigest()[:40]
    return f"{key[:keep]}~{digest}"


class ArgBinder:
    """Maps a call's ``(args, kwargs)`` to parameter names, defaults included.

    ``inspect.Signature.bind`` costs microseconds; this does the common case (no
    ``*args``/``**kwargs``) with a dict and a zip, and falls back to it otherwise.
    """

    def __init__(self, fn: Callable[..., Any]) -> None:
        self.signature = inspect.signature(fn)
        params = list(self.signature.parameters.values())
        self.names = tuple(p.name for p in params)
        kinds = {p.kind for p in params}
        self._simple = not kinds & {
            inspect.Parameter.VAR_POSITIONAL,
            inspect.Parameter.VAR_KEYWORD,
            inspect.Parameter.POSITIONAL_ONLY,
        }
        self._positional = tuple(
            p.name for p in params if p.kind is inspect.Parameter.POSITIONAL_OR_KEYWORD
        )
        self._defaults = tuple(
            (p.name, p.default) for p in params if p.default is not inspect.Parameter.empty
        )
        self._count = len(params)
        self._allowed = frozenset(self.names)

    def bind(self, args: tuple[Any, ...], kwargs: Mapping[str, Any]) -> dict[str, Any]:
        if self._simple and len(args) <= len(self._positional):
            bound = dict(zip(self._positional, args))
            if kwargs:
                for name in kwargs:
                    if name in bound or name not in self._allowed:
                        return self._slow(args, kwargs)
                bound.update(kwargs)
            if len(bound) < self._count:
                for name, default in self._defaults:
                    bound.setdefault(name, default)
                if len(bound) < self._count:
                    return self._slow(args, kwargs)
            return bound
        return self._slow(args, kwargs)

    def _slow(self, args: tuple[Any, ...], kwargs: Mapping[str, Any]) -> dict[str, Any]:
        try:
            ba = self.signature.bind(*args, **kwargs)
        except TypeError as exc:
            raise KeyBuildError(f"arguments do not match the signature: {exc}") from exc
        ba.apply_defaults()
        return dict(ba.arguments)


def template_fields(template: str) -> set[str]:
    """The top-level names a ``str.format`` template refers to (``{a.b[0]}`` -> ``a``)."""
    names = set()
    for _, field, _, _ in string.Formatter().parse(template):
        if field is None:
            continue
        head = field.split(".", 1)[0].split("[", 1)[0]
        if not head or head.isdigit():
            raise ConfigurationError(
                f"key template {template!r} must name parameters, not positions ({{{field}}})"
            )
        names.add(head)
    return names


def positional_template(template: str, names: tuple[str, ...]) -> str | None:
    """``template`` with each parameter name replaced by its position (``{a.b}`` ->
    ``{0.b}``), so the hot path can call ``str.format(*args)`` without building a
    dict; None when a field is too clever to rewrite safely (nested in a spec)."""
    index = {n: i for i, n in enumerate(names)}
    out = []
    for literal, field, spec, conversion in string.Formatter().parse(template):
        out.append(literal.replace("{", "{{").replace("}", "}}"))
        if field is None:
            continue
        head = field.split(".", 1)[0].split("[", 1)[0]
        if head not in index or (spec and "{" in spec):
            return None
        out.append("{" + str(index[head]) + field[len(head):] + ("!" + conversion if conversion else "")
                   + (":" + spec if spec else "") + "}")
    return "".join(out)


class KeyBuilder:
    """Builds the key of one call to ``fn`` from a template, a callable or the default.

    * ``"wf:{name}:{namespace}"`` - a ``str.format`` template over the bound
      parameters (defaults applied; attribute and index access allowed);
    * a callable with the function's own signature returning a ``str``;
    * ``None`` - module and qualname plus a canonical encoding of every
      argument not listed in ``exclude`` (e.g. a password or a client object).
    """

    def __init__(
        self,
        fn: Callable[..., Any],
        key: str | Callable[..., str] | None = None,
        *,
        exclude: Iterable[str] = (),
    ) -> None:
        self.fn_name = f"{fn.__module__}.{fn.__qualname__}"
        self.binder = ArgBinder(fn)
        self.exclude = frozenset(exclude)
        unknown = self.exclude - set(self.binder.names)
        if unknown:
            raise ConfigurationError(f"{self.fn_name}: exclude names no parameter: {sorted(unknown)}")
        self._template: str | None = None
        self._callable: Callable[..., str] | None = None
        if isinstance(key, str):
            missing = template_fields(key) - set(self.binder.names)
            if missing:
                raise ConfigurationError(
                    f"{self.fn_name}: key template {key!r} names unknown parameters {sorted(missing)}"
                )
            self._template = key
        elif callable(key):
            self._callable = key
        elif key is not None:
            raise ConfigurationError(f"{self.fn_name}: key must be a template string or a callable, not {key!r}")
        self._encoded = tuple(n for n in self.binder.names if n not in self.exclude)

        self.build = self._compile()

    def _compile(self) -> Callable[[tuple[Any, ...], Mapping[str, Any]], str]:
        """The hot path: calls passing every parameter positionally skip binding."""
        binder, general = self.binder, self.__call__
        if self._callable is not None or not binder._simple or len(binder._positional) != len(binder.names):
            return general
        count = len(binder.names)
        if self._template is not None:
            positional = positional_template(self._template, tuple(binder._positional))
            if positional is None:
                return general
            fill = positional.format

            def build_template(args: tuple[Any, ...], kwargs: Mapping[str, Any]) -> str:
                if kwargs or len(args) != count:
                    return general(args, kwargs)
                try:
                    key = fill(*args)
                except Exception:
                    return general(args, kwargs)  # raises KeyBuildError with the details
                return key if len(key) <= MAX_KEY_LENGTH else shorten(key)

            return build_template
        if self.exclude:
            return general
        head = self.fn_name + "("
        if count == 1:

            def build_one(args: tuple[Any, ...], kwargs: Mapping[str, Any]) -> str:
                if kwargs or len(args) != 1:
                    return general(args, kwargs)
                a = args[0]
                if type(a) in _FAST:
                    key = f"{head}{a!r})"
                else:
                    try:
                        key = head + encode_arg(a) + ")"
                    except TypeError:
                        return general(args, kwargs)  # raises KeyBuildError naming the argument
                return key if len(key) <= MAX_KEY_LENGTH else shorten(key)

            return build_one

        def build_default(args: tuple[Any, ...], kwargs: Mapping[str, Any]) -> str:
            if kwargs or len(args) != count:
                return general(args, kwargs)
            try:
                key = head + ",".join([repr(a) if type(a) in _FAST else encode_arg(a) for a in args]) + ")"
            except TypeError:
                return general(args, kwargs)  # raises KeyBuildError naming the argument
            return key if len(key) <= MAX_KEY_LENGTH else shorten(key)

        return build_default

    def __call__(self, args: tuple[Any, ...], kwargs: Mapping[str, Any]) -> str:
        if self._callable is not None:
            out = self._callable(*args, **kwargs)
            if not isinstance(out, str):
                raise KeyBuildError(f"{self.fn_name}: key function returned {type(out).__name__}, not str")
            return shorten(out)
        bound = self.binder.bind(args, kwargs)
        if self._template is not None:
            return shorten(format_template(self._template, bound, self.fn_name))
        return shorten(self.fn_name + "(" + self.encode_bound(bound) + ")")

    def encode_bound(self, bound: Mapping[str, Any]) -> str:
        parts = []
        for name in self._encoded:
            try:
                parts.append(encode_arg(bound[name]))
            except TypeError as exc:
                raise KeyBuildError(
                    f"{self.fn_name}: argument {name!r} of type {exc} has no stable cache key; "
                    "pass key=, exclude= it, or give its type a __cache_key__() method"
                ) from None
        return ",".join(parts)


def format_template(template: str, bound: Mapping[str, Any], fn_name: str) -> str:
    try:
        return template.format_map(bound)
    except (AttributeError, KeyError, IndexError, TypeError, ValueError) as exc:
        raise KeyBuildError(f"{fn_name}: cannot fill template {template!r}: {exc!r}") from exc
