"""Issue 17, key findings: M1 (template keys injective), M2 (long keys not
forgeable), L1 (default-key collisions), L5 (credentials never in clear), and
the probes that found nothing (default keys of look-alike values stay apart).
Pure unit tests: keys are built without a cache."""

from __future__ import annotations

import enum
import math
from collections.abc import Callable
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mistral_cache.exceptions import ConfigurationError
from mistral_cache.keys import KeyBuilder, format_template, shorten

# -- helpers ------------------------------------------------------------------


def ident(v: object) -> tuple[type, str]:
    """What makes two arguments "the same" for a key: type and canonical text
    (repr tells 0.0 from -0.0; all NaNs are one value)."""
    return (type(v), repr(v))


def get_workflow(name: str, namespace: str = "") -> None: ...


def item(i: object) -> None: ...


def pair(a: object, b: object) -> None: ...


def login(user: str, password: str) -> None: ...


def keys_of(kb: KeyBuilder, *args: object) -> set[str]:
    """Both paths (compiled positional and binding) must agree; return the key once."""
    fast, slow = kb.build(args, {}), kb(args, {})
    assert fast == slow
    return {fast}


values = st.one_of(
    st.text(),
    st.text(alphabet=":|%#-~{}0123456789ab.\\'\" \n\x00"),  # the characters that matter, often
    st.integers(),
    st.floats(),
    st.booleans(),
    st.none(),
)

TEMPLATES = ["k:{a}:{b}", "{a}|{b}", "x{a}-{b}y", "{a}%:{b}", "{a}#-{b}", "p/{a}.{b}", "{a}::{b}", "{a}a:{b}", "{a}~{b}", "{a} {b}", "a/b.c:{a}|{b};"]


# -- M1: template keys are injective --------------------------------------------


def test_m1_readme_example_no_longer_collides() -> None:
    kb = KeyBuilder(get_workflow, "workflow:{name}:{namespace}")
    assert kb.build(("a:b", "c"), {}) != kb.build(("a", "b:c"), {})
    assert kb(("a:b", "c"), {}) != kb(("a", "b:c"), {})


def test_m1_template_tells_types_apart() -> None:
    kb = KeyBuilder(item, "item:{i}")
    keys = [kb.build((v,), {}) for v in (1, "1", True, 1.0, None, "None", "True", b"1", -1, "-1", "#1")]
    assert len(set(keys)) == len(keys), keys


def test_m1_keys_stay_readable() -> None:
    """The common values keep the text people grep for."""
    assert KeyBuilder(get_workflow, "workflow:{name}:{namespace}").build(("hello", ""), {}) == "workflow:hello:"
    assert KeyBuilder(item, "item:{i}").build((42,), {}) == "item:42"
    assert KeyBuilder(item, "ex:{i}").build(("0b5d3a5e-8f7a-4c1e-9a57-1f0a9d3c2b11",), {}) == "ex:0b5d3a5e-8f7a-4c1e-9a57-1f0a9d3c2b11"


def _look_alikes(template: str, a: object, b: object) -> list[tuple[object, object]]:
    """Argument pairs that plain ``str.format`` would give the key of (a, b): the
    formatted text re-split at every place, and each value swapped for its text.
    Random pairs almost never collide; these are where collisions live."""
    fields = template.replace("{a}", "\0").replace("{b}", "\0")
    head, sep, tail = fields.split("\0")
    text = f"{a}{sep}{b}"
    out: list[tuple[object, object]] = [(str(a), b), (a, str(b)), (str(a), str(b))]
    for i in range(len(text) + 1):
        if text[i:].startswith(sep):
            left, right = text[:i], text[i + len(sep):]
            out.append((left, right))
            for conv in (int, float):
                try:
                    out.append((conv(left), right))
                    out.append((left, conv(right)))
                except ValueError:
                    pass
    return out


@settings(max_examples=300)
@given(st.sampled_from(TEMPLATES), values, values)
def test_m1_template_keys_are_injective(template: str, a: object, b: object) -> None:
    kb = KeyBuilder(pair, template)
    key = keys_of(kb, a, b)
    for a2, b2 in _look_alikes(template, a, b):
        if (ident(a2), ident(b2)) != (ident(a), ident(b)):
            assert keys_of(kb, a2, b2) != key, (a, b, a2, b2)


