"""The one place the benchmark reaches for a product module that is moving, and the memory sample
built on it.

The benchmark imports only public names of ``whisperjav_enhance``. The memory telemetry a worker
reports (``process_rss_bytes``, ``snapshot``) is the product's own, so the in-process loops
measure exactly what the pool's workers report; :func:`telemetry` is the only line that knows
which module holds it.
"""

from __future__ import annotations

MIB = 1024 * 1024


def telemetry():
    """The product's telemetry module (``snapshot(stats)``, ``process_rss_bytes()``)."""
    from whisperjav_enhance.executor import telemetry as module

    return module


def memory_sample(device) -> dict:
    """Allocator counters (CUDA; None elsewhere) and process RSS of this process, in MiB, as the
    benchmark's plots and peaks use them. The allocator peaks are since the process started (the
    in-process loops never reset them)."""
    stats = None
    if str(getattr(device, "type", device)).startswith("cuda"):
        import torch

        stats = torch.cuda.memory_stats(device)
    snap = telemetry().snapshot(stats)

    def mib(value):
        return None if value is None else value / MIB

    return {"rss_mib": mib(snap.rss_bytes), "allocated_mib": mib(snap.allocated_bytes),
            "reserved_mib": mib(snap.reserved_bytes),
            "peak_reserved_mib": mib(snap.peak_reserved_bytes),
            "peak_allocated_mib": mib(snap.peak_allocated_bytes),
            "inactive_split_mib": mib(snap.inactive_split_bytes),
            "alloc_retries": snap.alloc_retries, "oom_count": int(snap.ooms or 0)}
