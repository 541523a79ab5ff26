"""What the Redis commands (``stats``, ``invalidate``, ``doctor``) share: the
``--redis-url`` and ``--json`` options, their defaults from the environment, and
JSON output."""

from __future__ import annotations

import argparse
import json
import os
from typing import Any

__all__ = ["DEFAULT_URL", "add_common", "namespace", "print_json", "url"]

DEFAULT_URL = "redis://127.0.0.1:6379/0"

def add_common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--redis-url", default=None, help="Redis URL (default: $MISTRAL_CACHE_REDIS_URL or redis://127.0.0.1:6379/0); "
                   "redis+cluster://h:p,h:p and redis+sentinel://h:p,h:p/service also work")
    p.add_argument("--json", action="store_true", help="machine-readable output")


def url(args: argparse.Namespace) -> str:
    return str(args.redis_url or os.environ.get("MISTRAL_CACHE_REDIS_URL") or DEFAULT_URL)


def namespace(args: argparse.Namespace) -> str:
    return str(args.namespace or os.environ.get("MISTRAL_CACHE_NAMESPACE") or "default")


def print_json(data: Any) -> None:
    print(json.dumps(data, indent=2, sort_keys=True, default=str))
