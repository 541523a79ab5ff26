"""Helpers shared by the Mistral tests (plain code, not fixtures)."""

from __future__ import annotations

import json
import threading
import time
from collections import Counter
from typing import Any

__all__ = ["POLLER", "WF_GLOBAL", "WF_STEPS", "Requests", "Truth", "admin_receiver", "check_published_global_seen",
           "check_pollers_saw_every_change", "ensure_workflow", "entry_pttl"]


class Requests:
    """Counts the HTTP requests a mistralclient client sends to Mistral (wraps its
    ``http_client``): the upstream requests a cached read did or did not make."""

    def __init__(self, client: Any) -> None:
        self.counts: Counter[str] = Counter()
        http = client.workflows.http_client
        for method in ("get", "post", "put", "delete"):
            original = getattr(http, method)

            def counted(*args: Any, _m: str = method, _o: Any = original, **kwargs: Any) -> Any:
                self.counts[_m] += 1
                return _o(*args, **kwargs)

            setattr(http, method, counted)

    @property
    def total(self) -> int:
        return sum(self.counts.values())


# -- event-driven invalidation against a real Mistral (test_events.py, test_events_plugin.py) --
# A three-task workflow whose t2 sleeps 4 s: a quiet window where only a TTL could
# make a poller go upstream.
WF_STEPS = """
version: '2.0'
ev_steps:
  tasks:
    t1:
      action: std.sleep seconds=1
      on-success: t2
    t2:
      action: std.sleep seconds=4
      on-success: t3
    t3:
      action: std.noop
"""

# A poller process: polls an execution and its task list through CachedMistralClient
# every 20 ms; prints what it saw when (seen) and its upstream requests (upstream).
POLLER = r"""
import json, sys, time
from mistral_cache import Cache
from mistral_cache.mistral import CachedMistralClient
url, redis_url, ns, ex_id, seconds = sys.argv[1:6]
client = CachedMistralClient(mistral_url=url, cache=Cache(redis_url, namespace=ns))
session = client.http_client.session
upstream, original = [], session.request
def counting(method, u, **kw):
    upstream.append(time.time())
    return original(method, u, **kw)
session.request = counting
seen, last, done_at, end = [], {}, None, time.time() + float(seconds)
while time.time() < end:
    t = time.time()
    values = {"ex": client.executions.get(ex_id).state,
              "tasks": sorted([x.name, x.state] for x in client.tasks.list(workflow_execution_id=ex_id))}
    for k, v in values.items():
        if last.get(k) != v:
            last[k] = v
            seen.append([t, k, v])
    if values["ex"] == "SUCCESS":
        done_at = done_at or t
        if t - done_at > 0.5:
            break
    time.sleep(0.02)
print(json.dumps({"seen": seen, "upstream": upstream}))
"""


def entry_pttl(r: Any, client: Any, manager: str, method: str, *args: Any, **kwargs: Any) -> int:
    """The Redis PTTL of the entry a cached read of ``client`` would use."""
    key = client.cache.keyspace.entry(getattr(client, manager).cache_key(method, *args, **kwargs))
    return int(r.pttl(key))


class Truth:
    """The ground truth: a plain (uncached) client reads the execution and its task
    list every 20 ms in a thread. ``changes`` holds ``[start, kind, value, end,
    before]`` of each change: the sample that first showed it ran from ``start`` to
    ``end``, and the one before it (which did not) started at ``before``. So the
    change happened after ``before`` and was visible by ``end``, however slowly a
    loaded machine served the samples."""

    def __init__(self, plain: Any, ex_id: str) -> None:
        self.plain, self.ex_id = plain, ex_id
        self.changes: list[list[Any]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)

    def start(self) -> Truth:
        self._thread.start()
        return self

    def stop(self) -> list[list[Any]]:
        self._stop.set()
        self._thread.join(5)
        return self.changes

    def _sample(self) -> None:
        last: dict[str, Any] = {}
        before = None
        while not self._stop.is_set():
            t = time.time()
            values = {"ex": self.plain.executions.get(self.ex_id).state,
                      "tasks": sorted([x.name, x.state] for x in self.plain.tasks.list(workflow_execution_id=self.ex_id))}
            end = time.time()
            for k, v in values.items():
                if last.get(k) != v:
                    last[k] = v
                    self.changes.append([t, k, v, end, t if before is None else before])
            before = t
            time.sleep(0.02)


