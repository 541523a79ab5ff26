"""CachedMistralClient against a REAL Mistral server and a real Redis (fixture
``redis_url``): same answers as the uncached client, read-after-write,
state-following TTLs, negative caching, tenant isolation. Every test that talks
to Mistral runs twice: ``[noauth]`` against the server without authentication,
``[keystone]`` against the Keystone-authenticated one, as its admin (whose
policy opens every API these tests read) through a keystoneauth session."""

from __future__ import annotations

import calendar
import itertools
import os
import subprocess
import sys
import textwrap
import time
import uuid
from collections import Counter

import pytest
import requests
import tenacity
from keystoneauth1.exceptions import ConnectFailure
from mistralclient.api import client as mistral_client_module
from mistralclient.api.base import APIException
from mistralclient.api.v2.executions import Execution
from mistralclient.api.v2.workflows import Workflow

from mistral_cache import Cache, Clock
from mistral_cache.adaptive import adaptive
from mistral_cache.mistral import DEFAULT_PROJECT, CachedMistralClient, is_transient, policies, scope_for
from tests.mistral.helpers import Requests

FINAL = ("SUCCESS", "ERROR", "CANCELLED")


# -- helpers -------------------------------------------------------------------
#: Mistral URL -> the mistralclient arguments that log in to it (the authenticated server).
CREDENTIALS: dict[str, dict] = {}
#: Mistral URL -> (Keystone URL, a bare token) for the reader in another process.
TOKENS_FOR: dict[str, tuple[str, str]] = {}


def new_client(url):
    return mistral_client_module.client(mistral_url=url, **CREDENTIALS.get(url, {}))


@pytest.fixture(scope="module", params=["noauth", "keystone"])
def mistral_url(request):
    if request.param == "noauth":
        return request.getfixturevalue("plain_mistral_url")
    url = request.getfixturevalue("auth_mistral_url")
    admin = request.getfixturevalue("tenants").admin
    CREDENTIALS[url] = {"session": admin.session()}
    TOKENS_FOR[url] = (admin.keystone.url, admin.token())
    return url


def authenticated(url) -> bool:
    return url in CREDENTIALS


def workflow_definition(name, description="first", sleep=0):
    nap = f"""      on-success: [nap]
    nap:
      action: std.sleep seconds={sleep}
""" if sleep else ""
    return f"""---
version: '2.0'
{name}:
  description: {description}
  type: direct
  tasks:
    echo:
      action: std.echo output="{description}"
{nap}"""


def wait_final(read, execution_id, deadline=60.0):
    end = time.monotonic() + deadline
    while True:
        ex = read(execution_id)
        if ex.state in FINAL:
            return ex
        if time.monotonic() > end:
            pytest.fail(f"execution {execution_id} still {ex.state} after {deadline}s")
        time.sleep(0.1)


def same(a, b):
    """Facade result equals uncached result: same types, same to_dict()."""
    if isinstance(a, list):
        assert isinstance(b, list) and len(a) == len(b)
        for x, y in zip(a, b):
            same(x, y)
        return
    assert type(a) is type(b)
    assert a.to_dict() == b.to_dict()


# -- fixtures ------------------------------------------------------------------
@pytest.fixture
def cache(redis_url, namespace):
    c = Cache(redis_url, namespace=namespace)
    yield c
    c.close()


@pytest.fixture
def raw(mistral_url):
    """The uncached client: the reference answers."""
    return new_client(mistral_url)


@pytest.fixture
def upstream(mistral_url):
    """The real client under the facade, with its requests counted."""
    client = new_client(mistral_url)
    client.requests = Requests(client)
    return client


@pytest.fixture
def facade(upstream, cache):
    return CachedMistralClient(upstream, cache=cache)


@pytest.fixture
def ns():
    return "ns" + uuid.uuid4().hex[:10]


