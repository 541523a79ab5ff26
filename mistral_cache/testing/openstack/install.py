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
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from .common import REPO, LaunchError, log

__all__ = ["VenvSpec", "ensure_installed", "install", "install_project", "installed_ok", "plugin_fingerprint"]

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


def ensure_installed(spec: VenvSpec, prog: str) -> None:
    """Install unless the quick check passes: a ``start`` installs on first use."""
    if not installed_ok(spec, deep=False):
        log(prog, f"{spec.name} is not installed in {spec.venv}: installing")
        install(spec, prog)


# -- this project inside the server's virtualenv (the publisher plugin) -------------
PLUGIN_MARKER = ".mistral-cache-plugin"
# What goes into this project's wheel: the fingerprint covers exactly these, as on disk
# (uncommitted edits included), so an unchanged tree reuses the install.
PLUGIN_SOURCES = ("setup.cfg", "pyproject.toml", "README.rst", "mistral_cache", "benchmarks")


def _plugin_files(project: Path) -> list[Path]:
    files: list[Path] = []
    for name in PLUGIN_SOURCES:
        top = project / name
        if top.is_file():
            files.append(top)
            continue
        for path in sorted(top.rglob("*")):
            if path.is_file() and "__pycache__" not in path.parts and path.suffix not in (".pyc", ".pyo"):
                files.append(path)
    return files


def plugin_fingerprint(project: Path = REPO) -> str:
    """A hash of the project files the install copies (paths and contents)."""
    digest = hashlib.sha256()
    for path in _plugin_files(project):
        digest.update(str(path.relative_to(project)).encode() + b"\0" + path.read_bytes() + b"\0")
    return digest.hexdigest()[:16]


def _plugin_loads(spec: VenvSpec, namespace: str, name: str) -> subprocess.CompletedProcess[str]:
    """Load the entry point as the server does (stevedore), without instantiating it."""
    code = (
        "from importlib.metadata import entry_points\n"
        "from stevedore import driver\n"
        f"found = [ep for ep in entry_points(group={namespace!r}) if ep.name == {name!r}]\n"
        "assert found, 'no such entry point'\n"
        "found[0].load()  # an import error shows here with its traceback\n"
        f"driver.DriverManager({namespace!r}, {name!r}, invoke_on_load=False)\n"
    )
    # Run from the virtualenv: from a checkout, ``-c`` would import the checkout's code.
    return subprocess.run(
        [str(spec.bin("python")), "-W", "ignore", "-c", code], capture_output=True, text=True, cwd=str(spec.venv), check=False
    )


def install_project(spec: VenvSpec, prog: str, namespace: str, name: str, project: Path = REPO) -> None:
    """Install this project (no extras, from the source tree) into the server's
    virtualenv, under the server's constraints, and check that the entry point
    ``name`` of ``namespace`` loads there. A no-op while the marker matches the
    tree's :func:`plugin_fingerprint` and the entry point loads; the server's own
    pins (and its install marker) are left alone. Serialised by a lock file: two
    sessions may start servers from the same virtualenv at once."""
    import fcntl  # POSIX only, as the servers

    if not spec.bin("python").exists():
        raise LaunchError(f"{spec.name} is not installed in {spec.venv}")
    with open(spec.venv / (PLUGIN_MARKER + ".lock"), "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        fingerprint = plugin_fingerprint(project)
        marker = spec.venv / PLUGIN_MARKER
        if marker.exists() and marker.read_text().strip() == fingerprint and _plugin_loads(spec, namespace, name).returncode == 0:
            log(prog, f"this project is already installed in {spec.venv}")
            return
        started = time.monotonic()
        marker.unlink(missing_ok=True)
        pip = [str(spec.bin("python")), "-m", "pip", "install", "--disable-pip-version-check", "--no-input", "--quiet"]
        constraints = spec.venv / spec.constraints_file
        if not constraints.exists():
            constraints.write_text(spec.constraints.lstrip())
        with tempfile.TemporaryDirectory(prefix="mistral-cache-src-") as tmp:
            # A copy: pip builds in the source directory, and others work in this checkout.
            src = Path(tmp) / "src"
            for path in _plugin_files(project):
                target = src / path.relative_to(project)
                target.parent.mkdir(parents=True, exist_ok=True)
                shutil.copyfile(path, target)
            log(prog, f"pip install {project} into {spec.venv} (constraints: {constraints})")
            # Its dependencies within the server's pins (a conflict fails here, and is not
            # retried without them), then the project itself again whatever its version says.
            if subprocess.run([*pip, "-c", str(constraints), str(src)], check=False).returncode != 0:
                raise LaunchError(f"pip could not install this project into {spec.venv} within {spec.name}'s constraints (see above)")
            if subprocess.run([*pip, "--no-deps", "--force-reinstall", str(src)], check=False).returncode != 0:
                raise LaunchError(f"pip could not reinstall this project into {spec.venv} (see above)")
        check = subprocess.run([str(spec.bin("python")), "-m", "pip", "check"], capture_output=True, text=True, check=False)
        if check.returncode != 0:
            raise LaunchError(f"{spec.name}'s virtualenv is inconsistent after installing this project:\n{check.stdout}{check.stderr}")
        loaded = _plugin_loads(spec, namespace, name)
        if loaded.returncode != 0:
            raise LaunchError(f"installed, but {spec.name}'s python cannot load {namespace}:{name}:\n{loaded.stderr.strip()[-1500:]}")
        marker.write_text(fingerprint + "\n")
        log(prog, f"installed this project into {spec.venv} in {time.monotonic() - started:.0f}s")
