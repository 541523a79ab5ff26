#!/usr/bin/env python3
"""Cache hit rate across a Keystone token refresh, on a real authenticated Mistral.

A pass-through app builds one CachedMistralClient per request from the user's
bare token. This polls N reads with token 1, then the user logs in again
(token 2, same project) and repeats the same reads: the hit rate of the second
pass is what a token refresh costs the cache (1.0: nothing; a per-token scope
would give 0.0). Prints one JSON line.

Servers: $OS_AUTH_URL + $OS_PASSWORD (Keystone admin) and $MISTRAL_AUTH_URL, or,
when unset, started here with scripts/keystone-server and scripts/mistral-server
(and stopped); Redis: $REDIS_URL or an embedded one. Passwords are never put in argv.

    python scripts/token_refresh_hit_rate.py [--reads 40]
"""

from __future__ import annotations

import argparse
import json
import os
import secrets
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def run(script: str, *args: str) -> str:
    out = subprocess.run([sys.executable, str(REPO / "scripts" / script), *args], capture_output=True, text=True, check=False)
    if out.returncode != 0:
        sys.exit(f"{script} {args[0]} failed:\n{out.stderr[-4000:]}")
    return out.stdout.strip().splitlines()[-1]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--reads", type=int, default=40, help="distinct reads per pass")
    args = parser.parse_args()
    os.environ.setdefault("no_proxy", "127.0.0.1,localhost")
    stops: list[tuple[str, list[str]]] = []
    timings: dict[str, float] = {}
    try:
        keystone_url = os.environ.get("OS_AUTH_URL")
        if keystone_url:
            password = os.environ["OS_PASSWORD"]
            mistral_url = os.environ["MISTRAL_AUTH_URL"]
        else:
            work = Path(tempfile.mkdtemp(prefix="refresh-"))
            ks = ["--port", str(free_port()), "--workdir", str(work / "keystone")]
            t0 = time.monotonic()
            keystone_url = run("keystone-server", "start", *ks)
            timings["keystone_start_s"] = round(time.monotonic() - t0, 1)
            stops.append(("keystone-server", ks))
            password_file = work / "keystone" / "admin-password"
            password = password_file.read_text().splitlines()[0].strip()
            ms = ["--port", str(free_port()), "--workdir", str(work / "mistral")]
            t0 = time.monotonic()
            mistral_url = run("mistral-server", "start", *ms, "--keystone-url", keystone_url,
                              "--keystone-password-file", str(password_file))
            timings["authenticated_mistral_start_s"] = round(time.monotonic() - t0, 1)
            stops.append(("mistral-server", ms))
        return measure(keystone_url, password, mistral_url, args.reads, timings)
    finally:
        for script, location in reversed(stops):
            subprocess.run([sys.executable, str(REPO / "scripts" / script), "stop", *location], capture_output=True, check=False)


def measure(keystone_url: str, password: str, mistral_url: str, reads: int, timings: dict[str, float]) -> int:
    from keystoneauth1 import session
    from keystoneauth1.identity import v3
    from mistralclient.api import client as mc

    from mistral_cache import Cache
    from mistral_cache.mistral import CachedMistralClient
    from mistral_cache.mistral.identity import TOKENS
    from mistral_cache.testing import RedisServer

    admin = session.Session(auth=v3.Password(auth_url=keystone_url, username="admin", password=password,
                                             project_name="admin", user_domain_name="Default", project_domain_name="Default"))
    roles = {r["name"]: r["id"] for r in admin.get(keystone_url + "/roles").json()["roles"]}
    suffix = uuid.uuid4().hex[:8]
    project = admin.post(keystone_url + "/projects", json={"project": {"name": f"refresh-{suffix}", "domain_id": "default"}}).json()["project"]["id"]
    user_password = secrets.token_urlsafe(16)
    user = admin.post(keystone_url + "/users", json={"user": {"name": f"refresh-{suffix}", "domain_id": "default",
                                                              "password": user_password, "default_project_id": project}}).json()["user"]
    admin.put(f"{keystone_url}/projects/{project}/users/{user['id']}/roles/{roles['member']}")

    def login() -> str:
        return str(session.Session(auth=v3.Password(auth_url=keystone_url, username=user["name"], password=user_password,
                                                    project_id=project, user_domain_name="Default")).get_token())

    writer = mc.client(mistral_url=mistral_url, auth_token=login())
    names = [f"r{i}_{suffix}" for i in range(reads)]
    for name in names:
        writer.workflows.create(f"---\nversion: '2.0'\n{name}:\n  tasks:\n    t:\n      action: std.noop\n")

    redis_url = os.environ.get("REDIS_URL")
    server = None if redis_url else RedisServer().__enter__()
    cache = Cache(redis_url or server.url, namespace="refresh-" + suffix)  # type: ignore[union-attr]
    try:
        passes = []
        for _ in range(2):
            token = login()
            sent = 0
            validations = TOKENS.validations
            for name in names:  # one facade per request, as a pass-through app builds them
                client = mc.client(mistral_url=mistral_url, auth_token=token)
                http = client.workflows.http_client
                original = http.get
                calls: list[int] = []
                http.get = lambda *a, _o=original, _c=calls, **k: _c.append(1) or _o(*a, **k)
                CachedMistralClient(client, cache=cache, auth_url=keystone_url).workflows.get(name)
                sent += len(calls)
            passes.append({"reads": reads, "upstream": sent, "hit_rate": round(1 - sent / reads, 3),
                           "keystone_validations": TOKENS.validations - validations})
        print(json.dumps({"before_refresh": passes[0], "after_refresh": passes[1], **timings}))
    finally:
        cache.close()
        if server is not None:
            server.__exit__(None, None, None)
    return 0


if __name__ == "__main__":
    sys.exit(main())