@pytest.fixture
def world(raw, ns):
    """Definitions and a finished execution to read: workflows, a workbook, an
    environment, a cron trigger, in a namespace of their own."""
    names = [f"wf_{i}_{uuid.uuid4().hex[:8]}" for i in range(3)]
    for name in names:
        raw.workflows.create(workflow_definition(name), namespace=ns)
    wb = f"wb_{uuid.uuid4().hex[:8]}"
    raw.workbooks.create(f"""---
version: '2.0'
name: {wb}
workflows:
  inner:
    tasks:
      hello:
        action: std.noop
actions:
  greet:
    base: std.echo
    base-input:
      output: hello
""", namespace=ns)
    env = f"env_{uuid.uuid4().hex[:8]}"
    raw.environments.create(name=env, variables={"a": 1, "b": "two"}, description="test env")
    ex = raw.executions.create(names[0], namespace=ns)
    ex = wait_final(raw.executions.get, ex.id)
    assert ex.state == "SUCCESS", ex.state_info
    trigger = f"ct_{uuid.uuid4().hex[:8]}"
    # a cron trigger needs a workflow in the default namespace
    cron_wf = f"cronwf_{uuid.uuid4().hex[:8]}"
    raw.workflows.create(workflow_definition(cron_wf))
    raw.cron_triggers.create(trigger, cron_wf, pattern="0 0 1 1 *")
    yield {"workflows": names, "workbook": wb, "env": env, "execution": ex.id, "trigger": trigger}
    for cleanup in (
        lambda: raw.cron_triggers.delete(trigger),
        lambda: raw.workflows.delete(cron_wf),
        lambda: raw.executions.delete(ex.id, force=True),
        lambda: raw.environments.delete(env),
        lambda: raw.workbooks.delete(wb, namespace=ns),
        *[(lambda n=n: raw.workflows.delete(n, namespace=ns)) for n in names],
    ):
        try:
            cleanup()
        except APIException:
            pass


# -- the tests -----------------------------------------------------------------
def test_every_read_matches_the_uncached_client(world, raw, facade, upstream, ns):
    names, ex_id = world["workflows"], world["execution"]
    tasks = raw.tasks.list(workflow_execution_id=ex_id)
    task_id = tasks[0].id
    action_ex = raw.action_executions.list(task_execution_id=task_id)
    page1 = raw.workflows.list(namespace=ns, limit=2)
    actions_page1 = raw.actions.list(limit=5)
    reads = {
        "workflows.get": lambda c: c.workflows.get(names[1], namespace=ns),
        "workflows.get by id": lambda c: c.workflows.get(page1[0].id),
        "workflows.list": lambda c: c.workflows.list(namespace=ns),
        "workflows.list page 1": lambda c: c.workflows.list(namespace=ns, limit=2),
        "workflows.list page 2": lambda c: c.workflows.list(namespace=ns, limit=2, marker=page1[-1].id),
        "workflows.list sorted": lambda c: c.workflows.list(namespace=ns, sort_keys="name", sort_dirs="desc"),
        "workflows.list fields": lambda c: c.workflows.list(namespace=ns, fields=["name", "namespace"]),
        "workflows.list filter": lambda c: c.workflows.list(namespace=ns, name=names[2]),
        "workbooks.get": lambda c: c.workbooks.get(world["workbook"], namespace=ns),
        "workbooks.list": lambda c: c.workbooks.list(namespace=ns),
        "executions.get": lambda c: c.executions.get(ex_id),
        "executions.list filter": lambda c: c.executions.list(workflow_name=names[0]),
        "executions.list page": lambda c: c.executions.list(limit=1, workflow_name=names[0], sort_keys="created_at"),
        "executions.sub": lambda c: c.executions.get_ex_sub_executions(ex_id),
        "tasks.list of execution": lambda c: c.tasks.list(workflow_execution_id=ex_id),
        "tasks.list filter": lambda c: c.tasks.list(workflow_execution_id=ex_id, name="echo"),
        "tasks.get": lambda c: c.tasks.get(task_id),
        "tasks.sub": lambda c: c.tasks.get_task_sub_executions(task_id),
        "action_executions.list": lambda c: c.action_executions.list(task_execution_id=task_id),
        "action_executions.get": lambda c: c.action_executions.get(action_ex[0].id),
        "actions.get": lambda c: c.actions.get("std.echo"),
        "actions.get workbook action": lambda c: c.actions.get(f"{world['workbook']}.greet", namespace=ns),
        "actions.list page 1": lambda c: c.actions.list(limit=5),
        "actions.list page 2": lambda c: c.actions.list(limit=5, marker=actions_page1[-1].id),
        "actions.list filter": lambda c: c.actions.list(name="std.echo"),
        "environments.get": lambda c: c.environments.get(world["env"]),
        "environments.list": lambda c: c.environments.list(),
        "cron_triggers.get": lambda c: c.cron_triggers.get(world["trigger"]),
        "cron_triggers.list": lambda c: c.cron_triggers.list(),
        "event_triggers.list": lambda c: c.event_triggers.list(),
        "code_sources.list": lambda c: c.code_sources.list(),
        "dynamic_actions.list": lambda c: c.dynamic_actions.list(),
    }
    assert len(action_ex) == 1
    for label, read in reads.items():
        expected = read(raw)
        first = read(facade)  # a miss: from the server
        same(first, expected)
        before = upstream.requests.total
        second = read(facade)  # a hit
        same(second, expected)
        assert upstream.requests.total == before, f"{label}: the second read reached the server"
    assert isinstance(facade.workflows.get(names[1], namespace=ns), Workflow)
    # pages differ, and a mutated returned resource does not change the cached one
    assert [w.name for w in facade.workflows.list(namespace=ns, limit=2)] == [w.name for w in page1]
    env = facade.environments.get(world["env"])
    assert env.variables == {"a": 1, "b": "two"}
    env.to_dict()  # a copy
    env._data["description"] = "mutated"
    assert facade.environments.get(world["env"]).description == "test env"


