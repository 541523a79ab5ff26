"""Scenario ``adaptive``: the freshness frontier of adaptive vs fixed TTLs
(runs :mod:`benchmarks.freshness` under a simulated clock; no Redis needed)."""

from __future__ import annotations

import os
from typing import Any

from . import freshness
from .common import Env

TITLE = "Freshness: adaptive vs fixed TTLs"


def run(env: Env) -> dict[str, Any]:
    result = freshness.run(quick=env.quick)
    result.pop("table", None)
    return result


def table(result: dict[str, Any]) -> tuple[list[str], list[list[str]]]:
    head = ["policy", "upstream calls", "stale reads", "hit rate", "stale fraction", "beaten by adaptive"]
    body = []
    beaten = result.get("dominated_fixed", {})
    for name, r in result["policies"].items():
        body.append([name, str(r["upstream_calls"]), str(r["stale_reads"]), f"{r['hit_rate']:.3f}",
                     f"{r['stale_fraction']:.4f}", {True: "yes", False: "no"}.get(beaten.get(name), "")])
    return head, body


def plot(result: dict[str, Any], out: str) -> list[str]:
    path = freshness.plot(result["policies"], os.path.join(out, freshness.PLOT_NAME))
    return [path] if path else []
