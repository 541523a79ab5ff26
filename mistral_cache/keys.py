"""Cache keys: templates and the default key (the encoding of one argument, long
keys and credentials are in :mod:`.encoding`).

Two calls that share a key share a value, so a key must be injective in the
call's arguments, and stable across processes and Python runs (no ``hash()``,
no default ``repr`` of objects):

* default key: ``module.qualname(arg,...)``, each argument in a canonical,
  type-aware encoding (:func:`encode_arg`);
* template: each field escaped (``%`` and the template's punctuation
  percent-encoded) and typed (a ``str`` or ``int`` as itself, anything else as
  ``#`` + its encoding), so values can fake neither a boundary nor a type;
* a parameter named like a credential (``password``, ``token``, ``api_key``...)
  is written as a digest, never in clear (:func:`is_credential`);
* over :data:`MAX_KEY_LENGTH`: a head, ``~`` and a digest; a short key of
  that shape is hashed too, so no argument can spell a long key's form.

(Over the 400-line aim on purpose: the binder, the template compiler and the key
builder are one hot path whose fast cases must agree with its general one; the
tests check them against each other, which is easier with them side by side.)
"""

from __future__ import annotations

import functools
import inspect
import re
import string
from collections.abc import Callable, Iterable, Mapping
from typing import Any, cast

from .encoding import ESCAPED, FAST, HASHED_LENGTH, MAX_KEY_LENGTH, TAG, encode_arg, function_name, hidden, is_credential, shorten, type_name
from .exceptions import ConfigurationError, KeyBuildError

__all__ = ["MAX_KEY_LENGTH", "ArgBinder", "KeyBuilder", "Template", "encode_arg", "format_template", "function_name",
           "hidden", "is_credential", "shorten", "template_fields"]

_FORMATTER = string.Formatter()


class ArgBinder:
    """Maps a call's ``(args, kwargs)`` to parameter names, defaults included;
    a ``**kwargs`` parameter is one dict under its own name (``{}`` if none).

    ``inspect.Signature.bind`` costs microseconds; this does the common cases
    (no ``*args`` nor positional-only parameters, with or without ``**kwargs``)
    with a dict and a zip, and falls back to it otherwise.

    ``error``: what a call that does not match the signature raises:
    :class:`~mistral_cache.exceptions.KeyBuildError` (default: no key for it) or
    ``TypeError``, which re-raises Python's own error, as the call itself would
    (for a facade that must behave like the function it wraps).
    """

    def __init__(self, fn: Callable[..., Any], *, error: type[Exception] = KeyBuildError) -> None:
        self.signature = inspect.signature(fn)
        self.error = error
        params = list(self.signature.parameters.values())
        self.names = tuple(p.name for p in params)
        kinds = {p.kind for p in params}
        #: The ``**kwargs`` parameter's name, None if the function takes none.
        self.varkw = next((p.name for p in params if p.kind is inspect.Parameter.VAR_KEYWORD), None)
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
        # the **kwargs path: its function's other parameters, none positional-only nor *args
        self._named = self._allowed - {self.varkw} if self.varkw is not None and not kinds & {
            inspect.Parameter.VAR_POSITIONAL,
            inspect.Parameter.POSITIONAL_ONLY,
        } else None
        self._default_map = dict(self._defaults)

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
        named, varkw = self._named, self.varkw
        if named is not None and varkw is not None and len(args) <= len(self._positional):
            # **kwargs: the other parameters as above, unknown names into its dict
            bound = self._default_map.copy()
            if args:
                bound.update(zip(self._positional, args))
            extra: dict[str, Any] = {}
            if kwargs:
                taken = self._positional[:len(args)]
                for name, value in kwargs.items():
                    if name not in named:
                        extra[name] = value
                    elif name in taken:
                        return self._slow(args, kwargs)
                    else:
                        bound[name] = value
            if len(bound) < self._count - 1:  # a required parameter is missing
                return self._slow(args, kwargs)
            bound[varkw] = extra
            return bound
        return self._slow(args, kwargs)

    def _slow(self, args: tuple[Any, ...], kwargs: Mapping[str, Any]) -> dict[str, Any]:
        try:
            ba = self.signature.bind(*args, **kwargs)
        except TypeError as exc:
            if self.error is TypeError:
                raise
            raise self.error(f"arguments do not match the signature: {exc}") from exc
        ba.apply_defaults()
        return dict(ba.arguments)


