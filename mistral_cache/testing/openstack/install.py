"""The private virtualenvs Mistral and Keystone run from.

Both servers pin dependencies (oslo.*, SQLAlchemy, eventlet...) that must not
meet the project's own, so each gets a virtualenv of its own under
``<repo>/.mistral``. A marker file holds a fingerprint of the requirement set:
``install`` is a no-op while it matches and the server imports, and rebuilds
the virtualenv when the pins change.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from .common import REPO, LaunchError, log

__all__ = ["VenvSpec", "install", "installed_ok"]

MARKER = ".mistral-cache-install"


@dataclass(frozen=True)
class VenvSpec:
    """What one server's virtualenv holds and how to check it."""

    name: str  # "Mistral", for messages
    venv_variable: str  # environment variable overriding the location
    python_variable: str  # environment variable naming the python that creates it
    default_venv: tuple[str, ...]  # path under <repo>/.mistral
    requirements: tuple[str, ...]
    constraints: str  # pip constraints file text
    constraints_file: str  # its name inside the virtualenv
    check_imports: str  # python code exiting 0 when the server imports
    binaries: tuple[str, ...]  # console scripts a quick check looks for

    @property
    def venv(self) -> Path:
        return Path(os.environ.get(self.venv_variable) or REPO.joinpath(".mistral", *self.default_venv))

    def bin(self, name: str) -> Path:
        return self.venv / "bin" / name

    @property
    def fingerprint(self) -> str:
        text = "\n".join(self.requirements) + self.constraints
        return hashlib.sha256(text.encode()).hexdigest()[:16]


def installed_ok(spec: VenvSpec, deep: bool = True) -> bool:
    """The virtualenv holds this requirement set; ``deep``: and the server imports."""
    py = spec.bin("python")
    marker = spec.venv / MARKER
    if not py.exists() or not marker.exists():
        return False
    if marker.read_text().strip() != spec.fingerprint:
        return False
    if not deep:
        return all(spec.bin(name).exists() for name in spec.binaries)
    r = subprocess.run([str(py), "-W", "ignore", "-c", spec.check_imports], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=False)
    return r.returncode == 0


def install(spec: VenvSpec, prog: str, *, force: bool = False, verbose: bool = False) -> None:
    """Create (or recreate) the virtualenv and pip-install the pinned set into it.

    The exact pins were verified on CPython 3.11; when another Python lacks a
    wheel or falls outside a pin's Requires-Python, the version ranges alone
    are tried. Raises :class:`LaunchError` when neither installs.
    """
    venv = spec.venv
    if not force and installed_ok(spec):
        log(prog, f"{spec.name} already installed in {venv}")
        return
    started = time.monotonic()
    python = os.environ.get(spec.python_variable) or sys.executable
    if venv.exists():
        log(prog, f"recreating virtualenv {venv}")
        shutil.rmtree(venv)
    log(prog, f"creating virtualenv {venv} with {python}")
    venv.parent.mkdir(parents=True, exist_ok=True)
    subprocess.run([python, "-m", "venv", str(venv)], check=True)
    constraints = venv / spec.constraints_file
    constraints.write_text(spec.constraints.lstrip())
    pip = [str(spec.bin("python")), "-m", "pip", "install", "--disable-pip-version-check", "--no-input"]
    if not verbose:
        pip.append("--quiet")
    requirements = list(spec.requirements)
    log(prog, "pip install {} (constraints: {})".format(" ".join(requirements), constraints))
    if subprocess.run([*pip, "-c", str(constraints), *requirements], check=False).returncode != 0:
        log(prog, f"pinned install failed (python {python}?); retrying with the version ranges only")
        if subprocess.run(pip + requirements, check=False).returncode != 0:
            raise LaunchError("pip install failed")
    if subprocess.run([str(spec.bin("python")), "-W", "ignore", "-c", spec.check_imports], check=False).returncode != 0:
        raise LaunchError(f"{spec.name} installed but does not import (see above)")
    (venv / MARKER).write_text(spec.fingerprint + "\n")
    log(prog, f"installed {spec.name} into {venv} in {time.monotonic() - started:.0f}s")
