"""The facade's original import path, kept: ``from mistral_cache.mistral.client import ...``.

The code lives in modules of one concern each, importing only downward:
:mod:`.catalog` (what is read, what a write invalidates), :mod:`.transport`
(timeouts, retries, Mistral's answers), :mod:`.arguments` (binding and key text),
:mod:`.resources` (resources rebuilt from cached dicts), :mod:`.reads`,
:mod:`.writes`, and :mod:`.facade` (``CachedMistralClient``, ``CachedManager``).
Cached reads still carry this module's name in their function names
(``mistral_cache.mistral.client.workflows.get``).
"""

from __future__ import annotations

from .catalog import READS, WRITES, Read, Tags
from .facade import CachedManager, CachedMistralClient
from .transport import DEFAULT_TIMEOUT, default_retry, install_timeout, is_transient

__all__ = [
    "Tags",
    "DEFAULT_TIMEOUT",
    "Read",
    "READS",
    "WRITES",
    "is_transient",
    "default_retry",
    "install_timeout",
    "CachedManager",
    "CachedMistralClient",
]
