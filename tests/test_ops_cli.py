"""``mistral-cache stats | invalidate | doctor`` end to end against a real Redis."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator

import pytest
import redis

from mistral_cache import Cache, Clock, Local
from mistral_cache.adaptive import adaptive
from mistral_cache.admin.cli import main
from mistral_cache.observability.publisher import publish_stats, start_stats_publisher


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str]:
    capsys.readouterr()
    code = main(list(argv))
    return code, capsys.readouterr().out


@pytest.fixture
def cache(redis_url: str, namespace: str) -> Iterator[Cache]:
    c = Cache(redis_url, namespace=namespace, refresh=None)
    yield c
    c.close()


def test_stats_aggregates_published_counters(redis_url: str, namespace: str, cache: Cache, capsys: pytest.CaptureFixture[str]) -> None:
    other = Cache(redis_url, namespace=namespace, refresh=None)

    @cache.cached(ttl=60, key="x:{x}")
    def f(x: int) -> int:
        return x

    @other.cached(ttl=60, key="x:{x}")
    def g(x: int) -> int:
        return x

    for c in (cache, other):  # a listener flushes its local tier when it (re)subscribes: settle first
        c.ensure_listener()
        assert c.listener is not None and c.listener.connected.wait(5)
    for _ in range(3):
        f(1)  # 1 miss, 2 local hits
    g(1)  # a redis hit
    g(2)  # a miss
    assert publish_stats(cache)
    publisher = start_stats_publisher(other, interval=0.05)
    time.sleep(0.15)
    publisher.stop()
    other.close()

    code, out = run(capsys, "stats", "--redis-url", redis_url, "--namespace", namespace, "--json")
    assert code == 0
    data = json.loads(out)
    assert len(data["processes"]) == 2
    assert (data["local_hits"], data["redis_hits"], data["misses"]) == (2, 1, 2)
    assert data["hit_rate"] == pytest.approx(3 / 5)
    assert data["latency"]["miss"]["count"] == 2 and data["latency"]["redis_hit"]["count"] == 1

    code, out = run(capsys, "stats", "--redis-url", redis_url, "--namespace", namespace)
    assert code == 0 and "2 processes publishing" in out and "60.0%" in out
    code, out = run(capsys, "stats", "--redis-url", redis_url, "--namespace", namespace + "-none")
    assert code == 1 and "0 processes" in out


def test_stats_shows_what_adaptive_ttls_learnt(redis_url: str, namespace: str, capsys: pytest.CaptureFixture[str]) -> None:
    """Two processes' learning, merged per function: checks, changes, the change
    interval and TTL distributions (from mergeable half-octave histograms)."""
    now = [0.0]
    caches = [Cache(redis_url, namespace=namespace, local=Local(coherence=False), refresh=None, clock=Clock(time=lambda: now[0]))
              for _ in range(2)]
    fns = []
    for c in caches:
        @c.cached(ttl=adaptive(0.05, min_ttl=1, max_ttl=1000, initial_ttl=10), key="k:{k}")
        def learn(k: int) -> int:
            return k  # never changes

        fns.append(learn)
    for step in range(6):
        for i, fn in enumerate(fns):
            for k in range(3):
                fn(10 * i + k)
        now[0] += 2000.0  # past any TTL: every read is a recompute that saw no change
    for c in caches:
        assert publish_stats(c)
        c.close()
    code, out = run(capsys, "stats", "--redis-url", redis_url, "--namespace", namespace, "--json")
    assert code == 0
    (name, ad), = json.loads(out)["adaptive"].items()
    assert name.endswith("learn") and ad["processes"] == 2
    assert (ad["keys"], ad["observations"], ad["changes"]) == (6, 30, 0)
    assert ad["ttl"]["p50"] > 10 and ad["ttl"]["p90"] <= 1000 * 2 ** 0.25
    code, out = run(capsys, "stats", "--redis-url", redis_url, "--namespace", namespace)
    assert code == 0 and "adaptive" in out and "0/30 checks saw a change" in out and "ttl" in out


def test_invalidate_key_tag_and_namespace(redis_url: str, namespace: str, cache: Cache, capsys: pytest.CaptureFixture[str]) -> None:
    source = {"v": 1}

    @cache.cached(ttl=60, key="item:{i}", tags=["group:{g}"])
    def get(i: int, g: str) -> list[int]:
        return [i, source["v"]]

    fresh = Cache(redis_url, namespace=namespace, local=None, refresh=None)

    @fresh.cached(ttl=60, key="item:{i}", tags=["group:{g}"])
    def fget(i: int, g: str) -> list[int]:
        return [i, source["v"]]

    assert get(1, "a") == [1, 1] and get(2, "b") == [2, 1] and get(3, "b") == [3, 1]
    cache.ensure_listener()
    assert cache.listener is not None and cache.listener.connected.wait(5)
    source["v"] = 2

    base = ("--redis-url", redis_url, "--namespace", namespace)
    code, out = run(capsys, "invalidate", "item:1", *base)
    assert code == 0 and "item:1" in out
    assert fget(1, "a") == [1, 2] and fget(2, "b") == [2, 1]
    _eventually(lambda: get(1, "a") == [1, 2])  # the announcement reached the process's local tier
    assert get(2, "b") == [2, 1]

    code, out = run(capsys, "invalidate", "--tag", "group:b", "--json", *base)
    assert code == 0 and json.loads(out)["tags"] == ["group:b"]
    assert fget(2, "b") == [2, 2] and fget(3, "b") == [3, 2]
    _eventually(lambda: get(3, "b") == [3, 2])

    source["v"] = 3
    code, out = run(capsys, "invalidate", *base)
    assert code == 0 and "whole namespace" in out
    assert fget(1, "a") == [1, 3]
    _eventually(lambda: get(2, "b") == [2, 3])
    fresh.close()

    code, _ = run(capsys, "invalidate", "--redis-url", redis_url)
    assert code == 2


def _eventually(pred: object, timeout: float = 3.0) -> None:
    assert callable(pred)
    deadline = time.monotonic() + timeout
    while not pred():
        assert time.monotonic() < deadline, "condition not reached"
        time.sleep(0.01)


def test_doctor_checks_a_healthy_server_and_flags_allkeys_eviction(own_redis: object, capsys: pytest.CaptureFixture[str]) -> None:
    url = own_redis.url  # type: ignore[attr-defined]
    client = redis.Redis.from_url(url)
    client.config_set("maxmemory-policy", "volatile-lru")
    code, out = run(capsys, "doctor", "--redis-url", url, "--json")
    report = json.loads(out)
    checks = {c["name"]: c for c in report["checks"]}
    assert code == 0 and report["status"] == "ok", report
    assert set(checks) == {"connect", "rtt", "version", "maxmemory-policy", "topology", "clock-skew"}
    assert report["topology"] == "standalone" and checks["rtt"]["median_ms"] > 0
    assert abs(checks["clock-skew"]["skew_ms"]) < 500

    client.config_set("maxmemory-policy", "allkeys-lru")
    code, out = run(capsys, "doctor", "--redis-url", url)
    assert code == 1 and "[WARN ] maxmemory-policy" in out and "allkeys-lru" in out
    client.close()

    code, out = run(capsys, "doctor", "--redis-url", "redis://127.0.0.1:1/0", "--json")
    assert code == 2 and json.loads(out)["checks"][0]["status"] == "error"


def test_command_line_process(redis_url: str) -> None:
    """The real entry point, in a process of its own."""
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([os.getcwd(), os.environ.get("PYTHONPATH", "")]))
    proc = subprocess.run([sys.executable, "-m", "mistral_cache.admin.cli", "doctor", "--redis-url", redis_url, "--json"],
                          capture_output=True, text=True, env=env, timeout=60)
    assert proc.returncode in (0, 1), proc.stderr
    assert json.loads(proc.stdout)["checks"][0]["name"] == "connect"


def test_prometheus_exporter(cache: Cache) -> None:
    prometheus_client = pytest.importorskip("prometheus_client")
    from mistral_cache.observability.metrics import register, samples

    @cache.cached(ttl=60)
    def f(x: int) -> int:
        return x

    f(1)
    f(2)
    cache.local.clear()  # type: ignore[union-attr]
    f(1)  # a redis hit
    registry = prometheus_client.CollectorRegistry()
    register(cache, registry=registry)
    text = prometheus_client.generate_latest(registry).decode()
    ns = cache.namespace
    assert f'mistral_cache_requests_total{{namespace="{ns}",result="miss",tier="redis"}} 2.0' in text
    assert f'mistral_cache_requests_total{{namespace="{ns}",result="hit",tier="redis"}} 1.0' in text
    assert f'mistral_cache_breaker_state{{namespace="{ns}"}} 0.0' in text
    assert f'mistral_cache_latency_seconds_count{{namespace="{ns}",path="miss"}} 2.0' in text
    assert f'mistral_cache_latency_seconds_bucket{{le="+Inf",namespace="{ns}",path="redis_hit"}} 1.0' in text
    assert any(name == "mistral_cache_computes_total" and value == 2 for name, _, value in samples(cache))
