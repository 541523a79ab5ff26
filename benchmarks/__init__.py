"""Bundled benchmarks: workloads, peers and reports (run by ``mistral-cache bench``)."""
