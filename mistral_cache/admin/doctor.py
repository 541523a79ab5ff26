"""``mistral-cache doctor``: connectivity, server version, round-trip time,
``maxmemory-policy``, Cluster/Sentinel topology, clock skew.

Exit code 0 when every check is fine, 1 on warnings, 2 on errors.
"""

from __future__ import annotations

import argparse
import statistics
import time
from typing import Any

import redis.exceptions as rex

from ..tiers.redis import client_options, redact, sync_client_from_url, topology
from . import options

__all__ = ["SKEW_WARN_SECONDS", "doctor", "register"]

SKEW_WARN_SECONDS = 0.5

def _node_clients(client: Any, kind: str) -> list[tuple[str, Any]]:
    if kind != "cluster":
        return [("", client)]
    out = []
    for node in client.get_nodes():
        conn = node.redis_connection or client.get_redis_connection(node)
        out.append((f"{node.host}:{node.port}", conn))
    return out


def _info(conn: Any, section: str) -> dict[str, Any]:
    data: dict[str, Any] = conn.info(section)
    return data


def doctor(url: str, *, pings: int = 20) -> dict[str, Any]:
    """Run every check; ``status`` is ``ok``, ``warn`` or ``error``."""
    checks: list[dict[str, Any]] = []
    report: dict[str, Any] = {"url": redact(url), "checks": checks}

    def check(name: str, status: str, detail: str, **extra: Any) -> None:
        checks.append({"name": name, "status": status, "detail": detail, **extra})

    try:
        client = sync_client_from_url(url, **client_options(2.0, 2.0))
        t0 = time.perf_counter()
        client.ping()
        check("connect", "ok", f"connected in {(time.perf_counter() - t0) * 1000:.1f} ms")
    except (rex.RedisError, OSError, ValueError) as exc:
        check("connect", "error", f"{type(exc).__name__}: {exc}")
        report["status"] = "error"
        return report
    try:
        kind = topology(client)
        report["topology"] = kind
        nodes = _node_clients(client, kind)
        rtts = []
        for _ in range(pings):
            t0 = time.perf_counter()
            client.ping()
            rtts.append(time.perf_counter() - t0)
        med = statistics.median(rtts) * 1000
        check("rtt", "ok" if med < 5 else "warn", f"PING median {med:.3f} ms, max {max(rtts) * 1000:.3f} ms over {pings}",
              median_ms=round(med, 4), max_ms=round(max(rtts) * 1000, 4))

        versions = {}
        for name, conn in nodes:
            info = _info(conn, "server")
            versions[name or "server"] = str(info.get("redis_version"))
        low = min(versions.values(), key=lambda v: tuple(int(p) for p in v.split(".")[:3] if p.isdigit()))
        major = int(low.split(".")[0]) if low.split(".")[0].isdigit() else 0
        check("version", "ok" if major >= 6 else "warn",
              f"redis {', '.join(sorted(set(versions.values())))}" + ("" if major >= 6 else " (6.2+ recommended)"),
              versions=versions)

        policies = {}
        for name, conn in nodes:
            try:
                got = conn.config_get("maxmemory-policy")
                policies[name or "server"] = str(got.get("maxmemory-policy", "?"))
            except rex.ResponseError:
                policies[name or "server"] = "unknown (CONFIG disabled)"
        # Counters outlive their entries (longer TTLs, read with every entry), which
        # volatile-ttl/lru/lfu respect and a random pick does not.
        bad = sorted({p for p in policies.values() if p.startswith("allkeys-") or p == "volatile-random"})
        if bad:
            check("maxmemory-policy", "warn",
                  f"{', '.join(bad)}: may evict a generation counter before the entries that depend on it, which can "
                  "bring invalidated entries back; use volatile-lru/volatile-lfu/volatile-ttl or noeviction",
                  policies=policies)
        elif any(p.startswith("unknown") for p in policies.values()):
            check("maxmemory-policy", "warn", "could not read maxmemory-policy (CONFIG disabled)", policies=policies)
        else:
            check("maxmemory-policy", "ok", ", ".join(sorted(set(policies.values()))), policies=policies)

        status, detail, extra = _topology(client, kind, nodes)
        check("topology", status, detail, **extra)

        skews = []
        for _name, conn in nodes:
            t0 = time.time()
            sec, usec = conn.time()
            t1 = time.time()
            skews.append((sec + usec / 1e6) - (t0 + t1) / 2)
        worst = max(skews, key=abs)
        check("clock-skew", "ok" if abs(worst) < SKEW_WARN_SECONDS else "warn",
              f"server clock minus this host's: {worst * 1000:+.1f} ms (worst of {len(skews)})", skew_ms=round(worst * 1000, 3))
    except (rex.RedisError, OSError) as exc:
        check("probe", "error", f"{type(exc).__name__}: {exc}")
    finally:
        client.close()
    statuses = {c["status"] for c in checks}
    report["status"] = "error" if "error" in statuses else "warn" if "warn" in statuses else "ok"
    return report