@settings(max_examples=300)
@given(values, values, values, values)
def test_m1_template_keys_are_injective_on_random_pairs(a1: object, b1: object, a2: object, b2: object) -> None:
    kb = KeyBuilder(pair, "k:{a}:{b}")
    if keys_of(kb, a1, b1) == keys_of(kb, a2, b2):
        assert (ident(a1), ident(b1)) == (ident(a2), ident(b2))


@settings(max_examples=300)
@given(values, values)
def test_m1_templates_with_one_prefix_stay_apart(a: object, b: object) -> None:
    """wf:{i} and wf:{a}:{b} in one namespace: one function's key is never the
    other's (fields escape the template's punctuation)."""
    one = KeyBuilder(item, "wf:{i}")
    two = KeyBuilder(pair, "wf:{a}:{b}")
    assert keys_of(one, f"{a}:{b}") != keys_of(two, a, b)
    assert keys_of(one, a) != keys_of(two, a, b)


def test_m1_fields_must_be_separated() -> None:
    with pytest.raises(ConfigurationError, match="separate"):
        KeyBuilder(pair, "{a}{b}")
    with pytest.raises(ConfigurationError, match="separate"):
        KeyBuilder(pair, "{a}x{b}")
    with pytest.raises(ConfigurationError, match="separate"):
        format_template("{a}{b}", {"a": 1, "b": 2}, "f")
    for template in ("{a}%25{b}", "{a}#{b}"):  # % and # are the escape and the tag: not delimiters
        with pytest.raises(ConfigurationError, match="separate"):
            KeyBuilder(pair, template)


# -- tags: injective, and spelled as documented ---------------------------------------


@settings(max_examples=300)
@given(st.text(alphabet=":%ab"), st.text(alphabet=":%ab"), st.text(), st.text())
def test_tags_are_injective_on_their_field_texts(a1: str, b1: str, a2: str, b2: str) -> None:
    def tag(a: str, b: str) -> str:
        return format_template("grp:{a}:{b}", {"a": a, "b": b}, "f")

    text = f"{a1}:{b1}"
    for i, c in enumerate(text):  # every re-split of the plain text, then random pairs
        if c == ":" and (text[:i], text[i + 1:]) != (a1, b1):
            assert tag(text[:i], text[i + 1:]) != tag(a1, b1)
    if tag(a1, b1) == tag(a2, b2):
        assert (a1, b1) == (a2, b2)


@given(st.one_of(st.text(), st.integers(), st.booleans(), st.none()))
def test_tag_last_field_is_written_as_is(v: object) -> None:
    """invalidate_tags(f"user:{x}") names the tag of tags=["user:{x}"] for any x."""
    assert format_template("user:{x}", {"x": v}, "f") == f"user:{v}"
    assert format_template("wf:{a}:{b}", {"a": "hello", "b": v}, "f") == f"wf:hello:{v}"


# -- M2: a long key's hashed form cannot be spelled out -------------------------------


def test_m2_short_key_cannot_spell_a_hashed_key() -> None:
    kb = KeyBuilder(item, "item:{i}")
    victim = kb.build(("v" * 300,), {})
    assert len(victim) < 200  # hashed
    forged = victim[len("item:"):]
    assert kb.build((forged,), {}) != victim
    assert kb((forged,), {}) != victim
    assert KeyBuilder(item, lambda i: str(i))((victim,), {}) != victim
    assert shorten(victim) != victim


@given(st.text(min_size=100, max_size=120))
def test_m2_hashed_and_verbatim_forms_never_meet(s: str) -> None:
    long_key = "k:" + s * 3
    assert shorten(shorten(long_key)) != shorten(long_key) or len(long_key) <= 200


# -- L1: default-key collisions ----------------------------------------------------------


def test_l1_empty_dict_and_empty_set() -> None:
    kb = KeyBuilder(item)
    keys = [kb.build((v,), {}) for v in ({}, set(), frozenset(), [], ())]
    assert len(set(keys)) == len(keys), keys


def _factory(kind: str) -> Callable[[int], str]:
    def fetch(i: int) -> str:
        return f"{kind}:{i}"

    return fetch