# -- templates ---------------------------------------------------------------------
def _parse(template: str) -> tuple[list[str], list[tuple[str, str, str | None, str]]]:
    """``template`` as its literal texts (one more than fields) and its fields
    ``(head, field, conversion, spec)``; ConfigurationError for a positional
    field or two fields with no punctuation between them."""
    literals, fields = [""], []
    for literal, field, spec, conversion in _FORMATTER.parse(template):
        literals[-1] += literal
        if field is None:
            continue
        head = field.split(".", 1)[0].split("[", 1)[0]
        if not head or head.isdigit():
            raise ConfigurationError(f"key template {template!r} must name parameters, not positions ({{{field}}})")
        fields.append((head, field, conversion, spec or ""))
        literals.append("")
    for between in literals[1:-1]:
        if not _punctuation(between):
            raise ConfigurationError(
                f"template {template!r}: separate fields with punctuation other than % and # (e.g. ':'), "
                "or where one ends and the next begins is ambiguous and two calls could share a key"
            )
    return literals, fields


def _punctuation(text: str) -> set[str]:
    """The characters of a template's text that delimit fields (escaped in them)."""
    return {c for c in text if not c.isalnum()} - set(ESCAPED)


def template_fields(template: str) -> set[str]:
    """The top-level names a ``str.format`` template refers to (``{a.b[0]}`` -> ``a``)."""
    return {head for head, _, _, _ in _parse(template)[1]}


def _escape_table(chars: Iterable[str]) -> dict[int, str]:
    """``str.translate`` table percent-encoding (UTF-8) ``%`` and ``chars``."""
    return {ord(c): "".join(f"%{b:02X}" for b in c.encode("utf-8", "surrogatepass")) for c in {"%", *chars}}


def _typed_text(value: Any, table: dict[int, str]) -> str:
    """A key field's text: a ``str`` (escaped) or a non-negative ``int`` as itself;
    anything else, and a str of digits, as ``#`` + its canonical encoding (escaped).
    Escaping ``#`` keeps the three kinds apart."""
    t = type(value)
    if t is str and not value.isdigit():
        return cast(str, value).translate(table)
    if t is int and value >= 0:
        return str(value)
    try:
        text = encode_arg(value)
    except TypeError:  # no canonical encoding: its text, still typed
        text = f"{type_name(t)}={value}"
    return TAG + text.translate(table)


class _Field:
    """One replacement field of a compiled template."""

    __slots__ = ("head", "field", "conversion", "spec", "table", "chars", "typed", "secret", "plain")

    def __init__(self, head: str, field: str, conversion: str | None, spec: str,
                 chars: str | None, *, typed: bool) -> None:
        self.head, self.field, self.conversion, self.spec = head, field, conversion, spec
        self.chars = chars  # escaped characters ("%" included); None: written as is
        self.table = _escape_table(chars) if chars is not None else None
        self.typed = typed
        self.secret = typed and is_credential(field)
        self.plain = field == head and not conversion and not spec

    def value(self, bound: Mapping[str, Any]) -> Any:
        return bound[self.head] if self.field == self.head else _FORMATTER.get_field(self.field, (), bound)[0]

    def render(self, value: Any, bound: Mapping[str, Any]) -> str:
        table = self.table
        if self.secret:
            return TAG + hidden(self.field, value)[len(TAG):].translate(table or {})
        if self.conversion or self.spec:  # the caller chose the text: only escaped
            if self.conversion:
                value = _FORMATTER.convert_field(value, self.conversion)
            text = format(value, self.spec.format_map(bound) if "{" in self.spec else self.spec)
        elif self.typed and table is not None:
            return _typed_text(value, table)
        else:
            text = format(value, "")
        return text.translate(table) if table is not None else text


class Template:
    """A key or tag template compiled once.

    Key (``typed``): every field escaped and typed, so different arguments never
    share a key, even with another template of the same prefix. Tag: values as
    their text, every field but the last escaped, so a tag stays the name users
    spell (``invalidate_tags(f"user:{id}")``) yet two fields cannot trade text.
    """

    def __init__(self, template: str, *, typed: bool) -> None:
        self.template = template
        self.literals, parsed = _parse(template)
        punctuation = "".join(sorted(_punctuation("".join(self.literals))))
        escaped = (ESCAPED if typed else "%") + punctuation
        last = len(parsed) - 1
        self.fields = tuple(
            _Field(head, field, conversion, spec, escaped if typed or i < last else None, typed=typed)
            for i, (head, field, conversion, spec) in enumerate(parsed)
        )
        self.names = {f.head for f in self.fields}

    def fill(self, bound: Mapping[str, Any], fn_name: str) -> str:
        out = [self.literals[0]]
        try:
            for f, literal in zip(self.fields, self.literals[1:]):
                out.append(f.render(f.value(bound), bound))
                out.append(literal)
        except (AttributeError, KeyError, IndexError, TypeError, ValueError) as exc:
            raise KeyBuildError(f"{fn_name}: cannot fill template {self.template!r}: {exc!r}") from exc
        return "".join(out)


