"""Serialisers and the Redis envelope.

Every Redis value is an *envelope*: a fixed header (format version, flags, a
random write id, created-at, logical TTL, compute time), a small JSON ``meta``
section (generations of the namespace and tags it was computed under, and room
for policies such as adaptive TTLs), then the payload. Later features read the
header, so adding them needs no format change. Bytes that do not parse, carry
another version, or fail their HMAC are rejected as a whole: the caller sees a
miss, never an exception and never an unpickled foreign object.

With a secret, the HMAC covers the full Redis key (namespace included) as well as
header (write id, times), meta (generations) and payload, so a signed entry copied
to another key or namespace does not verify. It does not cover *when* the entry
may be read: an old entry of the same key written back verifies; only the signed
generations in its meta (a tag or namespace bump) or its own TTL retire it.
Sizes are bounded both ways: ``max_value_size`` limits the serialised payload
before compression, and decoding inflates no further than that.
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import hmac
import json
import os
import pickle
import struct
import zlib
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

from .exceptions import ConfigurationError, SerializationError

__all__ = [
    "FORMAT_VERSION",
    "MAGIC",
    "HEADER_SIZE",
    "WRITE_ID_OFFSET",
    "WRITE_ID_SIZE",
    "F_COMPRESSED",
    "F_SIGNED",
    "F_TOMBSTONE",
    "F_KEYED",
    "Serializer",
    "JSONSerializer",
    "MsgpackSerializer",
    "PickleSerializer",
    "SERIALIZERS",
    "make_serializer",
    "Envelope",
    "Codec",
]

FORMAT_VERSION = 1
MAGIC = b"MC"
_HEADER = struct.Struct("!2sBB8sdddI")
HEADER_SIZE = _HEADER.size
#: Offset and length of the write id, which the conditional-write Lua script compares.
WRITE_ID_OFFSET, WRITE_ID_SIZE = 4, 8
_SIG_SIZE = 32
#: Prefix of every HMAC input: the scheme (key-bound, v2) is part of what is signed.
_SIG_DOMAIN = b"mistral_cache/entry/v2\0"

F_COMPRESSED = 0x01
F_SIGNED = 0x02
F_TOMBSTONE = 0x04
#: Signed over the Redis key too. Entries signed before keys were bound lack it and are
#: refused: their HMAC verifies for any key, so accepting them would undo the binding.
F_KEYED = 0x08


@runtime_checkable
class Serializer(Protocol):
    """Turns a value into bytes and back. ``trusted_input`` says whether
    ``loads`` is safe on bytes an attacker may have written (pickle's is not)."""

    name: str
    trusted_input: bool

    def dumps(self, value: Any) -> bytes: ...

    def loads(self, data: bytes) -> Any: ...


def _json_default(value: Any) -> Any:
    if isinstance(value, _dt.datetime):
        return {"__dt__": value.isoformat()}
    if isinstance(value, _dt.date):
        return {"__date__": value.isoformat()}
    if isinstance(value, (set, frozenset)):
        return {"__set__": sorted(value, key=repr)}
    raise TypeError(f"{type(value).__qualname__} is not JSON serialisable")


#: One-key dicts with these keys are our type markers (and "__dict__" escapes a user's
#: dict that looks like one), so every value comes back as itself, never as another type.
_MARKERS = frozenset({"__dt__", "__date__", "__set__", "__dict__"})


def _escape(value: Any) -> Any:
    """The value, with every one-key dict whose key is a marker written as
    ``{"__dict__": [[key, value]]}``. Only run when the output holds ``__``."""
    if isinstance(value, dict):
        items = {k: _escape(v) for k, v in value.items()}
        if len(items) == 1 and next(iter(items)) in _MARKERS:
            return {"__dict__": [[k, v] for k, v in items.items()]}
        return items
    if isinstance(value, (list, tuple)):
        return [_escape(v) for v in value]
    return value


def _json_hook(obj: dict[str, Any]) -> Any:
    if len(obj) == 1:
        if "__dict__" in obj:
            return {k: v for k, v in obj["__dict__"]}
        if "__dt__" in obj:
            return _dt.datetime.fromisoformat(obj["__dt__"])
        if "__date__" in obj:
            return _dt.date.fromisoformat(obj["__date__"])
        if "__set__" in obj:
            return set(obj["__set__"])
    return obj


def _json_decode(data: bytes | str) -> Any:
    """``json.loads`` without its per-call encoding sniffing (three Python calls):
    UTF-8 bytes, what every writer here produces, go straight to the C decoder;
    anything json.loads would read otherwise (a NUL in the first four bytes: UTF-16
    or UTF-32; a UTF-8 BOM; str) takes ``json.loads``, so both accept the same input."""
    if type(data) is bytes and b"\x00" not in data[:4] and not data.startswith(b"\xef\xbb\xbf"):
        try:
            text = data.decode()
        except UnicodeDecodeError:
            return json.loads(data)  # raises as it would
        try:
            value, end = _SCAN(text, 0)  # the C scanner JSONDecoder.decode ends in
        except StopIteration:
            return _DECODE(text)  # leading whitespace, or no value: decode() decides
        return value if end == len(text) else _DECODE(text)  # trailing text: likewise
    return json.loads(data)


_DECODER = json.JSONDecoder()
_DECODE = _DECODER.decode
_SCAN: Any = _DECODER.scan_once  # type: ignore[attr-defined]  # set by JSONDecoder.__init__, untyped in typeshed


class JSONSerializer:
    """The default: safe on any input, readable in ``redis-cli``. Tuples come back as lists."""

    name = "json"
    trusted_input = False

    def dumps(self, value: Any) -> bytes:
        out = json.dumps(value, default=_json_default, separators=(",", ":"), ensure_ascii=False).encode()
        if b'"__' in out:  # a user's dict may spell a marker: escape it (rare, so only then)
            out = json.dumps(_escape(value), default=_json_default, separators=(",", ":"), ensure_ascii=False).encode()
        return out

    def loads(self, data: bytes) -> Any:
        # The hook (a Python call per object) only matters where one of our
        # markers ("__dt__", "__date__", "__set__") appears; a byte scan is cheaper.
        if b'"__' in data:
            return json.loads(data, object_hook=_json_hook)
        return _json_decode(data)


class MsgpackSerializer:
    """Compact and fast; needs the ``msgpack`` package."""

    name = "msgpack"
    trusted_input = False

    def __init__(self) -> None:
        try:
            import msgpack
        except ImportError as exc:  # pragma: no cover - depends on the environment
            raise ConfigurationError("serializer='msgpack' needs: pip install msgpack") from exc
        self._msgpack = msgpack

    def dumps(self, value: Any) -> bytes:
        out: bytes = self._msgpack.packb(value, default=_json_default, datetime=False)
        if b"__" in out:  # as JSONSerializer.dumps
            out = self._msgpack.packb(_escape(value), default=_json_default, datetime=False)
        return out

    def loads(self, data: bytes) -> Any:
        return self._msgpack.unpackb(data, object_hook=_json_hook, strict_map_key=False)


class PickleSerializer:
    """Any picklable value; only ever loaded after the envelope's HMAC verified."""

    name = "pickle"
    trusted_input = True

    def dumps(self, value: Any) -> bytes:
        return pickle.dumps(value, protocol=pickle.HIGHEST_PROTOCOL)

    def loads(self, data: bytes) -> Any:
        return pickle.loads(data)  # noqa: S301 - callers verify the HMAC first


SERIALIZERS: dict[str, type] = {
    "json": JSONSerializer,
    "msgpack": MsgpackSerializer,
    "pickle": PickleSerializer,
}


def make_serializer(spec: str | Serializer) -> Serializer:
    if isinstance(spec, str):
        try:
            return SERIALIZERS[spec]()  # type: ignore[no-any-return]
        except KeyError:
            raise ConfigurationError(
                f"unknown serializer {spec!r}; choose one of {sorted(SERIALIZERS)} or pass an object"
            ) from None
    if not isinstance(spec, Serializer):
        raise ConfigurationError(f"serializer {spec!r} has no name/dumps/loads/trusted_input")
    return spec


@dataclass
class Envelope:
    """One decoded Redis entry."""

    value: Any
    created_at: float
    ttl: float
    compute_time: float
    meta: dict[str, Any] = field(default_factory=dict)
    write_id: bytes = b""
    tombstone: bool = False

    @property
    def expires_at(self) -> float:
        return self.created_at + self.ttl


def _key_bytes(key: bytes | str | None, where: str) -> bytes:
    if isinstance(key, str):
        return key.encode("utf-8", "surrogatepass")
    if isinstance(key, bytes):
        return key
    raise TypeError(f"Codec.{where}: a signing codec needs key= (the full Redis key, namespace included), "
                    f"got {key!r}")


class Codec:
    """Packs values into envelopes and back: serialiser, compression, signature, size limit.

    With ``secret=`` every entry is signed, whatever the serialiser (opt-in for JSON
    and msgpack, required for pickle), and ``encode``/``decode`` require ``key=``, the
    full Redis key the entry lives under: a call site that forgets it fails loudly
    (TypeError) instead of making every read a miss.
    """

    def __init__(
        self,
        serializer: str | Serializer = "json",
        *,
        secret: bytes | str | None = None,
        compress_threshold: int | None = 16 * 1024,
        max_value_size: int | None = 4 * 1024 * 1024,
    ) -> None:
        self.serializer = make_serializer(serializer)
        if isinstance(secret, str):
            secret = secret.encode()
        if self.serializer.trusted_input and not secret:
            raise ConfigurationError(
                f"serializer {self.serializer.name!r} can run code when loading; "
                "it needs secret= (an HMAC key) so tampered bytes are rejected"
            )
        self._secret = secret or None
        # Keyed once; each signature copies it (cheaper than re-deriving the pads per entry).
        self._mac = hmac.new(self._secret, digestmod=hashlib.sha256) if self._secret else None
        self.compress_threshold = compress_threshold
        self.max_value_size = max_value_size

    def _sign(self, key: bytes, body: bytes | memoryview) -> bytes:
        """HMAC over domain, length-prefixed key, then the body: no (key, body) split is ambiguous."""
        assert self._mac is not None
        mac = self._mac.copy()
        mac.update(_SIG_DOMAIN + len(key).to_bytes(4, "big") + key)
        mac.update(body)
        return mac.digest()

    def encode(
        self,
        value: Any,
        *,
        created_at: float,
        ttl: float,
        compute_time: float = 0.0,
        meta: dict[str, Any] | None = None,
        tombstone: bool = False,
        key: bytes | str | None = None,
    ) -> bytes:
        """Raises SerializationError (unserialisable) or ValueError (over ``max_value_size``,
        counted before compression: that is what a reader holds in memory). ``key``: the
        full Redis key the entry is written to; required when signing (TypeError)."""
        bkey = _key_bytes(key, "encode") if self._mac is not None else b""
        flags = 0
        if tombstone:
            payload = b""
            flags |= F_TOMBSTONE
        else:
            try:
                payload = self.serializer.dumps(value)
            except Exception as exc:
                raise SerializationError(
                    f"{self.serializer.name} cannot serialise a {type(value).__qualname__}: {exc}"
                ) from exc
            limit = self.max_value_size
            if limit is not None and len(payload) > limit:
                raise ValueError(f"value of {len(payload)} bytes exceeds max_value_size={limit}")
            if self.compress_threshold is not None and len(payload) > self.compress_threshold:
                payload = zlib.compress(payload, 1)
                flags |= F_COMPRESSED
        meta_bytes = json.dumps(meta, separators=(",", ":")).encode() if meta else b""
        if self._mac is not None:
            flags |= F_SIGNED | F_KEYED
        head = _HEADER.pack(
            MAGIC, FORMAT_VERSION, flags, os.urandom(WRITE_ID_SIZE),
            created_at, ttl, compute_time, len(meta_bytes),
        )
        body = head + meta_bytes + payload
        return body + self._sign(bkey, body) if self._mac is not None else body

    def decode(self, data: bytes, *, key: bytes | str | None = None) -> Envelope:
        """Raises SerializationError for anything that is not a valid envelope of ours,
        including a signed entry read from another key than ``key`` (required when
        signing: TypeError) and a payload larger than ``max_value_size`` once inflated."""
        bkey = _key_bytes(key, "decode") if self._mac is not None else b""
        if len(data) < HEADER_SIZE:
            raise SerializationError("truncated entry")
        magic, version, flags, write_id, created, ttl, compute, meta_len = _HEADER.unpack_from(data)
        if magic != MAGIC or version != FORMAT_VERSION:
            raise SerializationError(f"foreign entry (magic {magic!r}, version {version})")
        end = HEADER_SIZE + meta_len
        stop = len(data)
        if self._mac is not None:
            if not flags & F_SIGNED or stop < end + _SIG_SIZE:
                raise SerializationError("unsigned entry where a signature is required")
            if not flags & F_KEYED:
                raise SerializationError("entry signed without its key (written by an older version): refused")
            stop -= _SIG_SIZE
            if not hmac.compare_digest(data[stop:], self._sign(bkey, memoryview(data)[:stop])):
                raise SerializationError("signature mismatch: tampered with, moved from another key or "
                                         "namespace, or written with another secret")
        elif flags & F_SIGNED:
            raise SerializationError("signed entry but this cache has no secret")
        elif stop < end:
            raise SerializationError("truncated entry")
        try:
            meta = _json_decode(data[HEADER_SIZE:end]) if meta_len else {}
            if flags & F_TOMBSTONE:
                value = None
            else:
                value = self.serializer.loads(self._payload(data[end:stop], flags))
        except SerializationError:
            raise
        except Exception as exc:
            raise SerializationError(f"corrupt entry: {exc!r}") from exc
        return Envelope(value, created, ttl, compute, meta, write_id, bool(flags & F_TOMBSTONE))

    def _payload(self, payload: bytes, flags: int) -> bytes:
        """The serialised value, inflated no further than ``max_value_size`` (a planted
        few-KB zlib stream would otherwise become gigabytes in the reader)."""
        limit = self.max_value_size
        if flags & F_COMPRESSED:
            if limit is None:
                return zlib.decompress(payload)
            inflater = zlib.decompressobj()
            payload = inflater.decompress(payload, limit + 1)
            if len(payload) <= limit and not inflater.eof:
                raise SerializationError("truncated compressed payload")
        if limit is not None and len(payload) > limit:
            raise SerializationError(f"payload over max_value_size={limit}")
        return payload