def test_signatures_and_delegation_match_the_real_client(raw, facade):
    import inspect

    for name in CachedMistralClient.MANAGERS:
        real, cached = getattr(raw, name), getattr(facade, name)
        for method in ("get", "list", "create", "update", "delete", "rerun", "validate"):
            if hasattr(real, method):
                assert inspect.signature(getattr(cached, method)) == inspect.signature(getattr(real, method)), (name, method)
    assert facade.executions.resource_class is Execution  # delegated attribute
    assert facade.workflows.validate(workflow_definition("validate_me"))["valid"] is True


def test_read_after_write_here_and_in_another_cache(mistral_url, redis_url, namespace, facade, raw, ns):
    other_client = new_client(mistral_url)
    other_cache = Cache(redis_url, namespace=namespace)
    other = CachedMistralClient(other_client, cache=other_cache)
    try:
        name = f"raw_{uuid.uuid4().hex[:8]}"
        facade.workflows.create(workflow_definition(name, "first"), namespace=ns)
        assert "first" in facade.workflows.get(name, namespace=ns).definition
        assert "first" in other.workflows.get(name, namespace=ns).definition
        assert name in [w.name for w in other.workflows.list(namespace=ns)]
        assert other_cache.listener is not None and other_cache.listener.connected.wait(5)

        facade.workflows.update(workflow_definition(name, "second"), namespace=ns)
        assert "second" in facade.workflows.get(name, namespace=ns).definition  # this process: at once
        deadline = time.monotonic() + 2.0
        while "second" not in other.workflows.get(name, namespace=ns).definition:
            assert time.monotonic() < deadline, "the other cache still serves the old definition"
            time.sleep(0.01)
        same(other.workflows.get(name, namespace=ns), raw.workflows.get(name, namespace=ns))

        env = f"env_{uuid.uuid4().hex[:8]}"
        facade.environments.create(name=env, variables={"v": 1})
        assert other.environments.get(env).variables == {"v": 1}
        facade.environments.update(name=env, variables={"v": 2})
        assert facade.environments.get(env).variables == {"v": 2}
        deadline = time.monotonic() + 2.0
        while other.environments.get(env).variables != {"v": 2}:
            assert time.monotonic() < deadline
            time.sleep(0.01)
        facade.environments.delete(env)

        facade.workflows.delete(name, namespace=ns)
        with pytest.raises(APIException) as caught:
            facade.workflows.get(name, namespace=ns)
        assert caught.value.error_code == 404
        assert name not in [w.name for w in facade.workflows.list(namespace=ns)]
        deadline = time.monotonic() + 2.0
        while name in [w.name for w in other.workflows.list(namespace=ns)]:
            assert time.monotonic() < deadline
            time.sleep(0.01)
    finally:
        other_cache.close()


