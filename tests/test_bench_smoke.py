"""Smoke test of ``mistral-cache bench``: it completes and writes valid results (no speed asserted)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

pytest.importorskip("matplotlib")

from mistral_cache.admin.cli import build_parser, main


def test_parser_has_bench_and_is_extensible() -> None:
    parser = build_parser()
    args = parser.parse_args(["bench", "--quick", "--scenario", "latency", "--out", "x"])
    assert args.quick and args.scenario == ["latency"] and args.out == "x"


def test_bench_quick_latency_writes_results(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "bench"
    assert main(["bench", "--quick", "--scenario", "latency", "--out", str(out)]) == 0
    data = json.loads((out / "results.json").read_text())
    assert set(data) >= {"machine", "versions", "redis", "mistral", "scenarios"}
    lat = data["scenarios"]["latency"]
    assert "error" not in lat
    paths = {(r["lib"], r["path"]) for r in lat["rows"]}
    assert {("mistral_cache", "local hit"), ("mistral_cache", "redis hit"), ("mistral_cache", "miss")} <= paths
    for row in lat["rows"]:
        assert row["n"] > 0 and row["median_us"] > 0
    assert (out / "report.md").read_text().startswith("# mistral-cache benchmark report")
    assert (out / "latency.png").stat().st_size > 0
    assert "Latency per path" in capsys.readouterr().out
