"""What a cache counts and how it is seen from outside: :mod:`.stats` (counters and
latency histograms), :mod:`.metrics` (an exporter-neutral ``samples()`` hook and a
Prometheus collector), :mod:`.publisher` (each process's statistics published to
Redis for ``mistral-cache stats``)."""

__all__: list[str] = []