def test_workbook_update_invalidates_its_workflows_and_actions(facade, raw, ns):
    wb = f"wb_{uuid.uuid4().hex[:8]}"

    def book(word):
        return f"""---
version: '2.0'
name: {wb}
workflows:
  inner:
    description: {word}
    tasks:
      t:
        action: std.noop
actions:
  act:
    description: {word}
    base: std.echo
    base-input:
      output: {word}
"""

    facade.workbooks.create(book("one"), namespace=ns)
    try:
        assert facade.workflows.get(f"{wb}.inner", namespace=ns).to_dict()["definition"].count("one")
        assert facade.actions.get(f"{wb}.act", namespace=ns).description == "one"
        assert "one" in facade.workbooks.get(wb, namespace=ns).definition
        facade.workbooks.update(book("two"), namespace=ns)
        same(facade.workflows.get(f"{wb}.inner", namespace=ns), raw.workflows.get(f"{wb}.inner", namespace=ns))
        assert facade.actions.get(f"{wb}.act", namespace=ns).description == "two"
        assert "two" in facade.workbooks.get(wb, namespace=ns).definition
    finally:
        facade.workbooks.delete(wb, namespace=ns)


def test_polled_execution_follows_its_state(facade, raw, upstream, ns):
    name = f"sleepy_{uuid.uuid4().hex[:8]}"
    raw.workflows.create(workflow_definition(name, "nap", sleep=2), namespace=ns)
    try:
        ex = facade.executions.create(name, namespace=ns)
        assert ex.state == "RUNNING"
        seen, server_success, facade_success = [], None, None
        end = time.monotonic() + 60
        while facade_success is None:
            assert time.monotonic() < end, f"facade saw {seen}"
            now = time.monotonic()
            if server_success is None and raw.executions.get(ex.id).state == "SUCCESS":
                server_success = now
            state = facade.executions.get(ex.id).state
            if not seen or seen[-1] != state:
                seen.append(state)
            if state == "SUCCESS":
                facade_success = now
                if server_success is None:  # it finished between the two reads: the server had it first
                    server_success = now
            time.sleep(0.05)
        assert seen == ["RUNNING", "SUCCESS"]
        assert server_success is not None
        lag = facade_success - server_success
        assert lag <= policies.ACTIVE_TTL + 0.5, f"SUCCESS reported {lag:.2f}s after the server had it"

        # final: served from the cache, the server never asked again
        before = upstream.requests.total
        for _ in range(50):
            assert facade.executions.get(ex.id).state == "SUCCESS"
        assert upstream.requests.total == before
        key = facade.executions.cache_key("get", ex.id)
        ttl = facade.cache.redis.client().pttl(facade.cache.keyspace.entry(key)) / 1000
        assert ttl > 3600, "a SUCCESS execution is kept long"

        # a write invalidates it: the next read goes to the server
        facade.executions.update(ex.id, None, description="renamed")
        assert facade.executions.get(ex.id).description == "renamed"
        assert upstream.requests.counts["get"] > 0
        facade.executions.delete(ex.id)
        with pytest.raises(APIException) as caught:
            facade.executions.get(ex.id)
        assert caught.value.error_code == 404
    finally:
        raw.workflows.delete(name, namespace=ns)


