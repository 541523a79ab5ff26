"""The canonical, type-aware encoding of one argument, and the rest of what makes a
key injective and safe to show: long keys hashed, credentials digested, functions
named. :mod:`.keys` builds whole keys from these."""

from __future__ import annotations

import datetime as _dt
import decimal
import enum
import hashlib
import re
import uuid
from collections.abc import Callable, Mapping
from typing import Any

__all__ = ["MAX_KEY_LENGTH", "HASHED_LENGTH", "TAG", "ESCAPED", "FAST", "encode_arg", "shorten", "is_credential", "hidden",
           "function_name", "type_name"]

#: Keys longer than this keep a readable head and hash the rest.
MAX_KEY_LENGTH = 200
_HEAD = 64
_LONG_MARK = "~"
HASHED_LENGTH = _HEAD + len(_LONG_MARK) + 40

_SIMPLE = (str, int, float, bool, type(None), bytes)
FAST = frozenset(_SIMPLE)
_SUBCLASSABLE = (str, int, float, bytes)
_STDLIB = frozenset({"builtins", "datetime", "uuid", "decimal"})
_TIMES = (_dt.datetime, _dt.date, _dt.time)
_SCALARS = (uuid.UUID, decimal.Decimal, _dt.timedelta)

TAG = "#"  # a typed template field: "#" + encode_arg(value)
_HIDDEN = "#~"  # a credential: "#~" + digest (encode_arg never starts with "~")
ESCAPED = "%#"  # always percent-encoded in a key field: the escape and the tag



def type_name(t: type) -> str:
    """Module-qualified, so same-named types of two modules never share a key
    (the stdlib's keep their short, familiar names)."""
    return t.__qualname__ if t.__module__ in _STDLIB else f"{t.__module__}.{t.__qualname__}"


def encode_arg(value: Any) -> str:
    """A canonical, stable, type-aware text for one argument, or TypeError."""
    t = type(value)
    if t in FAST:
        return repr(value)
    hook = getattr(value, "__cache_key__", None)
    if hook is not None and callable(hook):
        out = hook()
        if out is value:
            raise TypeError(t.__qualname__)
        return f"{type_name(t)}<{encode_arg(out)}>"  # encoded: a hook's text cannot fake structure
    if isinstance(value, enum.Enum):
        return f"{type_name(t)}.{value.name}"
    if isinstance(value, _SUBCLASSABLE):  # a subclass's own __repr__ may say anything: use its base's
        base = next(b for b in _SUBCLASSABLE if isinstance(value, b))
        return f"{type_name(t)}({base.__repr__(value)})"
    if isinstance(value, tuple):
        return "(" + ",".join(map(encode_arg, value)) + ")"
    if isinstance(value, list):
        return "[" + ",".join(map(encode_arg, value)) + "]"
    if isinstance(value, Mapping):
        items = sorted((encode_arg(k), encode_arg(v)) for k, v in value.items())
        return "{" + ",".join(f"{k}:{v}" for k, v in items) + "}"
    if isinstance(value, (set, frozenset)):  # named, so set() is not {}
        return ("set{" if isinstance(value, set) else "frozenset{") + ",".join(sorted(map(encode_arg, value))) + "}"
    if isinstance(value, _TIMES):
        return f"{type_name(t)}({value.isoformat()})"
    if isinstance(value, _SCALARS):
        return f"{type_name(t)}({value})"
    raise TypeError(t.__qualname__)


def shorten(key: str) -> str:
    """Bound a key's length: a readable head, ``~`` and a SHA-256 of the whole key.

    A key that already has that shape (length and ``~``) is hashed as well, so a
    short argument spelling a long key's hashed form gets a key of its own."""
    n = len(key)
    if n <= MAX_KEY_LENGTH and not (n == HASHED_LENGTH and key[_HEAD] == _LONG_MARK):
        return key
    digest = hashlib.sha256(key.encode("utf-8", "surrogatepass")).hexdigest()[:40]
    return f"{key[:_HEAD]}{_LONG_MARK}{digest}"


# -- credentials ----------------------------------------------------------------
_CREDENTIAL_WORDS = ("password", "passwd", "passphrase", "secret", "token", "apikey", "credential", "privatekey", "authorization",
                     "cookie", "session", "bearer", "jwt")
_CREDENTIAL_PARTS = frozenset({"pwd", "pass", "auth", "creds", "cred", "pin", "otp"})


def is_credential(name: str) -> bool:
    """Whether a parameter (or a field such as ``creds.password``) names a credential,
    by the words people use for them (``password``, ``access_token``, ``apiKey``,
    ``client_secret``, ``auth``...). Such values are written into keys as a digest."""
    low = name.lower()
    squashed = re.sub(r"[^a-z0-9]", "", low)
    return any(w in squashed for w in _CREDENTIAL_WORDS) or any(p in _CREDENTIAL_PARTS for p in re.split(r"[^a-z0-9]+", low))


def hidden(name: str, value: Any) -> str:
    """A credential's stand-in in a key: ``#~`` and 128 bits of a SHA-256 of its
    encoding, so different secrets keep different keys without being readable.
    Not encryption: a weak password can still be guessed from it offline."""
    data = f"mistral_cache.credential\0{name}\0{encode_arg(value)}".encode("utf-8", "surrogatepass")
    return _HIDDEN + hashlib.sha256(data).hexdigest()[:32]


# -- the function's name ----------------------------------------------------------
def _frozen(value: Any) -> bool:
    """Immutable and encodable: safe to read once, at decoration."""
    if type(value) in FAST or isinstance(value, (enum.Enum, *_TIMES, *_SCALARS)):
        return True
    return type(value) in (tuple, frozenset) and all(map(_frozen, value))


def function_name(fn: Callable[..., Any]) -> str:
    """``module.qualname``, plus the immutable plain values ``fn`` closes over.

    Functions made by one factory share a qualname; the factory's arguments they
    close over (``kind='user'``) are what tells their default keys apart. Values
    that are mutable or have no stable encoding are left out: instances that
    differ only by those need ``key=`` (or ``version=``)."""
    name = f"{fn.__module__}.{fn.__qualname__}"
    code, cells = getattr(fn, "__code__", None), getattr(fn, "__closure__", None)
    if code is None or not cells:
        return name
    parts = []
    for var, cell in zip(code.co_freevars, cells):
        try:
            value = cell.cell_contents
        except ValueError:  # not bound yet: a local function calling itself
            continue
        if _frozen(value):
            parts.append(f"{var}={hidden(var, value) if is_credential(var) else encode_arg(value)}")
    if not parts:
        return name
    label = ",".join(parts)
    if len(label) > 64:
        label = TAG + hashlib.sha256(label.encode("utf-8", "surrogatepass")).hexdigest()[:16]
    return f"{name}[{label}]"


