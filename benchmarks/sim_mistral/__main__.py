"""``python -m benchmarks.sim_mistral``: a simulator in the foreground for manual poking."""

from __future__ import annotations

import argparse
import time
from collections.abc import Iterator

from . import __doc__ as _package_doc
from .simulator import SimulatedMistral

__all__ = ["main"]


def _iter_lines(sim: SimulatedMistral) -> Iterator[str]:
    yield f"simulated Mistral at {sim.url}"
    for kind in ("workflows", "executions", "environments", "cron_triggers"):
        yield f"  {kind}: {len(sim.ids(kind))}"


def main(argv: list[str] | None = None) -> None:
    """Run a simulator in the foreground for manual poking."""
    parser = argparse.ArgumentParser(prog="python -m benchmarks.sim_mistral",
                                     description=_package_doc.splitlines()[0] if _package_doc else None)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8989)
    parser.add_argument("--latency-scale", type=float, default=1.0)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--workflows", type=int, default=20)
    parser.add_argument("--executions", type=int, default=200)
    parser.add_argument("--running-fraction", type=float, default=0.2)
    args = parser.parse_args(argv)
    sim = SimulatedMistral(host=args.host, port=args.port, latency_scale=args.latency_scale,
                           seed=args.seed)
    sim.seed_workflows(args.workflows)
    sim.seed_executions(args.executions, running_fraction=args.running_fraction)
    sim.seed_environments(3)
    sim.start()
    print("\n".join(_iter_lines(sim)), flush=True)
    try:
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        pass
    finally:
        sim.stop()


if __name__ == "__main__":
    main()
