"""Device specs (``auto``, ``cpu``, ``cuda``, ``cuda:N``) resolved to per-worker slots.

The parent never initialises CUDA: it counts GPUs (``torch.cuda.device_count`` does not create a
context) and gives each worker one GPU through ``CUDA_VISIBLE_DEVICES``, translated through the
parent's own ``CUDA_VISIBLE_DEVICES`` so ``cuda:1`` means what it means to the user."""

from __future__ import annotations

import os
import re
from dataclasses import dataclass

from .errors import DeviceError


@dataclass(frozen=True)
class DeviceSlot:
    """One device a group of workers runs on."""

    label: str                   # as the user sees it: "cpu" or "cuda:N"
    visible_devices: str | None  # CUDA_VISIBLE_DEVICES for the worker ("" hides every GPU)
    torch_device: str            # device string inside the worker: "cpu" or "cuda:0"

    @property
    def is_cuda(self) -> bool:
        return self.torch_device.startswith("cuda")


def _parent_visible() -> list[str]:
    env = os.environ.get("CUDA_VISIBLE_DEVICES")
    try:
        import torch

        count = torch.cuda.device_count()
    except Exception:
        count = 0
    if env is None:
        return [str(i) for i in range(count)]
    ids = [t.strip() for t in env.split(",") if t.strip()]
    return ids[:count] if count else []


def resolve_devices(spec: str) -> list[DeviceSlot]:
    """Slots for ``spec``; a GPU that is not there is a :class:`DeviceError` naming what is."""
    spec = (spec or "auto").strip().lower()
    cpu = DeviceSlot("cpu", "", "cpu")
    if spec == "cpu":
        return [cpu]
    m = re.fullmatch(r"(auto|cuda)(?::(\d+))?", spec)
    if not m or (m.group(1) == "auto" and m.group(2) is not None):
        raise DeviceError(f"unknown device {spec!r}; use auto, cpu, cuda or cuda:N")
    visible = _parent_visible()
    if m.group(1) == "auto" and not visible:
        return [cpu]
    if not visible:
        raise DeviceError(f"device {spec!r} requested but no CUDA GPU is visible to torch "
                          "(check the driver, CUDA_VISIBLE_DEVICES, and that torch is a CUDA build; "
                          "`whisperjav-enhance doctor` shows what is there), or use --device cpu")
    if m.group(2) is not None:
        n = int(m.group(2))
        if n >= len(visible):
            raise DeviceError(f"device cuda:{n} requested but only {len(visible)} GPU(s) visible "
                              f"(cuda:0..cuda:{len(visible) - 1})")
        return [DeviceSlot(f"cuda:{n}", visible[n], "cuda:0")]
    return [DeviceSlot(f"cuda:{i}", vid, "cuda:0") for i, vid in enumerate(visible)]


def default_cpu_workers() -> int:
    """Workers for CPU-native backends: one per two cores (each uses two threads), at least 1."""
    return max(1, (os.cpu_count() or 1) // 2)


GIB = 1024 ** 3


def apply_memory_cap(device, budget_gb: float | None) -> int | None:
    """Cap this process's CUDA caching allocator on ``device`` at ``budget_gb`` GiB (an honest
    stand-in for a smaller card: the allocator may reserve no more); returns the cap in bytes, or
    None off CUDA or without a budget. Call it in the process that will use the device (a worker),
    never in a parent that must stay free of CUDA."""
    if budget_gb is None or not str(getattr(device, "type", device)).startswith("cuda"):
        return None
    import torch

    total = int(torch.cuda.get_device_properties(device).total_memory)
    cap = int(min(budget_gb * GIB, total))
    # There is no set_per_process_memory_limit: the cap is a fraction of the device's memory.
    torch.cuda.set_per_process_memory_fraction(cap / total, device)
    return cap
