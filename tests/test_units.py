"""Pure unit tests (no I/O): keys, the envelope codec, the breaker, XFetch."""

from __future__ import annotations

import datetime as dt

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mistral_cache.exceptions import KeyBuildError, SerializationError
from mistral_cache.keys import ArgBinder, KeyBuilder, encode_arg, shorten
from mistral_cache.resilience import CLOSED, HALF_OPEN, OPEN, CircuitBreaker
from mistral_cache.serializers import Codec
from mistral_cache.stampede import soft_deadline, xfetch_due

scalars = st.one_of(st.none(), st.booleans(), st.integers(), st.floats(allow_nan=False), st.text(), st.binary())
args = st.recursive(scalars, lambda inner: st.one_of(st.lists(inner), st.tuples(inner, inner), st.dictionaries(st.text(), inner)), max_leaves=10)


@given(args, args)
def test_encode_arg_is_injective_on_distinct_values(a: object, b: object) -> None:
    if encode_arg(a) == encode_arg(b):
        # equal encodings only for equal values (bool/int and tuple/list aside, which encode differently)
        assert a == b or repr(a) == repr(b)


@given(st.dictionaries(st.text(), st.integers()))
def test_dict_encoding_ignores_insertion_order(d: dict[str, int]) -> None:
    assert encode_arg(d) == encode_arg(dict(reversed(list(d.items()))))


@given(st.text(max_size=1000))
def test_long_keys_are_bounded_and_distinct(s: str) -> None:
    k = shorten("f(" + s + ")")
    assert len(k) <= 200 or len(k) == 64 + 1 + 40
    if len("f(" + s + ")") > 200:
        assert shorten("f(" + s + "x)") != k


def test_default_key_is_stable_across_call_styles() -> None:
    def get(name: str, namespace: str = "", *, fields: tuple[str, ...] = ()) -> None: ...

    kb = KeyBuilder(get)
    assert kb(("a",), {}) == kb((), {"name": "a"}) == kb(("a", ""), {"fields": ()})
    assert kb(("a",), {}) != kb(("b",), {})
    with pytest.raises(KeyBuildError, match="signature"):
        kb((), {"nope": 1})



def _reference(fn: object, args: tuple[object, ...], kwargs: dict[str, object]) -> dict[str, object]:
    import inspect

    bound = inspect.signature(fn).bind(*args, **kwargs)  # type: ignore[arg-type]
    bound.apply_defaults()
    return dict(bound.arguments)


def _lister(marker: str = "", limit: int | None = None, *, fields: list[str] | None = None, **filters: object) -> None: ...


def _getter(id: str, *, fields: str = "", **filters: object) -> None: ...


@pytest.mark.parametrize(("fn", "args", "kwargs"), [
    (_lister, (), {}),
    (_lister, ("m",), {"limit": 5}),
    (_lister, ("m", 5), {"fields": ["id"], "state": "RUNNING", "task_execution_id": "t"}),
    (_lister, (), {"filters": 1, "marker": "x"}),  # a keyword named like **filters goes into it
    (_getter, ("i",), {}),
    (_getter, (), {"id": "i", "x": 1}),
])
def test_arg_binder_keeps_kwargs_as_one_dict_as_signature_bind_does(fn: object, args: tuple[object, ...],
                                                                    kwargs: dict[str, object]) -> None:
    assert ArgBinder(fn).bind(args, kwargs) == _reference(fn, args, kwargs)  # type: ignore[arg-type]


@pytest.mark.parametrize(("args", "kwargs"), [
    ((), {}),  # missing id
    (("i", "j"), {}),  # too many positional
    (("i",), {"id": "j"}),  # twice
])
def test_arg_binder_error_option_raises_pythons_own_type_error(args: tuple[object, ...], kwargs: dict[str, object]) -> None:
    with pytest.raises(TypeError) as expected:
        _reference(_getter, args, kwargs)
    with pytest.raises(TypeError) as raised:
        ArgBinder(_getter, error=TypeError).bind(args, kwargs)
    assert type(raised.value) is TypeError and str(raised.value) == str(expected.value)
    with pytest.raises(KeyBuildError, match="signature"):
        ArgBinder(_getter).bind(args, kwargs)



@given(st.lists(st.integers(), max_size=4),
       st.dictionaries(st.sampled_from(["id", "marker", "limit", "fields", "filters", "x", "y"]), st.integers()))
