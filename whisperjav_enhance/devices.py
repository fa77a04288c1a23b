"""Device specs (``auto``, ``cpu``, ``cuda``, ``cuda:N``) resolved to per-worker slots.

The parent never initialises CUDA and never imports torch (~250 MB it would hold for nothing): it
learns from the driver (NVML, or the device files) whether there is a GPU at all, and only then
asks a short child process how many GPUs torch can use (:func:`gpu_count`). Each worker gets one
GPU through ``CUDA_VISIBLE_DEVICES``, translated through the parent's own
``CUDA_VISIBLE_DEVICES`` so ``cuda:1`` means what it means to the user."""

from __future__ import annotations

import ctypes
import ctypes.util
import logging
import os
import re
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from .errors import DeviceError

log = logging.getLogger("whisperjav_enhance.devices")

# The child that asks torch how many GPUs it can use: a torch import, nothing more (seconds).
TORCH_PROBE_TIMEOUT_S = 120.0
_TORCH_PROBE = "import torch; print(torch.cuda.device_count())"
# Files a GPU driver creates: evidence of a GPU where NVML itself cannot be loaded.
_DRIVER_FILES = ("/dev/nvidia0", "/dev/nvidiactl", "/dev/kfd")
_gpu_counts: dict[str | None, int] = {}   # CUDA_VISIBLE_DEVICES -> torch's count (per process)


@dataclass(frozen=True)
class DeviceSlot:
    """One device a group of workers runs on."""

    label: str                   # as the user sees it: "cpu" or "cuda:N"
    visible_devices: str | None  # CUDA_VISIBLE_DEVICES for the worker ("" hides every GPU)
    torch_device: str            # device string inside the worker: "cpu" or "cuda:0"

    @property
    def is_cuda(self) -> bool:
        return self.torch_device.startswith("cuda")


def gpu_count() -> int:
    """GPUs torch can use here (after ``CUDA_VISIBLE_DEVICES``), without importing torch in this
    process: 0 at once when the driver knows no GPU, else a child process asks torch (which also
    knows whether it is a CUDA build). Cached per process."""
    key = os.environ.get("CUDA_VISIBLE_DEVICES")
    if key not in _gpu_counts:
        _gpu_counts[key] = _torch_gpu_count() if _driver_sees_gpus() else 0
    return _gpu_counts[key]


def _driver_sees_gpus() -> bool:
    """Whether the GPU driver reports any device (NVML; where NVML is missing, its files)."""
    names = ["nvml.dll"] if os.name == "nt" else ["libnvidia-ml.so.1", ctypes.util.find_library("nvidia-ml")]
    for name in filter(None, names):
        try:
            nvml = ctypes.CDLL(name)
        except OSError:
            continue
        count = ctypes.c_uint(0)
        try:
            if nvml.nvmlInit_v2() != 0:
                break  # NVML is there but not working: the device files decide
            ok = nvml.nvmlDeviceGetCount_v2(ctypes.byref(count)) == 0
            nvml.nvmlShutdown()
        except AttributeError:  # a library of that name without the NVML calls
            continue
        if ok:
            return count.value > 0
    return any(Path(f).exists() for f in _DRIVER_FILES)


def _torch_gpu_count() -> int:
    try:
        done = subprocess.run([sys.executable, "-c", _TORCH_PROBE], capture_output=True, text=True,
                              timeout=TORCH_PROBE_TIMEOUT_S)
        count = int(done.stdout.strip().splitlines()[-1]) if done.returncode == 0 else 0
    except (OSError, subprocess.SubprocessError, ValueError, IndexError):
        count = 0
    log.debug("torch in a child process sees %d GPU(s)", count)
    return count


def _parent_visible() -> list[str]:
    env = os.environ.get("CUDA_VISIBLE_DEVICES")
    count = gpu_count()
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


GIB = 1024 ** 3


def is_cuda(device) -> bool:
    """Whether ``device`` (a torch.device, a device string such as "cuda:0", or None) is CUDA."""
    return device is not None and str(getattr(device, "type", device)).startswith("cuda")


def apply_memory_cap(device, budget_gb: float | None) -> int | None:
    """Cap this process's CUDA caching allocator on ``device`` at ``budget_gb`` GiB (an honest
    stand-in for a smaller card: the allocator may reserve no more); returns the cap in bytes, or
    None off CUDA or without a budget. Call it in the process that will use the device (a worker),
    never in a parent that must stay free of CUDA."""
    if budget_gb is None or not is_cuda(device):
        return None
    import torch

    total = int(torch.cuda.get_device_properties(device).total_memory)
    cap = int(min(budget_gb * GIB, total))
    # There is no set_per_process_memory_limit: the cap is a fraction of the device's memory.
    torch.cuda.set_per_process_memory_fraction(cap / total, device)
    return cap