@functools.lru_cache(maxsize=1024)
def _tag_template(template: str) -> Template:
    return Template(template, typed=False)


def format_template(template: str, bound: Mapping[str, Any], fn_name: str) -> str:
    """A tag's name (see :class:`Template`): the last field as written by
    ``str.format``, earlier ones escaped."""
    return _tag_template(template).fill(bound, fn_name)


_FIELD_CODE = """\
    v{j} = a{i}
    if type(v{j}) is str:
        if v{j}.isdigit(){checks}:
            v{j} = r{j}(v{j})
    elif type(v{j}) is not int or v{j} < 0:
        v{j} = r{j}(v{j})
"""


def _compile_template(tpl: Template, positions: Mapping[str, int], count: int,
                      general: Callable[[tuple[Any, ...], Mapping[str, Any]], str]) -> Callable[..., str] | None:
    """The template's hot path as one generated function: a plain str or int
    field that needs no escaping costs a few C-level checks, and the key is one
    f-string; anything else goes through the field's renderer."""
    if any("{" in f.spec for f in tpl.fields):
        return None  # a nested spec needs the other arguments: the binding path
    ns: dict[str, Any] = {"general": general, "shorten": shorten, "LIMIT": MAX_KEY_LENGTH, "HASHED": HASHED_LENGTH}
    parts = [repr(tpl.literals[0])]  # plain literals beside f'{v}' parts: braces in them stay literal
    body = []
    for j, (f, literal) in enumerate(zip(tpl.fields, tpl.literals[1:])):
        parts += [f"f'{{v{j}}}'", repr(literal)]
        i = positions[f.head]
        if f.plain and not f.secret:
            ns[f"r{j}"] = functools.partial(f.render, bound={})
            chars = f.chars or ""
            if len(chars) <= 4:
                checks = "".join(f" or {c!r} in v{j}" for c in chars)
            else:
                checks = f" or s{j}(v{j}) is not None"
                ns[f"s{j}"] = re.compile("[" + re.escape(chars) + "]").search
            body.append(_FIELD_CODE.format(j=j, i=i, checks=checks))
        else:
            ns[f"r{j}"] = functools.partial(_render_head, f)
            body.append(f"    v{j} = r{j}(a{i})\n")
    unpack = f"    {', '.join(f'a{i}' for i in range(count))}, = args\n" if count else ""
    source = (
        "def build_template(args, kwargs):\n"
        f"    if kwargs or len(args) != {count}:\n"
        "        return general(args, kwargs)\n"
        "    try:\n"
        + "".join("    " + line + "\n" for line in (unpack + "".join(body)).splitlines())
        + f"        key = {' '.join(parts)}\n"
        "    except Exception:\n"
        "        return general(args, kwargs)  # raises KeyBuildError with the details\n"
        "    n = len(key)\n"
        "    return key if n <= LIMIT and n != HASHED else shorten(key)\n"
    )
    exec(source, ns)  # noqa: S102 - source built above from indexes and repr'd constants only
    return cast(Callable[..., str], ns["build_template"])


def _render_head(f: _Field, head_value: Any) -> str:
    bound = {f.head: head_value}
    return f.render(f.value(bound), bound)