def test_arg_binder_agrees_with_signature_bind(args: list[int], kwargs: dict[str, int]) -> None:
    for fn in (_lister, _getter):
        try:
            expected: object = _reference(fn, tuple(args), kwargs)
        except TypeError as exc:
            expected = str(exc)
        try:
            got: object = ArgBinder(fn, error=TypeError).bind(tuple(args), kwargs)
        except TypeError as exc:
            got = str(exc)
        assert got == expected


class _Obj:
    def __init__(self, name: str) -> None:
        self.name = name
        self.items = [name, name * 2]


@given(st.text(), st.integers(), st.text(max_size=300))
def test_compiled_template_builds_the_same_key_as_the_general_path(a: str, b: int, c: str) -> None:
    """The hot path rewrites templates to positional fields; it must agree with
    the binding path for attribute, index, conversion, spec and escaped braces."""
    def get(x: str, n: int, obj: _Obj) -> None: ...

    for template in ("k:{x}", "{x}|{n:>5}|{obj.name!r}|{obj.items[1]}|{{lit}}", "{n}-{n}.{x!s}", "{x}", "t/{obj.name}/{n}"):
        kb = KeyBuilder(get, template)
        params = (a, b, _Obj(c))
        assert kb.build(params, {}) == kb(params, {}) == kb((), {"x": a, "n": b, "obj": params[2]})


@given(scalars, scalars)
def test_compiled_default_key_matches_the_general_path(a: object, b: object) -> None:
    def one(x: object) -> None: ...

    def two(x: object, y: object) -> None: ...

    k1, k2 = KeyBuilder(one), KeyBuilder(two)
    assert k1.build((a,), {}) == k1((a,), {}) == k1((), {"x": a})
    assert k2.build((a, b), {}) == k2((a, b), {})


# integers within msgpack's 64-bit range: beyond it msgpack refuses (a clear SerializationError)
json_values = st.recursive(
    st.one_of(st.none(), st.booleans(), st.integers(-(2**63), 2**64 - 1), st.floats(allow_nan=False, allow_infinity=False), st.text()),
    lambda inner: st.one_of(st.lists(inner), st.dictionaries(st.text(), inner)),
    max_leaves=20,
)


@settings(max_examples=200)
@given(json_values, st.sampled_from(["json", "msgpack"]), st.sampled_from([None, b"k3y"]))
def test_codec_round_trip(value: object, ser: str, secret: bytes | None) -> None:
    codec = Codec(ser, secret=secret, compress_threshold=64)
    env = codec.decode(codec.encode(value, created_at=1.0, ttl=2.0, compute_time=0.5, meta={"g": ["0"]}, key="k"), key="k")
    assert env.value == value and env.ttl == 2.0 and env.meta == {"g": ["0"]}


def test_datetimes_survive_json() -> None:
    codec = Codec()
    now = dt.datetime(2026, 11, 23, 14, 0, 1)
    assert codec.decode(codec.encode({"at": now, "d": now.date()}, created_at=0, ttl=1)).value == {"at": now, "d": now.date()}


@given(st.binary(max_size=300))
def test_garbage_is_rejected_never_loaded(data: bytes) -> None:
    codec = Codec("pickle", secret=b"s")
    with pytest.raises(SerializationError):
        codec.decode(data, key="k")


def test_tampered_or_unsigned_pickle_is_rejected() -> None:
    signed = Codec("pickle", secret=b"right")
    blob = signed.encode({"a": 1}, created_at=0, ttl=1, key="k")
    tampered = blob[:-40] + bytes([blob[-40] ^ 1]) + blob[-39:]
    with pytest.raises(SerializationError, match="signature"):
        signed.decode(tampered, key="k")
    with pytest.raises(SerializationError, match="signature"):
        Codec("pickle", secret=b"wrong").decode(blob, key="k")
    with pytest.raises(SerializationError, match="unsigned"):
        signed.decode(Codec("json").encode({"a": 1}, created_at=0, ttl=1), key="k")


def test_oversized_values_are_refused() -> None:
    with pytest.raises(ValueError, match="max_value_size"):
        Codec(max_value_size=10, compress_threshold=None).encode("x" * 100, created_at=0, ttl=1)


def test_breaker_opens_half_opens_and_closes() -> None:
    now = [0.0]
    b = CircuitBreaker(failure_threshold=2, reset_timeout=5, timer=lambda: now[0])
    seen: list[tuple[str, str]] = []
    b.on_change(lambda old, new: seen.append((old, new)))
    b.failure()
    assert b.allow()
    b.failure()
    assert b.state == OPEN and not b.allow()
    now[0] = 5
    assert b.allow() and b.state == HALF_OPEN
    assert not b.allow()  # one probe at a time
    b.failure()
    assert b.state == OPEN
    now[0] = 10
    assert b.allow()
    b.success()
    assert b.state == CLOSED
    assert seen == [(CLOSED, OPEN), (OPEN, HALF_OPEN), (HALF_OPEN, OPEN), (OPEN, HALF_OPEN), (HALF_OPEN, CLOSED)]


