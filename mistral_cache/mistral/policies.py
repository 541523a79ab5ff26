"""How long a Mistral read may be cached: a table of callables of the result.

Each policy takes the cached value of one read -- a resource dict (``to_dict()``),
a list of them, or the negative-cache marker of a 404 -- and returns seconds.
The table is a plain dict keyed by manager name; :func:`make_policies` copies the
defaults and applies the user's overrides::

    policies = make_policies(executions=lambda d: 1.0 if d.get("state") == "RUNNING" else 600)

Mistral's states: SUCCESS (and SKIPPED for tasks) never change again;
ERROR and CANCELLED can go back to RUNNING (rerun); RUNNING, IDLE, PAUSED,
WAITING, DELAYED change at any time. Definitions are kept long: their correctness
comes from the invalidation the facade does on every write.

A policy may also be a learning strategy (:func:`mistral_cache.adaptive.adaptive`),
which keeps learning behind the facade; :func:`adaptive_state_ttl` composes one with
the state rules (final states fixed, active ones learnt)::

    CachedMistralClient(policies={"executions": adaptive_state_ttl(0.01),
                                  "workflows": adaptive(0.01, max_ttl=86400)})
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from typing import Any, Protocol

from ..adaptive import META_KEY, Adaptive, adaptive
from ..api import TTLPolicy
from . import timestamps

__all__ = [
    "NOT_FOUND_KEY",
    "SUCCESS_TTL",
    "FAILED_TTL",
    "ACTIVE_TTL",
    "DEFINITION_TTL",
    "NOT_FOUND_TTL",
    "NOT_FOUND_EVENT_TTL",
    "STATEFUL_LIST_TTL",
    "MIN_TTL",
    "FINAL_STATES",
    "FINAL_TASK_STATES",
    "FAILED_STATES",
    "Policy",
    "is_not_found",
    "not_found_marker",
    "state_ttl",
    "adaptive_state_ttl",
    "fixed_ttl",
    "cron_trigger_ttl",
    "DEFAULT_POLICIES",
    "STATEFUL",
    "make_policies",
    "ttl_for",
    "event_backed",
    "resource_ttl",
]

#: The key of the marker dict cached in place of a 404.
NOT_FOUND_KEY = "__mistral_cache_not_found__"

SUCCESS_TTL = 24 * 3600.0
FAILED_TTL = 5 * 60.0
ACTIVE_TTL = 2.0
DEFINITION_TTL = 3600.0
NOT_FOUND_TTL = 5.0
#: A 404 of a stateful resource while the event stream is live: its creation's
#: event does not clear it (a launch clears no read of the execution it launches),
#: so it is kept no longer than the events' freshness bound.
NOT_FOUND_EVENT_TTL = 0.25
#: Lists of executions, tasks or action executions can gain members at any time.
STATEFUL_LIST_TTL = 5.0
#: A cron trigger about to fire (or overdue) is kept this long at least.
MIN_TTL = 1.0

FINAL_STATES = frozenset({"SUCCESS"})
FINAL_TASK_STATES = frozenset({"SUCCESS", "SKIPPED"})
FAILED_STATES = frozenset({"ERROR", "CANCELLED"})

Policy = Callable[[Any], float]


def is_not_found(value: Any) -> bool:
    return isinstance(value, dict) and value.get(NOT_FOUND_KEY) is True


def not_found_marker(message: Any) -> dict[str, Any]:
    return {NOT_FOUND_KEY: True, "error_message": None if message is None else str(message)}


def state_ttl(
    final: frozenset[str] = FINAL_STATES,
    *,
    success: float = SUCCESS_TTL,
    failed: float = FAILED_TTL,
    active: float = ACTIVE_TTL,
) -> Policy:
    """A policy for stateful resources: long once final, minutes when failed, seconds otherwise
    (an unknown or missing state, e.g. a read with ``fields=`` leaving it out, counts as active)."""

    def policy(data: Any) -> float:
        state = data.get("state") if isinstance(data, Mapping) else None
        if state in final:
            return success
        if state in FAILED_STATES:
            return failed
        return active

    return policy


def adaptive_state_ttl(
    target_staleness: float = 0.01,
    final: frozenset[str] = FINAL_STATES,
    *,
    success: float = SUCCESS_TTL,
    failed: float = FAILED_TTL,
    min_ttl: float = 0.5,
    max_ttl: float = 60.0,
    **options: Any,
) -> Adaptive:
    """:func:`state_ttl` with the active states' TTL learnt, not fixed: a final or
    failed state keeps its rule; a RUNNING (or lists of) resource gets the TTL its
    function's observed change rate allows, within ``[min_ttl, max_ttl]``."""

    def rule(data: Any) -> float | None:
        state = data.get("state") if isinstance(data, Mapping) else None
        return success if state in final else failed if state in FAILED_STATES else None

    options.setdefault("initial_ttl", ACTIVE_TTL)
    return adaptive(target_staleness, min_ttl, max_ttl, base=rule, **options)


