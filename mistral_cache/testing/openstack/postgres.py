"""A throwaway PostgreSQL database per Mistral server, created and dropped
through psycopg2 from the Mistral virtualenv (``psql`` may be missing).

The connection parameters, password included, reach that helper process on
its stdin, never on its command line (visible to every user in ``ps``), and
the password is not kept in the server's state file: ``stop`` reads it from
the environment again.
"""

from __future__ import annotations

import json
import os
import subprocess
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import quote

__all__ = ["PgParams", "drop_database", "create_database", "database_url"]

_SCRIPT = r"""
import json, sys
import psycopg2
p = json.loads(sys.stdin.read()); action = sys.argv[1]; db = sys.argv[2]
kw = dict(host=p["host"], port=p["port"], user=p["user"], dbname="postgres",
          connect_timeout=5)
if p["password"]:
    kw["password"] = p["password"]
con = psycopg2.connect(**kw)
con.autocommit = True
cur = con.cursor()
q = '"%s"' % db
try:
    cur.execute("DROP DATABASE IF EXISTS " + q + " WITH (FORCE)")
except psycopg2.Error:  # PostgreSQL < 13
    cur.execute("DROP DATABASE IF EXISTS " + q)
if action == "create":
    cur.execute("CREATE DATABASE " + q)
"""


@dataclass(frozen=True)
class PgParams:
    """Where PostgreSQL listens and who logs in (``MISTRAL_PG_*``)."""

    host: str = "127.0.0.1"
    port: int = 5432
    user: str = "postgres"
    password: str = field(default="", repr=False)

    @classmethod
    def from_env(cls) -> PgParams:
        return cls(
            host=os.environ.get("MISTRAL_PG_HOST", "127.0.0.1"),
            port=int(os.environ.get("MISTRAL_PG_PORT", "5432")),
            user=os.environ.get("MISTRAL_PG_USER", "postgres"),
            password=os.environ.get("MISTRAL_PG_PASSWORD", ""),
        )

    def public(self) -> dict[str, Any]:
        """For the state file: everything but the password."""
        return {"host": self.host, "port": self.port, "user": self.user}

    @classmethod
    def from_state(cls, saved: dict[str, Any] | None) -> PgParams:
        """The parameters a server was started with; the password from the environment."""
        if not saved:
            return cls.from_env()
        password = saved.get("password") or os.environ.get("MISTRAL_PG_PASSWORD", "")  # older state files kept it
        return cls(host=str(saved["host"]), port=int(saved["port"]), user=str(saved["user"]), password=password)


def _run(python: Path, action: str, db: str, params: PgParams) -> tuple[bool, str]:
    r = subprocess.run(
        [str(python), "-c", _SCRIPT, action, db],
        input=json.dumps(asdict(params)),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        check=False,
    )
    return r.returncode == 0, r.stdout.strip()


def create_database(python: Path, db: str, params: PgParams) -> tuple[bool, str]:
    """Drop ``db`` if a previous server left it, create it empty: (ok, output)."""
    return _run(python, "create", db, params)


def drop_database(python: Path, db: str, params: PgParams) -> tuple[bool, str]:
    return _run(python, "drop", db, params)


def database_url(params: PgParams, db: str) -> str:
    """The SQLAlchemy URL for Mistral's config file (0600: it may hold the password)."""
    auth = params.user
    if params.password:
        auth += ":" + quote(params.password, safe="")
    return f"postgresql+psycopg2://{auth}@{params.host}:{params.port}/{db}"
