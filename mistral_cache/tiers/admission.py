"""TinyLFU admission for the local tier: who may take the LRU victim's place.

An LRU admits every new key, so a scan or a long tail of one-off keys flushes the
keys that are read again and again. TinyLFU (Einziger, Friedman & Manes, 2017; as
Caffeine and theine use it) keeps an approximate access frequency of every key
seen lately, kept or not, and lets a new key in only if it has been asked for more
often than the key it would evict.

Three parts, written for CPython's costs rather than a CPU's:

- :class:`FrequencySketch`: a count-min sketch of depth 4 with 4-bit counters
  (two to a byte in a ``bytearray``), saturating at 15, with conservative update.
  Periodically all counters are halved, so popularity ages and yesterday's hot
  keys make way. Halving is one ``bytes.translate``.
- :class:`Doorkeeper`: a Bloom filter in front of the sketch. A key's first access
  only sets its bits; the counters count from the second. One-hit wonders, most of
  a long tail, thus never touch the sketch and cannot inflate its collisions.
  Cleared at each halving.
- :class:`TinyLFU`: the two together, the aging period, and :meth:`TinyLFU.admit`.

Keys are hashed with Python's ``hash`` (for ``str``: cached on the object, and
randomised per process, so no caller can choose keys that collide on purpose),
then mixed; the four counters are picked by double hashing. Not thread-safe on its
own: :class:`~mistral_cache.tiers.local.LocalTier` calls it under its lock.
"""

from __future__ import annotations

from collections.abc import Hashable, Iterable

__all__ = ["ADMISSIONS", "Doorkeeper", "FrequencySketch", "TinyLFU", "split_hash"]

#: The admission policies a local tier knows (``Local(admission=...)``); None means plain LRU.
ADMISSIONS = ("tinylfu",)

_M30 = (1 << 30) - 1  # CPython's ints up to 2**30 are one digit: arithmetic on them is the cheap kind
_DEPTH = 4
# Per byte (two 4-bit counters): both halved; and how many of the two are odd.
_HALVE = bytes(((b >> 1) & 0x77) for b in range(256))
_ODD = bytes((b & 1) + ((b >> 4) & 1) for b in range(256))


def _pow2(n: int) -> int:
    return 1 << max(0, n - 1).bit_length()


def split_hash(key: Hashable) -> tuple[int, int]:
    """Two 30-bit hashes of ``key`` for double hashing (the second odd, so its
    multiples visit every slot of a power-of-two table). ``hash(str)`` is SipHash,
    already well spread; other keys (an ``int`` hashes to itself) are mixed by one
    multiply first."""
    h = hash(key)
    if not isinstance(key, str):
        h = (h * 0x9E3779B97F4A7C15) & 0xFFFFFFFFFFFFFFFF  # 2**64 / golden ratio
        h ^= h >> 31
    return h & _M30, ((h >> 31) & _M30) | 1


