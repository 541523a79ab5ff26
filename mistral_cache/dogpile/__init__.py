"""dogpile.cache integration: the ``mistral_cache`` backend (entry point group
``dogpile.cache``), its distributed mutex, and a region invalidation strategy that
reaches every process. Needs ``dogpile.cache`` installed."""

from .backend import HARD_TAG, SOFT_TAG, MistralBackend
from .invalidation import RegionInvalidator
from .mutex import DistributedMutex

__all__ = ["HARD_TAG", "SOFT_TAG", "DistributedMutex", "MistralBackend", "RegionInvalidator"]