def check_pollers_saw_every_change(truth: list[list[Any]], results: list[dict[str, Any]]) -> None:
    """Each poller (a POLLER's output) saw every lasting change within 0.5 s of the
    truth seeing it, made no upstream request in a window of more than 2.5 s without
    a change (the 2 s state rule would make some), and at most 1.5 requests per
    change in all. The windows use the truth's bounds (``Truth``): a change is
    placed no earlier than it can have happened, nor later than it was seen."""
    changes = [c for i, c in enumerate(truth)
               if not any(d[1] == c[1] and 0 < d[0] - c[0] < 0.3 for d in truth[i + 1:])]  # lasting values
    assert len(changes) >= 5, truth
    ordered = sorted(truth, key=lambda c: c[0])
    for result in results:
        started = result["seen"][0][0]  # judge the changes made once the poller runs
        for t_true, kind, value, seen_by, _ in changes:
            if t_true < started:
                continue
            first = [t for t, k, v in result["seen"] if k == kind and v == value]
            assert first, f"a poller never saw {kind}={value}"
            assert first[0] - seen_by < 0.5, f"{kind}={value} seen {first[0] - seen_by:.2f}s after the truth saw it"
        # Between changes (t2 sleeps 4 s), no upstream request at all: the 2 s state rule would make some.
        for a, b in zip(ordered, ordered[1:]):
            quiet_from, quiet_to = a[3] + 0.6, b[4] - 0.1  # a seen by a[3]; b not before b[4]
            if b[0] - a[0] > 2.5:
                quiet = [t for t in result["upstream"] if quiet_from < t < quiet_to]
                assert not quiet, f"{len(quiet)} upstream requests in a {b[0] - a[0]:.1f}s window without a change"
    total = sum(len(r["upstream"]) for r in results)
    assert total <= len(results) * 1.5 * len(truth) + 2 * len(results), (total, len(truth))


# t1 and t3 publish nothing global (t3 a branch variable); t2 publishes a global one,
# which changes the execution's published_global when t2 finishes.
WF_GLOBAL = """
version: '2.0'
ev_global:
  tasks:
    t1:
      action: std.sleep seconds=1
      on-success: t2
    t2:
      action: std.sleep seconds=1
      on-success:
        publish:
          global:
            g: <% 40 + 2 %>
        next: t3
    t3:
      action: std.sleep seconds=1
      publish:
        b: 1
"""


def ensure_workflow(plain: Any, definition: str, name: str) -> Any:
    """The workflow ``name`` as ``definition`` says: created if absent, updated if it
    differs (the receiver never trusts an updated definition). Returns Mistral's record."""
    from mistralclient.api.base import APIException

    try:
        return plain.workflows.create(definition)[0]
    except APIException:  # there already
        current = plain.workflows.get(name)
        if current.definition.strip() == definition.strip():
            return current
        return plain.workflows.update(definition)[0]


def _published(ex: Any) -> Any:
    value = getattr(ex, "published_global", None) or {}
    return json.loads(value) if isinstance(value, str) else value


def check_published_global_seen(plain: Any, client: Any, ex_id: str, fetches: int) -> None:
    """Poll ``ex_id`` (a WF_GLOBAL execution) through ``client`` and the plain client
    until it ends: the cached read sees t2's global variable within 0.5 s of the
    plain one, and fetched the execution itself exactly ``fetches`` times."""
    session = client.http_client.session
    fetched: list[float] = []  # the cached client's upstream GETs of the execution itself
    original = session.request

    def counting(method: str, url: str, **kw: Any) -> Any:
        if url.split("?")[0].rstrip("/").endswith("/executions/" + ex_id):
            fetched.append(time.time())
        return original(method, url, **kw)

    session.request = counting
    truth: list[tuple[float, Any]] = []  # (first seen, published_global) by the plain client
    seen: list[tuple[float, Any]] = []  # the same through the cache
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        t = time.time()
        true = _published(plain.executions.get(ex_id))
        if not truth or truth[-1][1] != true:
            truth.append((t, true))
        t = time.time()
        cached = client.executions.get(ex_id)
        if not seen or seen[-1][1] != _published(cached):
            seen.append((t, _published(cached)))
        if cached.state == "SUCCESS":
            break
        time.sleep(0.02)
    client.close()
    assert [v for _, v in truth] == [{}, {"g": 42}], truth
    changed = truth[1][0]
    first = [t for t, v in seen if v == {"g": 42}]
    assert first and first[0] - changed < 0.5, (seen, truth)
    assert len(fetched) == fetches, f"{len(fetched)} fetches of the execution: {[round(t - fetched[0], 2) for t in fetched]}"


def admin_receiver(keystone: Any) -> list[str]:
    """``events serve`` options for a Keystone's admin (a password file, never the command line)."""
    return ["--keystone-url", keystone.url, "--keystone-password-file", str(keystone.password_file)]
