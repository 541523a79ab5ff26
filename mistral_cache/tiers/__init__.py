"""The storage tiers: in-process (``local``) and Redis (``redis``)."""

__all__: list[str] = []