def fixed_ttl(seconds: float) -> Policy:
    def policy(data: Any) -> float:
        return seconds

    return policy


def cron_trigger_ttl(
    longest: float = DEFINITION_TTL, *, clock: Callable[[], float] = time.time, minimum: float = MIN_TTL
) -> Policy:
    """Never beyond the trigger's ``next_execution_time`` (UTC): it moves every time it fires."""

    def policy(data: Any) -> float:
        if not isinstance(data, Mapping):
            return longest
        if "next_execution_time" not in data:  # e.g. a read with fields= leaving it out
            return min(longest, 60.0)
        at = timestamps.parse(data.get("next_execution_time"))
        if at is None:
            return longest
        return max(minimum, min(longest, at - clock()))

    return policy


#: Per manager: the policy of one resource of that kind.
DEFAULT_POLICIES: dict[str, Policy] = {
    "executions": state_ttl(FINAL_STATES),
    "tasks": state_ttl(FINAL_TASK_STATES),
    "action_executions": state_ttl(FINAL_STATES),
    "workflows": fixed_ttl(DEFINITION_TTL),
    "workbooks": fixed_ttl(DEFINITION_TTL),
    "actions": fixed_ttl(DEFINITION_TTL),
    "environments": fixed_ttl(DEFINITION_TTL),
    "code_sources": fixed_ttl(DEFINITION_TTL),
    "dynamic_actions": fixed_ttl(DEFINITION_TTL),
    "event_triggers": fixed_ttl(DEFINITION_TTL),
    "members": fixed_ttl(DEFINITION_TTL),
    "cron_triggers": cron_trigger_ttl(),
    # not a manager: the TTL of a cached 404, and the cap on lists of stateful resources
    "not_found": fixed_ttl(NOT_FOUND_TTL),
    "stateful_list": fixed_ttl(STATEFUL_LIST_TTL),
}

STATEFUL = frozenset({"executions", "tasks", "action_executions"})


def make_policies(overrides: Mapping[str, Policy | float] | None = None, **more: Policy | float) -> dict[str, Policy]:
    """The default table with overrides (a callable of the result, or plain seconds)."""
    table = dict(DEFAULT_POLICIES)
    for name, policy in {**(overrides or {}), **more}.items():
        if name not in table:
            raise ValueError(f"no Mistral cache policy named {name!r}; known: {sorted(table)}")
        table[name] = policy if callable(policy) else fixed_ttl(float(policy))
    return table


def ttl_for(resource: str, value: Any, table: Mapping[str, Policy] = DEFAULT_POLICIES) -> float:
    """Seconds to keep ``value`` (one read's result) of the manager ``resource``."""
    if is_not_found(value):
        return float(table["not_found"](value))
    policy = table[resource]
    if isinstance(value, list):
        ttls = [float(policy(item)) for item in value]
        if resource in STATEFUL:
            ttls.append(float(table["stateful_list"](value)))
        return min(ttls) if ttls else float(table["stateful_list"](value) if resource in STATEFUL else policy({}))
    return float(policy(value))