class FrequencySketch:
    """A count-min sketch of recent access counts: 4 rows of ``width`` 4-bit
    counters, ``width`` the power of two at or above 4 x ``capacity`` (as
    Caffeine: 16 counters per cache slot in all). An estimate is the smallest of
    a key's four counters, so collisions can only overcount. The ``*_hash``
    methods take :func:`split_hash`'s pair, so a caller hashes a key once;
    :meth:`add_hashes` the int it splits, so a batch of ``str`` keys needs no split
    before the call."""

    __slots__ = ("_table", "_width", "sample", "additions")

    def __init__(self, capacity: int, *, sample: int | None = None) -> None:
        capacity = max(1, capacity)
        self._width = _pow2(4 * max(capacity, 16))
        self._table = bytearray(_DEPTH * self._width // 2)
        #: Additions between two halvings.
        self.sample = sample if sample is not None else 10 * capacity
        #: Additions since the last halving (adjusted down at each, as Caffeine does).
        self.additions = 0

    def frequency(self, key: Hashable) -> int:
        """The key's estimated count since the last halvings, 0 to 15."""
        a, b = split_hash(key)
        return self.frequency_hash(a, b)

    def increment(self, key: Hashable, n: int = 1) -> None:
        a, b = split_hash(key)
        self.increment_hash(a, b, n)

    def frequency_hash(self, a: int, b: int) -> int:
        # Unrolled over the 4 rows: this runs on every access, and CPython charges per bytecode.
        t, w = self._table, self._width
        m = w - 1
        n0, n1, n2, n3 = a & m, w + ((a + b) & m), 2 * w + ((a + 2 * b) & m), 3 * w + ((a + 3 * b) & m)
        low = (t[n0 >> 1] >> ((n0 & 1) << 2)) & 15
        v = (t[n1 >> 1] >> ((n1 & 1) << 2)) & 15
        low = v if v < low else low
        v = (t[n2 >> 1] >> ((n2 & 1) << 2)) & 15
        low = v if v < low else low
        v = (t[n3 >> 1] >> ((n3 & 1) << 2)) & 15
        return v if v < low else low

    def increment_hash(self, a: int, b: int, n: int = 1) -> None:
        """Count ``n`` accesses of the key :func:`split_hash` split into ``a``, ``b``
        (:meth:`add_hashes`). A saturated key is no addition towards the next halving."""
        if self.add_hashes((a | b << 31,), n):  # the int that splits into (a, b) again
            self.additions += n
            if self.additions >= self.sample:
                self.halve()

    def add_hashes(self, hashes: Iterable[int], n: int = 1) -> int:
        """Count ``n`` accesses for each key of ``hashes`` (each split as :func:`split_hash`
        splits, so a ``str`` key's is its ``hash``); how many keys were counted (a
        saturated one is not). Neither ``additions`` nor halving: callers keep those.

        Conservative update: each of the key's counters is raised to its minimum + ``n``
        (at most 15) if below, so a key sharing a counter with a hot one does not ride
        on its counts (fewer overestimates than adding to all four). The one copy of
        the update, for a single key and for a batch of sampled hits alike: unrolled
        over the 4 rows and inlined in the loop, as it is most of TinyLFU's cost on
        the hit path and CPython charges per bytecode and per call."""
        t, w = self._table, self._width
        m = w - 1
        w2, w3 = 2 * w, 3 * w
        counted = 0
        for h in hashes:
            a, b = h & _M30, ((h >> 31) & _M30) | 1
            n0, n1, n2, n3 = a & m, w + ((a + b) & m), w2 + ((a + 2 * b) & m), w3 + ((a + 3 * b) & m)
            s0, s1, s2, s3 = (n0 & 1) << 2, (n1 & 1) << 2, (n2 & 1) << 2, (n3 & 1) << 2
            n0, n1, n2, n3 = n0 >> 1, n1 >> 1, n2 >> 1, n3 >> 1
            v0, v1, v2, v3 = (t[n0] >> s0) & 15, (t[n1] >> s1) & 15, (t[n2] >> s2) & 15, (t[n3] >> s3) & 15
            low = v0 if v0 < v1 else v1
            low = v2 if v2 < low else low
            low = v3 if v3 < low else low
            if low == 15:
                continue
            new = low + n if low + n < 15 else 15
            if v0 < new:
                t[n0] += (new - v0) << s0
            if v1 < new:
                t[n1] += (new - v1) << s1
            if v2 < new:
                t[n2] += (new - v2) << s2
            if v3 < new:
                t[n3] += (new - v3) << s3
            counted += 1
        return counted

    def halve(self) -> None:
        """Age every counter by half (the TinyLFU *reset*). ``additions`` loses half,
        less the quarter-counts truncated from odd counters (4 rows per addition)."""
        t = self._table
        odd = sum(t.translate(_ODD))
        t[:] = t.translate(_HALVE)
        self.additions = max(0, (self.additions - odd // _DEPTH) >> 1)


class Doorkeeper:
    """A Bloom filter of the keys seen since the last halving: 3 probes into a
    power of two of bits, at least 8 per expected key (~3% false positives when
    that many are in)."""

    __slots__ = ("_bits", "_mask")

    def __init__(self, expected: int) -> None:
        nbits = _pow2(max(64, 8 * expected))
        self._bits = bytearray(nbits // 8)
        self._mask = nbits - 1

    def add(self, key: Hashable) -> bool:
        """Put the key in; whether it was in already (seen before, or a false positive)."""
        a, b = split_hash(key)
        return self.add_hash(a, b)

    def __contains__(self, key: object) -> bool:
        if not isinstance(key, Hashable):
            return False
        a, b = split_hash(key)
        return self.contains_hash(a, b)

    def add_hash(self, a: int, b: int) -> bool:
        # The roles of a and b swapped against the sketch's (b without its forced low bit,
        # a made odd), so the probes are spread over all bits and apart from the sketch's.
        bits, m = self._bits, self._mask
        b >>= 1
        a |= 1
        n0, n1, n2 = b & m, (b + a) & m, (b + 2 * a) & m
        i0, i1, i2 = n0 >> 3, n1 >> 3, n2 >> 3
        f0, f1, f2 = 1 << (n0 & 7), 1 << (n1 & 7), 1 << (n2 & 7)
        if bits[i0] & f0 and bits[i1] & f1 and bits[i2] & f2:
            return True
        bits[i0] |= f0
        bits[i1] |= f1
        bits[i2] |= f2
        return False

    def contains_hash(self, a: int, b: int) -> bool:
        bits, m = self._bits, self._mask
        b >>= 1
        a |= 1
        n0, n1, n2 = b & m, (b + a) & m, (b + 2 * a) & m
        return bool(bits[n0 >> 3] & (1 << (n0 & 7)) and bits[n1 >> 3] & (1 << (n1 & 7))
                    and bits[n2 >> 3] & (1 << (n2 & 7)))

    def clear(self) -> None:
        self._bits[:] = bytes(len(self._bits))


class TinyLFU:
    """The admission policy: :meth:`record` every access, ask :meth:`admit` before a
    new key evicts. ``capacity`` is the cache's size in entries.

    The aging period (the TinyLFU paper's sample size W) counts every access, the
    doorkeeper's too: at its end the sketch is halved and the doorkeeper cleared,
    and the next period starts half full, as the counts are. W is 40 per slot of
    the cache by default, not Caffeine's 10: Caffeine's window and hill climber
    make up for recency there, and with a plain LRU behind the filter a short
    period cannot tell the keys at the cache's edge from the tail (Zipf s=0.8 at
    1% capacity: 0.61 of Belady at 10 per slot, 0.75 at 40). Longer costs
    adaptation: with popularity reshuffled every 40 accesses per slot, 40 per
    slot still matches 10, and 100 per slot falls behind LRU. Memory: about 28
    bytes per slot (8 for the sketch, 20 for a doorkeeper of 4 bits per access
    of the period)."""

    __slots__ = ("sketch", "doorkeeper", "period", "seen")

    def __init__(self, capacity: int, *, period: int | None = None) -> None:
        capacity = max(1, capacity)
        self.period = max(2, period if period is not None else 40 * capacity)
        self.sketch = FrequencySketch(capacity, sample=1 << 62)  # aged here, in step with the doorkeeper
        self.doorkeeper = Doorkeeper(self.period // 2)
        self.seen = 0

    def record(self, key: Hashable, n: int = 1) -> None:
        """``n`` accesses (``n`` > 1: one sampled access standing for ``n``). The
        doorkeeper takes a first sighting, the sketch the rest."""
        a, b = split_hash(key)
        if not self.doorkeeper.add_hash(a, b):
            n -= 1
        if n:
            self.sketch.increment_hash(a, b, n)
        self.seen += n or 1
        if self.seen >= self.period:
            self.age()

    def record_hits(self, keys: list[str], n: int = 1) -> None:
        """Count ``n`` accesses for each of a batch of ``str`` keys that were hits (a
        drained buffer of sampled hits). A key in the cache was recorded when it
        missed, so the doorkeeper is skipped; ``hash`` is the split hash of a ``str``,
        so the batch goes to the sketch in one call, without a split per key."""
        self.sketch.add_hashes(map(hash, keys), n)
        self.seen += n * len(keys)
        if self.seen >= self.period:
            self.age()

    def frequency(self, key: Hashable) -> int:
        """Estimated recent accesses: the sketch's count, plus one if the doorkeeper knows the key."""
        a, b = split_hash(key)
        f = self.sketch.frequency_hash(a, b)
        return f + 1 if self.doorkeeper.contains_hash(a, b) else f

    def admit(self, candidate: Hashable, victim: Hashable) -> bool:
        """Whether ``candidate`` may replace ``victim``: strictly more frequent (a tie
        keeps the incumbent, so a scan of equals cannot churn the cache)."""
        return self.frequency(candidate) > self.frequency(victim)

    def age(self) -> None:
        self.sketch.halve()
        self.doorkeeper.clear()
        self.seen = self.period // 2
