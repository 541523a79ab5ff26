"""``mistral-cache invalidate KEY | --tag T | --namespace N``: the same invalidation a
process makes (tombstone or generation bump, announced to every local tier)."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from typing import Any

from ..cache import Cache
from ..policies import Timeouts
from ..tiers.redis import redact
from . import options

__all__ = ["invalidate", "register"]


def invalidate(url: str, namespace: str, *, key: str | None = None, tags: Sequence[str] = (), clear: bool = False) -> dict[str, Any]:
    """Invalidate like a process would (announced to every local tier); raises on Redis errors."""
    cache = Cache(url, namespace=namespace, local=None, timeouts=Timeouts(socket=2.0, connect=2.0), strict=True,
)
    try:
        done: dict[str, Any] = {"namespace": namespace}
        if key is not None:
            cache.invalidate(key)
            done["key"] = key
        if tags:
            cache.invalidate_tags(*tags)
            done["tags"] = list(tags)
        if clear:
            cache.clear()
            done["cleared"] = True
        return done
    finally:
        cache.close()


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = subparsers.add_parser("invalidate", help="invalidate a key, tags, or a whole namespace, in every process",
                              description="invalidate KEY | --tag T [--tag T2] | --namespace N (alone: clear the namespace)")
    options.add_common(p)
    p.add_argument("key", nargs="?", help="full cache key (as fn.cache_key(...) returns it)")
    p.add_argument("--tag", action="append", default=[], help="a tag to invalidate (repeatable)")
    p.add_argument("--namespace", default=None, help="the namespace; given without KEY or --tag, clears it")
    p.set_defaults(func=_command)


def _command(args: argparse.Namespace) -> int:
    where = options.url(args)
    if args.key is None and not args.tag and args.namespace is None:
        print("mistral-cache invalidate: give KEY, --tag T or --namespace N", file=sys.stderr)
        return 2
    ns = options.namespace(args)
    try:
        done = invalidate(where, ns, key=args.key, tags=args.tag, clear=args.key is None and not args.tag)
    except Exception as exc:  # TierUnavailable, ConfigurationError, ...
        print(f"mistral-cache invalidate: {redact(where)}: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 2
    if args.json:
        options.print_json(done)
    else:
        what = [f"key {done['key']!r}"] if "key" in done else []
        what += [f"tag {t!r}" for t in done.get("tags", [])]
        what += ["the whole namespace"] if done.get("cleared") else []
        print(f"invalidated {', '.join(what)} in namespace {ns!r}")
    return 0
