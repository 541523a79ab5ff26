"""The storage tiers: in-process (``local``) and Redis (``redis``)."""