class _LearningTTL:
    """The TTL strategy of one read whose policy learns: 404 markers and the cap on
    stateful lists keep their rules; everything else goes to the learner's hooks."""

    def __init__(self, resource: str, table: Mapping[str, Policy]) -> None:
        self.resource, self.table = resource, table
        self.learner: Any = table[resource]

    def __call__(self, value: Any) -> float:
        return ttl_for(self.resource, value, self.table)

    def bind(self, name: str, stats: Any) -> Any:
        return self.learner.bind(name, stats)

    def decide(self, value: Any, **context: Any) -> tuple[float, dict[str, Any], float]:
        if is_not_found(value):
            return float(self.table["not_found"](value)), {}, 0.0
        ttl, extra, retain = self.learner.decide(value, **context)
        cap = self.table["stateful_list"]
        if isinstance(value, list) and self.resource in STATEFUL and not isinstance(cap, TTLPolicy):
            # (a learning cap would only give its prior here: lists learn their own)
            capped = float(cap(value))
            if capped < ttl:
                ttl = capped
                state = extra.get(META_KEY)
                if isinstance(state, dict):  # the learner measures waits from the TTL really used
                    extra = {**extra, META_KEY: {**state, "T": ttl}}
        return float(ttl), extra, float(retain)


class _Watch(Protocol):
    event_ttl: float

    def live(self) -> bool: ...

    def covered(self, value: Any) -> bool: ...


class _EventBackedLearning:
    """A learning policy under events: it keeps learning (it learns what events would
    tell it), but a 404 is kept no longer than :data:`NOT_FOUND_EVENT_TTL` while the
    stream is live -- a launch event does not clear it (see :func:`event_backed`)."""

    def __init__(self, learning: TTLPolicy, watch: _Watch) -> None:
        self.learning, self.watch = learning, watch

    def __call__(self, value: Any) -> float:
        return _cap_not_found(value, float(self.learning(value)), self.watch)

    def bind(self, name: str, stats: Any) -> Any:
        return self.learning.bind(name, stats)

    def decide(self, value: Any, **context: Any) -> tuple[float, Any, float]:
        ttl, extra, retain = self.learning.decide(value, **context)
        return _cap_not_found(value, float(ttl), self.watch), extra, float(retain)


def _cap_not_found(value: Any, ttl: float, watch: _Watch) -> float:
    """A 404 kept at most :data:`NOT_FOUND_EVENT_TTL` while the stream is live."""
    return min(ttl, NOT_FOUND_EVENT_TTL) if is_not_found(value) and watch.live() else ttl


def event_backed(ttl: Any, watch: _Watch) -> Any:
    """``ttl`` (a policy of the result), lengthened to ``watch.event_ttl`` for values
    whose every change is pushed to us, while the event stream's lease is live; a
    404 is then kept at most :data:`NOT_FOUND_EVENT_TTL` (WORKFLOW_LAUNCHED leaves
    reads of its execution alone, so it does not clear a 404 of an id its creator
    chose). A learning policy keeps learning, 404s capped the same way."""
    if isinstance(ttl, TTLPolicy):
        return _EventBackedLearning(ttl, watch)
    if not callable(ttl):
        return ttl

    def policy(value: Any) -> float:
        seconds = float(ttl(value))
        if not watch.live() or is_not_found(value):
            return _cap_not_found(value, seconds, watch)
        return max(seconds, watch.event_ttl) if watch.covered(value) else seconds

    return policy


def resource_ttl(resource: str, table: Mapping[str, Policy] = DEFAULT_POLICIES) -> Policy:
    """The ``ttl=`` of one read of ``resource``: :func:`ttl_for` over ``table``, or
    a strategy that keeps a learning policy (one with ``decide``) learning."""
    if isinstance(table[resource], TTLPolicy):
        return _LearningTTL(resource, table)
    return lambda value: ttl_for(resource, value, table)
