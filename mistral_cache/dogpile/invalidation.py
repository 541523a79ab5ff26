"""``RegionInvalidator``: ``region.invalidate()`` for every process at once.

dogpile's default strategy keeps the invalidation time in the calling process
only (dogpile.cache issue #138), so other workers go on serving old values. This
strategy turns ``invalidate(hard)`` into a bump of the region's generation in Redis
(:meth:`MistralBackend.invalidate_region`), which every process sees on its next
read, with every local tier emptied by the announcement. The backend hands
soft-invalidated values over with a negative creation time (:func:`soft_ct`);
this strategy reports exactly those as soft-invalidated, so dogpile regenerates
them once while the other callers get the old value.
"""

from __future__ import annotations

from typing import Any

from dogpile.cache.region import RegionInvalidationStrategy

from ..exceptions import ConfigurationError
from .backend import MistralBackend

__all__ = ["RegionInvalidator"]


class RegionInvalidator(RegionInvalidationStrategy):
    """Pass as ``region.configure("mistral_cache", ..., region_invalidator=RegionInvalidator(region))``,
    or set ``region.region_invalidator = RegionInvalidator(region)`` after configuring
    (oslo.cache's ``configure_cache_region`` takes no strategy)."""

    def __init__(self, region: Any) -> None:
        self._region = region
        self._hard: bool | None = None  # the last invalidate() of this process, for dogpile's checks

    def backend(self) -> MistralBackend:
        backend = self._region.actual_backend
        if not isinstance(backend, MistralBackend):
            raise ConfigurationError(f"RegionInvalidator needs the mistral_cache backend, the region has {type(backend).__name__}")
        return backend

    def invalidate(self, hard: bool = True) -> None:
        self._hard = bool(hard)
        self.backend().invalidate_region(bool(hard))

    def is_invalidated(self, timestamp: float) -> bool:
        return timestamp < 0

    def is_soft_invalidated(self, timestamp: float) -> bool:
        return timestamp < 0

    def is_hard_invalidated(self, timestamp: float) -> bool:
        return False  # the backend returns no value written before a hard invalidation

    def was_soft_invalidated(self) -> bool:
        return self._hard is False

    def was_hard_invalidated(self) -> bool:
        return self._hard is True
