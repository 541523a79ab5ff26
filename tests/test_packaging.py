"""Packaging: the generic cache needs only redis (with hiredis), cachetools and tenacity; the
Mistral facade is the extra ``mistral`` and says so when it is missing."""

from __future__ import annotations

import configparser
import pathlib
import subprocess
import sys

ROOT = pathlib.Path(__file__).resolve().parent.parent


def _run(code: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=60, check=False)


def test_install_requires_only_the_generic_dependencies() -> None:
    cfg = configparser.ConfigParser()
    cfg.read(ROOT / "setup.cfg")
    names = {line.split(">")[0].split("<")[0].split("=")[0].strip() for line in cfg["options"]["install_requires"].split("\n") if line.strip()}
    assert names == {"redis", "hiredis", "cachetools", "tenacity"}  # hiredis: where a wheel exists (marker)
    extras = cfg["options.extras_require"]
    for extra in ("mistral", "test", "bench"):  # README's two commands install [test] and [bench]
        assert "python-mistralclient" in extras[extra], extra


def test_import_mistral_cache_loads_no_mistral_client() -> None:
    done = _run(
        "import sys, mistral_cache, mistral_cache.testing\n"
        "bad = sorted(m for m in sys.modules if m.split('.')[0] in ('mistralclient', 'keystoneauth1', 'openstack'))\n"
        "assert not bad and 'mistral_cache.mistral' not in sys.modules, bad\n"
    )
    assert done.returncode == 0, done.stderr


def test_mistral_facade_without_the_client_names_the_extra() -> None:
    done = _run(
        "import sys\n"
        "sys.modules['mistralclient'] = None  # as if python-mistralclient were not installed\n"
        "try:\n"
        "    from mistral_cache.mistral import CachedMistralClient\n"
        "except ImportError as exc:\n"
        "    print(exc)\n"
        "else:\n"
        "    raise SystemExit('imported without python-mistralclient')\n"
    )
    assert done.returncode == 0, done.stderr
    assert "pip install 'mistral-cache[mistral]'" in done.stdout
