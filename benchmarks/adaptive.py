"""Scenario ``adaptive``: the freshness frontier of adaptive vs fixed TTLs, on
synthetic keys and on the Mistral polling workload (runs
:mod:`benchmarks.freshness` under a simulated clock; no Redis needed)."""

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


def _rows(rows: dict[str, dict[str, Any]], beaten: dict[str, bool]) -> list[list[str]]:
    return [[name, str(r["upstream_calls"]), str(r["stale_reads"]),
             f"{r['hit_rate']:.3f}", f"{r['stale_fraction']:.4f}", {True: "yes", False: "no"}.get(beaten.get(name), "")]
            for name, r in rows.items()]


def tables(result: dict[str, Any]) -> list[tuple[list[str], list[list[str]]]]:
    head = ["policy", "upstream calls", "stale reads", "hit rate", "stale fraction", "beaten by adaptive"]
    out = [(head, _rows(result["policies"], result.get("dominated_fixed", {})))]
    if "mistral" in result:
        m = result["mistral"]
        beaten = {name: m["dominated_fixed"].get(name, False) or m["dominated_fixed_by_state_rules_adaptive"].get(name, False)
                  for name in m.get("dominated_fixed", {})}
        out.append((["Mistral polling: " + head[0], *head[1:]], _rows(m["policies"], beaten)))
    return out


def notes(result: dict[str, Any]) -> str:
    p = result["params"]
    text = (f"Synthetic: {p['n_keys']} keys (change intervals log-uniform 5 s to 1 day, a fifth never change), "
            f"{p['reads']} Zipf(s={p['zipf_s']}) reads at {p['read_rate']}/s of simulated time. "
            f"Local-hit cost (us): {result.get('hit_path_us')}.")
    if "mistral" in result:
        mp = result["mistral"]["params"]
        text += (f" Mistral: {mp['hours']} h of simulated operation on the simulated API through the real client and "
                 "CachedMistralClient (pollers, a dashboard, definition reads, out-of-band definition edits).")
    return text


def plot(result: dict[str, Any], out: str) -> list[str]:
    paths = [freshness.plot(result["policies"], os.path.join(out, freshness.PLOT_NAME))]
    if "mistral" in result:
        paths.append(freshness.plot(result["mistral"]["policies"], os.path.join(out, freshness.MISTRAL_PLOT_NAME),
                                    "Mistral polling workload: adaptive vs fixed TTL"))
    return [p for p in paths if p]
