"""Operating a cache from the command line: ``mistral-cache bench | stats |
invalidate | doctor`` (:mod:`mistral_cache.admin.cli` is the entry point; each
command is a module of this package)."""

__all__: list[str] = []
