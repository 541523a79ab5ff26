"""What the multi-process stampede tests (``test_stampede``, ``test_convoy``) share:
collecting their children's results without ever hanging the session."""

from __future__ import annotations

import queue
import time
from typing import Any


def collect(out: Any, n: int, procs: list[Any], timeout: float) -> list[Any]:
    """``n`` results from the queue ``out`` within ``timeout`` seconds, then every child
    joined (killed if it outlives the deadline). Asserts that each child exited
    cleanly and that all ``n`` results came, so a hung or failed child fails the
    test instead of hanging it."""
    got = []
    deadline = time.monotonic() + timeout
    while len(got) < n:
        try:
            got.append(out.get(timeout=max(0.1, deadline - time.monotonic())))
        except queue.Empty:
            break
    for p in procs:
        p.join(timeout=max(1.0, deadline - time.monotonic()))
    for p in procs:
        if p.is_alive():
            p.kill()
            p.join(5)
    assert [p.exitcode for p in procs] == [0] * len(procs), "a child hung or failed"
    assert len(got) == n
    return got
