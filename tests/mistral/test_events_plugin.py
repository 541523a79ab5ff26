"""The publisher plugin inside a REAL Mistral: ``scripts/mistral-server start
--notify-plugin REDIS_URL`` installs this project into Mistral's virtualenv and the
engine's notifier calls ``mistral_cache.mistral.events.publisher.Publisher`` on every
state change, which invalidates straight into Redis (no receiver, no HTTP hop).

The same poller check as the webhook path's (tests/mistral/test_events.py): what the
receiver's invalidations achieve, the plugin's must too."""

import configparser
import json
import os
import stat
import subprocess
import sys
import time

import pytest
import redis

from mistral_cache import Cache
from mistral_cache.admin.stats import collect_stats
from mistral_cache.mistral import CachedMistralClient
from mistral_cache.mistral.events.lease import PLUGIN_TYPE, lease_keys
from mistral_cache.testing.openstack.config import PUBLISHER_CONFIG_VARIABLE, Plugin, render_publisher_config
from mistral_cache.testing.openstack.mistral_cli import main as mistral_server_main
from tests.mistral.helpers import (
    POLLER,
    WF_GLOBAL,
    WF_STEPS,
    Truth,
    check_pollers_saw_every_change,
    check_published_global_seen,
    ensure_workflow,
    entry_pttl,
)


@pytest.fixture(scope="module")
def wf(plugin_setup):
    from mistralclient.api import client

    plain = client.client(mistral_url=plugin_setup.url)
    try:
        plain.workflows.create(WF_STEPS)
    except Exception:
        plain.workflows.update(WF_STEPS)
    return plain, "ev_steps"


def test_plugin_in_mistral_pushes_every_change_and_keeps_the_lease(plugin_setup, wf):
    s, (plain, name) = plugin_setup, wf
    r = redis.Redis.from_url(s.redis_url)
    conf = s.workdir / "mistral-cache.conf"
    assert stat.S_IMODE(os.stat(s.workdir).st_mode) == 0o700  # the database keeps execution params
    assert stat.S_IMODE(os.stat(conf).st_mode) == 0o600
    assert json.loads(r.get(lease_keys(f"mc:{s.namespace}:", s.url)[0]) or "null") is None  # no event yet, no lease

    ex = plain.executions.create(name)
    # The engine copies [notifier] notify into the execution's params: the plugin, not a webhook.
    assert json.loads(ex.params)["notify"] == [{"type": PLUGIN_TYPE}]
    pollers = [subprocess.Popen([sys.executable, "-c", POLLER, s.url, s.redis_url, s.namespace, ex.id, "30"],
                                stdout=subprocess.PIPE, text=True) for _ in range(2)]
    sampler = Truth(plain, ex.id).start()  # the ground truth: the plain client every 20 ms
    client = CachedMistralClient(mistral_url=s.url, cache=Cache(s.redis_url, namespace=s.namespace))
    time.sleep(0.5)
    # The plugin's first event started its freshness lease, beating in the engine.
    lease = json.loads(r.get(lease_keys(client.cache.keyspace.base, s.url)[0]) or "null")
    assert lease and lease["urls"] == [f"{PLUGIN_TYPE}:"], lease
    assert 0 < r.pttl(lease_keys(client.cache.keyspace.base, s.url)[0]) <= 1000
    # A RUNNING execution read through the facade is cached with the event-backed TTL.
    assert client.executions.get(ex.id).state == "RUNNING"
    assert client.events is not None and client.events.live() and client.events.epoch == lease["epoch"]
    assert entry_pttl(r, client, "executions", "get", ex.id) > 60_000
    results = [json.loads(p.communicate(timeout=60)[0]) for p in pollers]
    check_pollers_saw_every_change(sampler.stop(), results)

    # Its counters, named as the receiver's, published from the engine's process.
    deadline = time.monotonic() + 15  # published at the first event, then every 10 s
    while True:
        stats = collect_stats(r, s.namespace)
        others = [p for p in stats["processes"] if f":{os.getpid()}:" not in p["process"] and p["sections"] == ["events"]]
        if others and stats["events"]["by_type"].get("WORKFLOW_SUCCEEDED", 0) >= 1:
            break
        assert time.monotonic() < deadline, stats
        time.sleep(0.5)
    assert stats["events"]["by_type"].get("TASK_SUCCEEDED", 0) >= 3, stats["events"]


def test_publisher_config_keeps_the_password_off_command_lines(tmp_path, capsys):
    """The launcher's side, no server: a Redis password travels in a file into the 0600
    plugin config, survives ConfigParser's interpolation, and a URL carrying one is refused."""
    password = "p%40ss@w:rd/%"
    text = render_publisher_config(Plugin("redis://10.0.0.5:6380/2", "ns1", password), "http://127.0.0.1:1/v2")
    parser = configparser.ConfigParser()
    parser.read_string(text)
    parsed = redis.connection.parse_url(parser["publisher"]["redis_url"])
    assert (parsed["password"], parsed["host"], parsed["port"], parsed["db"]) == (password, "10.0.0.5", 6380, 2)
    assert parser["publisher"]["namespace"] == "ns1" and parser["publisher"]["mistral_url"] == "http://127.0.0.1:1/v2"
    assert PUBLISHER_CONFIG_VARIABLE == "MISTRAL_CACHE_PUBLISHER_CONFIG"  # what publisher.py reads

    code = mistral_server_main(["start", "--workdir", str(tmp_path), "--notify-plugin", "redis://:secret@127.0.0.1:6379/0"])
    err = capsys.readouterr().err
    assert code == 1 and "must not carry a password" in err and "secret" not in err


def test_plugin_keeps_the_execution_of_a_task_that_publishes_no_global(plugin_setup, wf):
    """The plugin reads a finished task's spec in the engine: t1 and t3 (no global
    variable) leave the cached execution alone, t2 (publish global) invalidates it.
    A poller therefore fetches the execution three times (first read, t2, the end)
    where the receiver's mapping alone makes it five, and still sees t2's global
    variable within 0.5 s (the check that the plugin does not keep what did change)."""
    s, (plain, _) = plugin_setup, wf
    ensure_workflow(plain, WF_GLOBAL, "ev_global")
    ex = plain.executions.create("ev_global")
    lease = lease_keys(f"mc:{s.namespace}:", s.url)[0]
    r, deadline = redis.Redis.from_url(s.redis_url), time.monotonic() + 10
    while not r.exists(lease):  # the launch event starts the plugin's lease (the first read looks at it)
        assert time.monotonic() < deadline, "the plugin kept no lease"
        time.sleep(0.05)
    client = CachedMistralClient(mistral_url=s.url, cache=Cache(s.redis_url, namespace=s.namespace))
    check_published_global_seen(plain, client, ex.id, fetches=3)