def test_xfetch_refreshes_only_near_expiry() -> None:
    assert not xfetch_due(0.0, 100.0, 1.0, 1.0, rand=lambda: 0.5)
    assert xfetch_due(99.9, 100.0, 1.0, 1.0, rand=lambda: 0.5)
    assert soft_deadline(100.0, 1.0, 1.0) == 93.0
    assert xfetch_due(100.0, 100.0, 0.0, 1.0)


def test_only_a_spec_reading_sender_keeps_a_finished_tasks_execution():
    """``execution_kept`` never comes from a payload (the webhook's token is low-trust);
    outside Mistral, or for a state that publishes nothing, the spec check cannot tell."""
    from dataclasses import replace

    from mistral_cache.mistral.events.mapping import parse_event, tags_for
    from mistral_cache.mistral.events.task_spec import publishes_global

    body = {"id": "t1", "project_id": "p", "workflow_execution_id": "wx1", "state": "SUCCESS", "execution_kept": True}
    ev = parse_event(body, "TASK_SUCCEEDED")
    assert ev.execution_kept is False
    with_execution = [t for t in tags_for(ev, "http://m/v2") if t.endswith("|executions|id:wx1")]
    assert len(with_execution) == 2  # the project's scope and the admins'
    kept = tags_for(replace(ev, execution_kept=True), "http://m/v2")
    assert set(tags_for(ev, "http://m/v2")) - set(kept) == set(with_execution)
    assert publishes_global("wx1", "t1", "SUCCESS") is None  # no Mistral in this environment
    assert publishes_global("wx1", "t1", "RUNNING") is None


def test_a_launch_keeps_its_execution_and_a_live_stream_keeps_404s_briefly():
    """WORKFLOW_LAUNCHED clears the execution lists, not the execution (whoever read it
    read it launched); so while events are live a 404 is not kept past NOT_FOUND_EVENT_TTL."""
    from mistral_cache.mistral.events.mapping import parse_event, tags_for
    from mistral_cache.mistral.policies import NOT_FOUND_EVENT_TTL, NOT_FOUND_TTL, event_backed, not_found_marker

    body = {"id": "wx1", "project_id": "p", "state": "RUNNING"}
    launched = tags_for(parse_event(body, "WORKFLOW_LAUNCHED"), "http://m/v2")
    succeeded = tags_for(parse_event({**body, "state": "SUCCESS"}, "WORKFLOW_SUCCEEDED"), "http://m/v2")
    assert not [t for t in launched if t.endswith("|executions|id:wx1")]
    assert len([t for t in launched if t.endswith("|executions|list")]) == 2
    assert len([t for t in succeeded if t.endswith("|executions|id:wx1")]) == 2

    class Watch:
        event_ttl, alive = 300.0, True

        def live(self) -> bool:
            return self.alive

        def covered(self, value: object) -> bool:
            return True

    watch = Watch()
    ttl = event_backed(lambda v: NOT_FOUND_TTL if isinstance(v, dict) and len(v) == 2 else 2.0, watch)
    assert ttl(not_found_marker("no such execution")) == NOT_FOUND_EVENT_TTL < 0.5
    assert ttl({"state": "RUNNING"}) == 300.0
    watch.alive = False  # no live stream: the state rules, 404s included, unchanged
    assert ttl(not_found_marker(None)) == NOT_FOUND_TTL and ttl({"state": "RUNNING"}) == 2.0

    # A learning policy keeps learning under events, its 404s capped the same way.
    from mistral_cache.mistral.policies import adaptive_state_ttl, make_policies, resource_ttl

    learning = event_backed(resource_ttl("executions", make_policies(executions=adaptive_state_ttl())), watch)
    context = {"key": "k", "meta": None, "now": 0.0, "name": "executions.get"}
    assert learning.decide(not_found_marker("gone"), **context)[0] == NOT_FOUND_TTL
    watch.alive = True
    assert learning.decide(not_found_marker("gone"), **context)[0] == NOT_FOUND_EVENT_TTL
    assert learning(not_found_marker("gone")) == NOT_FOUND_EVENT_TTL
    assert learning.decide({"state": "SUCCESS"}, **context)[0] > 3600  # the learner's own rule, unchanged
