"""Loaders for the benchmark's data: Hub first, a local data directory offline."""