def test_not_found_is_cached_briefly_and_errors_keep_their_type(facade, upstream, ns):
    name = f"later_{uuid.uuid4().hex[:8]}"
    with pytest.raises(APIException) as first:
        facade.workflows.get(name, namespace=ns)
    assert first.value.error_code == 404 and name in str(first.value.error_message)
    before = upstream.requests.total
    for _ in range(5):
        with pytest.raises(APIException) as again:
            facade.workflows.get(name, namespace=ns)
        assert again.value.error_code == 404
        assert str(again.value) == str(first.value)
    assert upstream.requests.total == before, "the 404 was not cached"
    # ... briefly: and a create through the facade ends it at once
    facade.workflows.create(workflow_definition(name), namespace=ns)
    try:
        assert facade.workflows.get(name, namespace=ns).name == name
    finally:
        facade.workflows.delete(name, namespace=ns)

    with pytest.raises(APIException) as bad:
        facade.workflows.create("this is: [not a workflow", namespace=ns)
    assert bad.value.error_code == 400
    with pytest.raises(APIException) as empty:
        facade.executions.get("")
    assert empty.value.error_code == 400
    with pytest.raises(APIException) as dup:
        name2 = f"dup_{uuid.uuid4().hex[:8]}"
        facade.workflows.create(workflow_definition(name2), namespace=ns)
        try:
            facade.workflows.create(workflow_definition(name2), namespace=ns)
        finally:
            facade.workflows.delete(name2, namespace=ns)
    assert dup.value.error_code == 409
    # the 404 TTL is the policy's
    assert policies.ttl_for("workflows", policies.not_found_marker("x")) == policies.NOT_FOUND_TTL


def test_server_gone_cached_reads_served_others_raise_after_bounded_retries(mistral_url, cache, ns):
    client = new_client(mistral_url)
    attempts = Counter()

    def transient(exc):
        attempts["x"] += 1
        return is_transient(exc)

    retry = tenacity.Retrying(
        retry=tenacity.retry_if_exception(transient), stop=tenacity.stop_after_attempt(3),
        wait=tenacity.wait_none(), reraise=True,
    )
    facade = CachedMistralClient(client, cache=cache, retry=retry, timeout=(0.5, 2))
    std = facade.actions.get("std.echo")
    # the server "stops": point the client at a port nobody listens on
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        dead_port = s.getsockname()[1]
    facade.http_client.base_url = f"http://127.0.0.1:{dead_port}/v2"
    same(facade.actions.get("std.echo"), std)  # cached: still served
    started = time.monotonic()
    with pytest.raises((requests.ConnectionError, ConnectFailure)):  # keystoneauth's, through a session
        facade.actions.get("std.noop")
    assert attempts["x"] == 3, "retried, and bounded"
    assert time.monotonic() - started < 10
    if authenticated(mistral_url):
        assert facade.http_client.session.timeout is not None
    else:
        assert facade.http_client.session._mistral_cache_timeout == (0.5, 2)


def test_two_scopes_sharing_one_redis_never_see_each_other(mistral_url, raw, cache, ns):
    a = CachedMistralClient(new_client(mistral_url), cache=cache, scope="tenant-a")
    b = CachedMistralClient(new_client(mistral_url), cache=cache, scope="tenant-b")
    assert a.scope != b.scope and a.scope.startswith("tenant-a@")
    name = f"iso_{uuid.uuid4().hex[:8]}"
    raw.workflows.create(workflow_definition(name), namespace=ns)
    assert a.workflows.get(name, namespace=ns).name == name
    assert name in [w.name for w in a.workflows.list(namespace=ns)]
    raw.workflows.delete(name, namespace=ns)  # out of band: a's cache still holds it
    assert a.workflows.get(name, namespace=ns).name == name
    with pytest.raises(APIException) as caught:
        b.workflows.get(name, namespace=ns)  # b never reads a's entry
    assert caught.value.error_code == 404
    assert name not in [w.name for w in b.workflows.list(namespace=ns)]
    # and the keys in Redis are the scope's
    rc = cache.redis.client()
    keys = [k.decode() for k in rc.scan_iter(match=f"*{cache.namespace}*", count=1000)]
    assert any("tenant-a@" in k for k in keys) and any("tenant-b@" in k for k in keys)
    # invalidating one tenant leaves the other alone
    a.invalidate_all()
    with pytest.raises(APIException):
        a.workflows.get(name, namespace=ns)


