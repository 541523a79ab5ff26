"""``mistral-cache events serve``: Mistral's notifier -> invalidations (README, "Mistral events").

The bearer token comes from ``--token-file`` or ``$MISTRAL_CACHE_EVENTS_TOKEN``,
never from the command line; so does the Keystone password of reconciliation.
python-mistralclient and waitress are imported when the command runs.
"""

from __future__ import annotations

import argparse
import sys

from . import options

__all__ = ["register"]


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = subparsers.add_parser("events", help="event-driven invalidation from Mistral's notifier")
    sub = p.add_subparsers(dest="events_command", metavar="SUBCOMMAND")
    s = sub.add_parser("serve", help="run the webhook receiver (POST /events, GET /health)")
    options.add_common(s)
    s.add_argument("--listen", default="127.0.0.1:8787", help="HOST:PORT to bind (default %(default)s; keep it internal)")
    s.add_argument("--mistral-url", required=True, help="the API URL exactly as the clients spell it (it is in their scope)")
    s.add_argument("--namespace", default=None, help="the clients' Cache namespace (default $MISTRAL_CACHE_NAMESPACE or 'default')")
    s.add_argument("--token-file", default=None, help="file whose first line is the bearer token (else $MISTRAL_CACHE_EVENTS_TOKEN)")
    s.add_argument("--notify-url", action="append", default=[], help="the URL Mistral posts to, if not http://LISTEN/events")
    s.add_argument("--allow", action="append", default=[], help="source network allowed to post (repeatable; default any)")
    s.add_argument("--rate", type=float, default=200.0, help="events per second per source (default %(default)s)")
    s.add_argument("--max-body", type=int, default=256 * 1024, help="largest body in bytes (default %(default)s)")
    s.add_argument("--reconcile", type=float, default=10.0, help="seconds between updated_at sweeps (0: off; default %(default)s)")
    s.add_argument("--no-definition-check", dest="definitions", action="store_false",
                   help="keep invalidating an execution at each finished task, even of a workflow that publishes "
                   "no global variable (saves one execution list and one definition GET per burst of launches)")
    s.add_argument("--stats-interval", type=float, default=10.0,
                   help="seconds between the counters published for `mistral-cache stats` (0: off; default %(default)s)")
    s.add_argument("--metrics-listen", default=None, help="HOST:PORT to serve Prometheus /metrics on (default: none)")
    s.add_argument("--discard", type=float, default=0.0, help=argparse.SUPPRESS)  # tests: lose this fraction of events
    s.add_argument("--trace-file", default=None, help=argparse.SUPPRESS)  # benchmarks: a JSON line per event
    s.add_argument("--keystone-url", default=None, help="reconcile as a Keystone user (an admin sees every project)")
    s.add_argument("--keystone-user", default="admin")
    s.add_argument("--keystone-project", default="admin")
    s.add_argument("--keystone-password-file", default=None, help="file whose first line is that user's password")
    s.set_defaults(func=_serve)

    def usage(args: argparse.Namespace) -> int:
        p.print_help()
        return 2

    p.set_defaults(func=usage)


def _serve(args: argparse.Namespace) -> int:
    import logging

    from ..mistral.events.receiver import load_token
    from ..mistral.events.serve import Settings, serve

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    try:
        token = load_token(args.token_file)
        keystone = None
        if args.keystone_url:
            if not args.keystone_password_file:
                raise ValueError("--keystone-url needs --keystone-password-file")
            with open(args.keystone_password_file, encoding="utf-8") as f:
                password = f.readline().strip()
            keystone = {"url": args.keystone_url, "username": args.keystone_user, "password": password,
                        "project": args.keystone_project}
    except (OSError, ValueError) as exc:
        print(f"mistral-cache events serve: {exc}", file=sys.stderr)
        return 2
    settings = Settings(
        redis_url=options.url(args), mistral_url=args.mistral_url.rstrip("/"), token=token,
        namespace=options.namespace(args), listen=args.listen, notify_urls=tuple(args.notify_url),
        allow=tuple(args.allow), rate=args.rate, burst=2 * args.rate, max_body=args.max_body,
        reconcile=args.reconcile, definitions=args.definitions, keystone=keystone, discard=args.discard, trace=args.trace_file,
        stats_interval=args.stats_interval, metrics_listen=args.metrics_listen,
    )
    return serve(settings)