class KeyBuilder:
    """Builds the key of one call to ``fn`` from a template, a callable or the default.

    * ``"wf:{name}:{namespace}"`` - a ``str.format`` template over the bound
      parameters (defaults applied; attribute and index access allowed), each
      field escaped and typed (:class:`Template`);
    * a callable with the function's own signature returning a ``str``;
    * ``None`` - :func:`function_name` plus a canonical encoding of every
      argument not listed in ``exclude`` (e.g. a client object).

    Either way a credential-named argument is written as a digest (:func:`hidden`).
    """

    def __init__(
        self,
        fn: Callable[..., Any],
        key: str | Callable[..., str] | None = None,
        *,
        exclude: Iterable[str] = (),
    ) -> None:
        self.fn_name = function_name(fn)
        self.binder = ArgBinder(fn)
        self.exclude = frozenset(exclude)
        unknown = self.exclude - set(self.binder.names)
        if unknown:
            raise ConfigurationError(f"{self.fn_name}: exclude names no parameter: {sorted(unknown)}")
        self._template: Template | None = None
        self._callable: Callable[..., str] | None = None
        if isinstance(key, str):
            template = Template(key, typed=True)
            missing = template.names - set(self.binder.names)
            if missing:
                raise ConfigurationError(
                    f"{self.fn_name}: key template {key!r} names unknown parameters {sorted(missing)}"
                )
            self._template = template
        elif callable(key):
            self._callable = key
        elif key is not None:
            raise ConfigurationError(f"{self.fn_name}: key must be a template string or a callable, not {key!r}")
        self._encoded = tuple(n for n in self.binder.names if n not in self.exclude)
        self._hidden = frozenset(n for n in self._encoded if is_credential(n))

        self.build = self._compile()
        #: The number of positional arguments with which :attr:`build` binds nothing
        #: (no keywords): None if it always binds.
        self.fast_arity: int | None = None if self.build == self.__call__ else len(self.binder.names)
        #: Whether :meth:`from_bound` builds the key (not for a key callable).
        self.uses_bound = self._callable is None

    def _compile(self) -> Callable[[tuple[Any, ...], Mapping[str, Any]], str]:
        """The hot path: calls passing every parameter positionally skip binding."""
        binder, general = self.binder, self.__call__
        if self._callable is not None or not binder._simple or len(binder._positional) != len(binder.names):
            return general
        count = len(binder.names)
        if self._template is not None:
            positions = {n: i for i, n in enumerate(binder._positional)}
            return _compile_template(self._template, positions, count, general) or general
        if self.exclude or self._hidden:
            return general
        head = self.fn_name + "("
        limit, hashed = MAX_KEY_LENGTH, HASHED_LENGTH
        if count == 1:

            def build_one(args: tuple[Any, ...], kwargs: Mapping[str, Any]) -> str:
                if kwargs or len(args) != 1:
                    return general(args, kwargs)
                a = args[0]
                if type(a) in FAST:
                    key = f"{head}{a!r})"
                else:
                    try:
                        key = head + encode_arg(a) + ")"
                    except TypeError:
                        return general(args, kwargs)  # raises KeyBuildError naming the argument
                n = len(key)
                return key if n <= limit and n != hashed else shorten(key)

            return build_one

        def build_default(args: tuple[Any, ...], kwargs: Mapping[str, Any]) -> str:
            if kwargs or len(args) != count:
                return general(args, kwargs)
            try:
                key = head + ",".join([repr(a) if type(a) in FAST else encode_arg(a) for a in args]) + ")"
            except TypeError:
                return general(args, kwargs)  # raises KeyBuildError naming the argument
            n = len(key)
            return key if n <= limit and n != hashed else shorten(key)

        return build_default

    def __call__(self, args: tuple[Any, ...], kwargs: Mapping[str, Any]) -> str:
        if self._callable is not None:
            out = self._callable(*args, **kwargs)
            if not isinstance(out, str):
                raise KeyBuildError(f"{self.fn_name}: key function returned {type(out).__name__}, not str")
            return shorten(out)
        bound = self.binder.bind(args, kwargs)
        if self._template is not None:
            return shorten(self._template.fill(bound, self.fn_name))
        return shorten(self.fn_name + "(" + self.encode_bound(bound) + ")")

    def key_and_bound(self, args: tuple[Any, ...], kwargs: Mapping[str, Any]) -> tuple[str, dict[str, Any] | None]:
        """The call's key (the one :meth:`__call__` and :attr:`build` return) and the
        arguments bound to build it (:meth:`ArgBinder.bind`, defaults applied), for a
        caller that needs both (a function's tag templates) and must not bind twice.
        None for a key callable, which binds nothing."""
        if self._callable is not None:
            return self(args, kwargs), None
        bound = self.binder.bind(args, kwargs)
        return self.from_bound(bound), bound

    def from_bound(self, bound: Mapping[str, Any]) -> str:
        """The key of a call whose arguments are bound already (:meth:`ArgBinder.bind`);
        not for a key callable, which takes the call's own arguments."""
        if self._callable is not None:
            raise ConfigurationError(f"{self.fn_name}: a key callable needs the call's arguments, not bound ones")
        if self._template is not None:
            return shorten(self._template.fill(bound, self.fn_name))
        return shorten(self.fn_name + "(" + self.encode_bound(bound) + ")")

    def encode_bound(self, bound: Mapping[str, Any]) -> str:
        parts = []
        for name in self._encoded:
            try:
                parts.append(hidden(name, bound[name]) if name in self._hidden else encode_arg(bound[name]))
            except TypeError as exc:
                raise KeyBuildError(
                    f"{self.fn_name}: argument {name!r} of type {exc} has no stable cache key; "
                    "pass key=, exclude= it, or give its type a __cache_key__() method"
                ) from None
        return ",".join(parts)