def test_l1_factory_closures_do_not_share_keys() -> None:
    users, groups = KeyBuilder(_factory("user")), KeyBuilder(_factory("group"))
    assert users.build((1,), {}) != groups.build((1,), {})
    assert users((1,), {}) != groups((1,), {})
    assert KeyBuilder(_factory("user")).build((1,), {}) == users.build((1,), {})  # stable across instances


class _Masked(str):
    def __repr__(self) -> str:
        return "Masked(***)"


class _Num(int):
    def __repr__(self) -> str:
        return "Num"


def test_l1_str_subclass_with_own_repr() -> None:
    kb = KeyBuilder(item)
    assert kb.build((_Masked("a"),), {}) != kb.build((_Masked("b"),), {})
    assert kb.build((_Num(1),), {}) != kb.build((_Num(2),), {})
    assert kb.build(((_Masked("a"),),), {}) != kb.build(((_Masked("b"),),), {})


def test_l1_enums_of_one_qualname_in_two_modules() -> None:
    one: Any = enum.Enum("Color", "RED", module="app.one")
    two: Any = enum.Enum("Color", "RED", module="app.two")
    kb = KeyBuilder(item)
    assert kb.build((one.RED,), {}) != kb.build((two.RED,), {})


def test_l1_cache_key_hook_results_are_encoded() -> None:
    class K:
        def __init__(self, v: str) -> None:
            self.v = v

        def __cache_key__(self) -> str:
            return self.v

    kb = KeyBuilder(item)
    q = f"{K.__module__}.{K.__qualname__}"
    for forged in (f"a>,{K.__qualname__}<b", f"a>,{q}<b"):
        assert kb.build(((K(forged),),), {}) != kb.build(((K("a"), K("b")),), {})


# -- L5: credentials never appear in clear ---------------------------------------------


def test_l5_default_key_hides_credentials() -> None:
    kb = KeyBuilder(login)
    k1, k2 = kb.build(("alice", "hunter2"), {}), kb.build(("alice", "hunter3"), {})
    assert "hunter2" not in k1 and "alice" in k1
    assert k1 != k2  # a wrong password never hits the right one's entry
    assert k1 == kb((), {"user": "alice", "password": "hunter2"})


def test_l5_template_key_hides_credentials() -> None:
    kb = KeyBuilder(login, "login:{user}:{password}")
    (k1,), (k2,) = keys_of(kb, "alice", "hunter2"), keys_of(kb, "alice", "hunter3")
    assert "hunter2" not in k1 and k1.startswith("login:alice:")
    assert k1 != k2


@pytest.mark.parametrize("name", ["password", "api_key", "apiKey", "access_token", "client_secret", "passwd", "auth", "credentials"])
def test_l5_credential_names(name: str) -> None:
    ns: dict[str, Any] = {}
    exec(f"def f(user, {name}): pass", ns)
    kb = KeyBuilder(ns["f"])
    assert "s3cr3t-value" not in kb.build(("u", "s3cr3t-value"), {})


def test_l5_ordinary_names_stay_readable() -> None:
    ns: dict[str, Any] = {}
    exec("def f(author, key, tokenless_count): pass", ns)
    key = KeyBuilder(ns["f"]).build(("ann", "k1", 3), {})
    assert "'ann'" in key and "'k1'" in key


# -- probes that found nothing must stay that way ------------------------------------------


def test_probe_default_keys_of_look_alike_values_are_distinct() -> None:
    kb = KeyBuilder(item)
    probes: list[object] = [
        "|", ":", "{", "}", "{}", "\n", "\\n", "\x00", "\\x00", "a|b", "a:b",
        "\u00e9", "e\u0301",  # NFC / NFD
        1, True, 1.0, "1", b"1", 0, False, 0.0, -0.0, None, "None", "True",
        math.inf, "inf", (1,), [1], "(1,)",
    ]
    keys = [kb.build((p,), {}) for p in probes]
    assert len(set(keys)) == len(keys)
    two = KeyBuilder(pair)
    assert two.build(("a", "b,c"), {}) != two.build(("a,b", "c"), {})
    assert two.build(("a'", "b"), {}) != two.build(("a", "'b"), {})