def test_without_credentials_the_scope_is_mistrals_default_project(mistral_url):
    """No credentials: Mistral (auth off) puts every request in "<default-project>", and
    so does the facade; a claimed project_id proves nothing and is not a scope."""
    if authenticated(mistral_url):
        pytest.skip("no-credential scopes: the server without authentication (test_tenants.py covers the other)")
    plain = CachedMistralClient(new_client(mistral_url), cache=Cache())
    assert plain.scope == scope_for(DEFAULT_PROJECT, mistral_url)
    claimed = CachedMistralClient(mistral_client_module.client(mistral_url=mistral_url, project_id="p-123"), cache=Cache())
    assert claimed.scope == plain.scope
    built = CachedMistralClient(mistral_url=mistral_url, cache=Cache(), project_id="p-9")
    assert built.scope == plain.scope and built.actions.get("std.noop").name == "std.noop"
    explicit = CachedMistralClient(new_client(mistral_url), cache=Cache(), scope="p-9")
    assert explicit.scope == scope_for("p-9", mistral_url) != plain.scope


def test_policies():
    ttl = policies.ttl_for
    assert ttl("executions", {"state": "SUCCESS"}) == policies.SUCCESS_TTL
    assert ttl("tasks", {"state": "SKIPPED"}) == policies.SUCCESS_TTL
    assert ttl("executions", {"state": "SKIPPED"}) == policies.ACTIVE_TTL
    assert ttl("executions", {"state": "ERROR"}) == policies.FAILED_TTL
    for state in ("RUNNING", "IDLE", "PAUSED", "WAITING", "DELAYED"):
        assert ttl("action_executions", {"state": state}) == policies.ACTIVE_TTL
    assert ttl("executions", [{"state": "SUCCESS"}, {"state": "RUNNING"}]) == policies.ACTIVE_TTL
    assert ttl("executions", [{"state": "SUCCESS"}]) == policies.STATEFUL_LIST_TTL
    assert ttl("workflows", {"name": "x"}) == policies.DEFINITION_TTL
    soon = time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(time.time() + 30))
    assert 28 <= ttl("cron_triggers", {"next_execution_time": soon}) <= 30
    past = time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(time.time() - 30))
    assert ttl("cron_triggers", {"next_execution_time": past}) == policies.MIN_TTL
    table = policies.make_policies(executions=lambda d: 7.0, not_found=1)
    assert ttl("executions", {"state": "SUCCESS"}, table) == 7.0
    assert ttl("workflows", policies.not_found_marker(None), table) == 1.0
    with pytest.raises(ValueError):
        policies.make_policies(nonsense=1)


def test_learning_policies_compose_with_the_state_rules():
    pol = policies.adaptive_state_ttl(0.01, min_ttl=0.5, max_ttl=60)
    table = policies.make_policies(executions=pol)
    learn = policies.resource_ttl("executions", table)
    assert learn.decide({"state": "SUCCESS"}, key="a", meta=None, now=0.0, name="f")[0] == policies.SUCCESS_TTL
    assert learn.decide({"state": "ERROR"}, key="b", meta=None, now=0.0, name="f")[0] == policies.FAILED_TTL
    assert learn.decide({"state": "RUNNING"}, key="c", meta=None, now=0.0, name="f")[0] == pytest.approx(policies.ACTIVE_TTL)
    assert learn.decide(policies.not_found_marker("gone"), key="d", meta=None, now=0.0, name="f")[0] == policies.NOT_FOUND_TTL
    rows = [{"state": "SUCCESS"}] * 3
    assert learn.decide(rows, key="e", meta=None, now=0.0, name="f")[0] <= policies.STATEFUL_LIST_TTL
    assert not hasattr(policies.resource_ttl("workflows", table), "decide")  # plain policies stay plain