def _topology(client: Any, kind: str, nodes: list[tuple[str, Any]]) -> tuple[str, str, dict[str, Any]]:
    if kind == "cluster":
        info = client.cluster_info(target_nodes=client.get_random_node())
        masters = [n for n in client.get_nodes() if n.server_type == "primary"]
        replicas = [n for n in client.get_nodes() if n.server_type != "primary"]
        state = str(info.get("cluster_state"))
        slots = int(info.get("cluster_slots_ok", 0))
        status = "ok" if state == "ok" and slots == 16384 else "error"
        warn = "" if replicas else " (no replicas: a master failure loses its slots until it returns)"
        return ("ok" if status == "ok" and replicas else "warn" if status == "ok" else "error",
                f"cluster: state {state}, {len(masters)} masters, {len(replicas)} replicas, {slots}/16384 slots ok{warn}",
                {"cluster_state": state, "masters": len(masters), "replicas": len(replicas), "slots_ok": slots})
    repl = _info(client, "replication")
    role = str(repl.get("role"))
    n_replicas = int(repl.get("connected_slaves", 0))
    if kind == "sentinel":
        pool = client.connection_pool
        service = pool.service_name
        sentinels = pool.sentinel_manager.sentinels
        master = pool.sentinel_manager.discover_master(service)
        alive = 0
        for s in sentinels:
            try:
                s.ping()
                alive += 1
            except (rex.RedisError, OSError):
                pass
        status = "ok" if alive * 2 > len(sentinels) and n_replicas > 0 and role == "master" else "warn"
        return (status, f"sentinel: service {service!r} primary {master[0]}:{master[1]} ({role}), {n_replicas} replicas, "
                f"{alive}/{len(sentinels)} sentinels answering",
                {"service": service, "primary": f"{master[0]}:{master[1]}", "replicas": n_replicas, "sentinels_alive": alive})
    status = "ok" if role == "master" else "warn"
    detail = f"standalone: role {role}, {n_replicas} replicas" + ("" if role == "master" else " (writes will fail on a replica)")
    return status, detail, {"role": role, "replicas": n_replicas}


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = subparsers.add_parser("doctor", help="check connectivity, version, RTT, eviction policy, topology, clock skew")
    options.add_common(p)
    p.set_defaults(func=_command)


def _command(args: argparse.Namespace) -> int:
    report = doctor(options.url(args))
    if args.json:
        options.print_json(report)
    else:
        print(f"mistral-cache doctor: {report['url']} ({report.get('topology', '?')})")
        for c in report["checks"]:
            print(f"  [{c['status'].upper():5}] {c['name']:<17} {c['detail']}")
        print(f"status: {report['status']}")
    return {"ok": 0, "warn": 1}.get(report["status"], 2)
