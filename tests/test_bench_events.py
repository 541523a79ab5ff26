"""``mistral-cache bench --quick --scenario events``: the simulated Mistral's
notifier feeds the real receiver, and the Mistral polling table has its four rows
(no speed asserted; loose freshness bounds, the figures are the bench's job)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

from mistral_cache.admin.cli import main


def test_bench_events_scenario(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "bench"
    assert main(["bench", "--quick", "--scenario", "events", "--out", str(out)]) == 0
    res = json.loads((out / "results.json").read_text())["scenarios"]["events"]
    assert "error" not in res, res
    rows = res["rows"]
    assert list(rows) == ["no cache", "tutorial (GET/SET, 300 s)", "state rules (events off)", "events on"]
    assert all(r["reads"] > 100 and r["errors"] == 0 for r in rows.values())
    # Every notification reached the receiver and was applied.
    assert res["notifier"]["posted"] == res["changes"] > 0 and res["notifier"]["failed"] == 0
    assert sum(n for k, n in res["receiver"].items() if k.startswith("events.")) == res["changes"]
    events, rules = rows["events on"], rows["state rules (events off)"]
    assert rows["no cache"]["upstream"] == rows["no cache"]["reads"]
    assert events["outdated"] <= max(2, rules["outdated"] // 10), (events, rules)
    assert events["upstream"] < rows["no cache"]["upstream"] / 5
    assert "events on" in capsys.readouterr().out


def test_bench_events_scenario_without_waitress(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A machine without the ``events`` extra still runs it (the standard library serves the receiver)."""
    monkeypatch.setitem(sys.modules, "waitress", None)
    out = tmp_path / "bench"
    assert main(["bench", "--quick", "--scenario", "events", "--out", str(out)]) == 0
    res = json.loads((out / "results.json").read_text())["scenarios"]["events"]
    assert "error" not in res, res
    assert res["notifier"]["posted"] == res["changes"] > 0 and res["rows"]["events on"]["reads"] > 100