def test_adaptive_policy_keeps_learning_behind_the_facade(mistral_url, redis_url, namespace, upstream, raw, ns):
    """A learning policy for workflow definitions, on a real server: every expiry
    is a real GET whose unchanged answer lengthens the TTL; a write through the
    facade still invalidates at once."""
    now = [1000.0]
    cache = Cache(redis_url, namespace=namespace, refresh=None, clock=Clock(time=lambda: now[0]))
    learner = adaptive(0.05, min_ttl=1, max_ttl=3600, initial_ttl=5)
    facade = CachedMistralClient(upstream, cache=cache, policies={"workflows": learner})
    name = f"wf_ad_{uuid.uuid4().hex[:8]}"
    raw.workflows.create(workflow_definition(name), namespace=ns)
    try:
        ttls = []
        for _ in range(8):
            before = upstream.requests.total
            assert facade.workflows.get(name, namespace=ns).name == name
            assert upstream.requests.total == before + 1  # expired: one real GET
            assert facade.workflows.get(name, namespace=ns).name == name
            assert upstream.requests.total == before + 1  # then a hit
            key = facade.workflows.cache_key("get", name, namespace=ns)
            ttls.append(learner.estimate("mistral_cache.mistral.client.workflows.get", key)[1])
            now[0] += ttls[-1] + 0.01
        st = facade.workflows.cached_reads["get"].stats()["adaptive"]
        assert st["observations"] == 7 and st["changes"] == 0
        assert all(b > a for a, b in itertools.pairwise(ttls)), ttls  # unchanged checks lengthen it
        facade.workflows.update(workflow_definition(name, description="second"), namespace=ns)
        assert "second" in facade.workflows.get(name, namespace=ns).definition
    finally:
        raw.workflows.delete(name, namespace=ns)
        cache.close()


def test_transient_errors_are_the_retried_ones():
    assert is_transient(APIException(error_code=503, error_message="busy"))
    assert is_transient(APIException(error_code=500, error_message="boom"))
    assert not is_transient(APIException(error_code=404, error_message="gone"))
    assert not is_transient(APIException(error_code=409, error_message="dup"))
    assert is_transient(requests.ConnectionError("refused"))
    assert is_transient(requests.ReadTimeout("slow"))
    assert not is_transient(ValueError("x"))


READER = textwrap.dedent("""
    import json, os, sys
    from mistralclient.api import client
    from mistral_cache import Cache
    from mistral_cache.mistral import CachedMistralClient
    url, redis_url, namespace, name, ns = sys.argv[1:]
    token = os.environ.get("TEST_MISTRAL_TOKEN")  # the environment, never argv
    real = client.client(mistral_url=url, auth_token=token)
    calls = []
    http = real.workflows.http_client
    original = http.get
    http.get = lambda *a, **k: calls.append(a) or original(*a, **k)
    cache = Cache(redis_url, namespace=namespace)
    facade = CachedMistralClient(real, cache=cache, auth_url=os.environ.get("TEST_KEYSTONE_URL"))
    wf = facade.workflows.get(name, namespace=ns)
    print(json.dumps({"definition": wf.definition, "requests": len(calls)}))
    cache.close()
""")


def test_read_after_write_in_another_process(mistral_url, redis_url, namespace, facade, ns):
    name = f"proc_{uuid.uuid4().hex[:8]}"

    env = dict(os.environ)
    if authenticated(mistral_url):  # the same admin, as a bare token validated by Keystone
        env["TEST_KEYSTONE_URL"], env["TEST_MISTRAL_TOKEN"] = TOKENS_FOR[mistral_url]

    def other_process():
        out = subprocess.run(
            [sys.executable, "-c", READER, mistral_url, redis_url, namespace, name, ns],
            capture_output=True, text=True, timeout=60, check=True, env=env,
        )
        import json

        return json.loads(out.stdout.strip().splitlines()[-1])

    facade.workflows.create(workflow_definition(name, "first"), namespace=ns)
    try:
        assert "first" in facade.workflows.get(name, namespace=ns).definition
        seen = other_process()
        assert "first" in seen["definition"] and seen["requests"] == 0, "served from the shared Redis"
        facade.workflows.update(workflow_definition(name, "second"), namespace=ns)
        seen = other_process()
        assert "second" in seen["definition"] and seen["requests"] == 1
    finally:
        facade.workflows.delete(name, namespace=ns)


