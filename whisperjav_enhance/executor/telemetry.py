"""Memory telemetry a worker reports after each unit: the CUDA caching allocator's counters
(``torch.cuda.memory_stats``) and the process's resident memory.

On the CPU the allocator fields are None; the process RSS is read through one per-platform
helper (psutil when installed, else ``/proc``, the Windows API, or ``resource`` as a last resort),
so the core has no hard dependency on psutil.

The allocator counters come from the backend (``Backend.allocator_stats``, torch's by default), so
a test backend can report injected values through the real decision path. Importing this module
does not import torch."""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass

from ..devices import is_cuda

MIB = 1024 * 1024  # bytes


@dataclass(frozen=True)
class MemorySnapshot:
    """Allocator and process memory at one moment (bytes; None where not measurable)."""

    allocated_bytes: int | None       # held by live tensors (the weights, after a unit is freed)
    reserved_bytes: int | None        # held by the caching allocator, live or cached
    inactive_split_bytes: int | None  # free blocks inside segments that also hold live blocks:
                                      # fragmentation that empty_cache cannot return
    peak_reserved_bytes: int | None   # highest reserved since the previous snapshot (one unit)
    alloc_retries: int | None         # cudaMalloc failures retried after flushing the cache (total)
    ooms: int | None                  # out-of-memory errors the allocator raised (total)
    rss_bytes: int | None             # resident memory of the process
    cached_bytes: int | None = None   # reserved - allocated before the cache was released: what the
                                      # unit's working set left cached (informative, not drift)
    peak_allocated_bytes: int | None = None  # highest held by live tensors since the previous
                                             # snapshot (torch.cuda.max_memory_allocated): the
                                             # unit's true working set, which the reserved peak
                                             # overstates by the allocator's rounding and cache

    @property
    def drift_bytes(self) -> int | None:
        """reserved - allocated: device memory held but not used by any tensor."""
        if self.reserved_bytes is None or self.allocated_bytes is None:
            return None
        return self.reserved_bytes - self.allocated_bytes

    def to_event(self, worker: int, scenes_done: int):
        from ..events import Telemetry

        return Telemetry(worker=worker, allocated_mib=_mib(self.allocated_bytes),
                         reserved_mib=_mib(self.reserved_bytes),
                         inactive_split_mib=_mib(self.inactive_split_bytes),
                         peak_reserved_mib=_mib(self.peak_reserved_bytes),
                         alloc_retries=self.alloc_retries, oom_count=int(self.ooms or 0),
                         rss_mib=_mib(self.rss_bytes) if self.rss_bytes is not None else 0.0,
                         scenes_done=scenes_done,
                         peak_allocated_mib=_mib(self.peak_allocated_bytes))


def _mib(value: int | None) -> float | None:
    return None if value is None else value / MIB


# -- allocator counters ---------------------------------------------------------------------------
def snapshot(stats: dict | None, cached_bytes: int | None = None) -> MemorySnapshot:
    """A snapshot from the allocator counters ``stats`` (keys of ``torch.cuda.memory_stats``, as
    ``Backend.allocator_stats`` returns them; None off CUDA) and this process's RSS."""
    rss = process_rss_bytes()
    if not stats:
        return MemorySnapshot(None, None, None, None, None, None, rss, cached_bytes)

    def get(key):
        value = stats.get(key)
        return None if value is None else int(value)

    return MemorySnapshot(
        allocated_bytes=get("allocated_bytes.all.current"),
        reserved_bytes=get("reserved_bytes.all.current"),
        inactive_split_bytes=get("inactive_split_bytes.all.current"),
        peak_reserved_bytes=get("reserved_bytes.all.peak"),
        alloc_retries=get("num_alloc_retries"),
        ooms=get("num_ooms"),
        rss_bytes=rss,
        cached_bytes=cached_bytes,
        peak_allocated_bytes=get("allocated_bytes.all.peak"),
    )


def reset_peak(device) -> None:
    """Start a new peak window (so each snapshot's peak covers one unit)."""
    if is_cuda(device):
        import torch

        torch.cuda.reset_peak_memory_stats(device)


# -- process memory (the one per-platform helper) -------------------------------------------------
def process_rss_bytes() -> int | None:
    """Resident memory of this process in bytes, or None if no method works here."""
    try:
        import psutil  # optional; the most accurate everywhere

        return int(psutil.Process().memory_info().rss)
    except Exception:  # ImportError, or an unsupported platform inside psutil
        pass
    if sys.platform.startswith("linux"):
        try:
            with open("/proc/self/statm", "rb") as fh:
                return int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
        except (OSError, ValueError, IndexError):
            pass
    if sys.platform == "win32":
        return _windows_working_set()
    try:
        import resource

        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        # Peak, not current: the best the standard library offers on macOS/BSD (bytes on macOS,
        # KiB elsewhere).
        return int(peak if sys.platform == "darwin" else peak * 1024)
    except Exception:
        return None


def _windows_working_set() -> int | None:
    import ctypes
    from ctypes import wintypes

    class _Counters(ctypes.Structure):
        _fields_ = [("cb", wintypes.DWORD), ("PageFaultCount", wintypes.DWORD)] + [
            (name, ctypes.c_size_t) for name in (
                "PeakWorkingSetSize", "WorkingSetSize", "QuotaPeakPagedPoolUsage",
                "QuotaPagedPoolUsage", "QuotaPeakNonPagedPoolUsage", "QuotaNonPagedPoolUsage",
                "PagefileUsage", "PeakPagefileUsage")]

    try:
        counters = _Counters()
        counters.cb = ctypes.sizeof(counters)
        kernel32 = ctypes.WinDLL("kernel32")
        kernel32.GetCurrentProcess.restype = wintypes.HANDLE
        psapi = ctypes.WinDLL("psapi")
        ok = psapi.GetProcessMemoryInfo(kernel32.GetCurrentProcess(), ctypes.byref(counters),
                                        counters.cb)
        return int(counters.WorkingSetSize) if ok else None
    except Exception:
        return None