def test_task_rerun_invalidates_its_execution_and_tasks(facade, raw, upstream, ns):
    name = f"failing_{uuid.uuid4().hex[:8]}"
    raw.workflows.create(f"""---
version: '2.0'
{name}:
  tasks:
    boom:
      action: std.fail
""", namespace=ns)
    try:
        ex = facade.executions.create(name, namespace=ns)
        ex = wait_final(facade.executions.get, ex.id)
        assert ex.state == "ERROR"
        task = facade.tasks.list(workflow_execution_id=ex.id)[0]
        assert facade.tasks.get(task.id).state == "ERROR"
        key = facade.executions.cache_key("get", ex.id)
        ttl = facade.cache.redis.client().pttl(facade.cache.keyspace.entry(key)) / 1000
        assert policies.FAILED_TTL - 5 < ttl <= policies.FAILED_TTL, "ERROR is kept minutes, not a day"
        before = upstream.requests.counts["get"]
        facade.executions.get(ex.id)
        facade.tasks.get(task.id)
        assert upstream.requests.counts["get"] == before  # cached

        facade.tasks.rerun(task.id)
        facade.executions.get(ex.id)
        assert upstream.requests.counts["get"] == before + 1, "the rerun did not invalidate the execution"
        facade.tasks.get(task.id)
        assert upstream.requests.counts["get"] == before + 2, "the rerun did not invalidate the task"
        final = wait_final(facade.executions.get, ex.id)
        same(final, raw.executions.get(ex.id))
        raw.executions.delete(ex.id, force=True)
    finally:
        raw.workflows.delete(name, namespace=ns)


def test_cron_trigger_never_cached_beyond_its_next_execution(facade, raw):
    wf = f"cron_{uuid.uuid4().hex[:8]}"
    raw.workflows.create(workflow_definition(wf))
    trigger = f"every_minute_{uuid.uuid4().hex[:8]}"
    try:
        assert trigger not in [t.name for t in facade.cron_triggers.list()]
        facade.cron_triggers.create(trigger, wf, pattern="* * * * *")
        assert trigger in [t.name for t in facade.cron_triggers.list()]  # the create invalidated the list
        got = facade.cron_triggers.get(trigger)
        same(got, raw.cron_triggers.get(trigger))
        at = calendar.timegm(time.strptime(got.next_execution_time, "%Y-%m-%d %H:%M:%S"))
        key = facade.cron_triggers.cache_key("get", trigger)
        ttl = facade.cache.redis.client().pttl(facade.cache.keyspace.entry(key)) / 1000
        assert 0 < ttl <= max(policies.MIN_TTL, at - time.time()) + 1
        facade.cron_triggers.delete(trigger)
        assert trigger not in [t.name for t in facade.cron_triggers.list()]
        with pytest.raises(APIException) as caught:
            facade.cron_triggers.get(trigger)
        assert caught.value.error_code == 404
    finally:
        try:
            raw.cron_triggers.delete(trigger)
        except APIException:
            pass
        for ex in raw.executions.list(workflow_name=wf):
            raw.executions.delete(ex.id, force=True)
        raw.workflows.delete(wf)


def test_a_refused_write_invalidates_nothing_an_applied_one_does(facade, upstream, raw, ns):
    """A write Mistral refuses (4xx) changed nothing, so it must not flush entries
    (any caller could otherwise flush a scope with writes the server rejects); a
    write it applied invalidates at once."""
    name = f"rf_{uuid.uuid4().hex[:8]}"
    raw.workflows.create(workflow_definition(name, "first"), namespace=ns)
    try:
        assert "first" in facade.workflows.get(name, namespace=ns).definition
        before = upstream.requests.counts["get"]
        with pytest.raises(APIException) as caught:
            facade.workflows.update("---\nversion: '2.0'\nbroken: [", namespace=ns)
        assert 400 <= caught.value.error_code < 500
        assert "first" in facade.workflows.get(name, namespace=ns).definition
        assert upstream.requests.counts["get"] == before, "a refused write flushed the cached workflow"
        facade.workflows.update(workflow_definition(name, "second"), namespace=ns)
        assert "second" in facade.workflows.get(name, namespace=ns).definition
    finally:
        raw.workflows.delete(name, namespace=ns)
