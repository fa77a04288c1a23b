"""Device memory per process as the driver reports it (``nvidia-smi``), sampled in a thread while
a pool strategy runs, so every worker's figure can stand next to its allocator's own view (the
driver's includes the CUDA context and whatever the allocator does not count).

Off CUDA, or without nvidia-smi, the sampler says so and records nothing. The driver's figures
and the pool's worker ids are joined by process id (``WorkerStarted.pid``).
"""

from __future__ import annotations

import shutil
import subprocess
import threading

POLL_S = 0.25            # between two nvidia-smi queries (each takes ~50-100 ms)
QUERY_TIMEOUT_S = 10.0
APPS_QUERY = ["--query-compute-apps=pid,used_memory", "--format=csv,noheader,nounits"]
GPU_QUERY = ["--query-gpu=name,driver_version,memory.total,memory.used",
             "--format=csv,noheader,nounits"]


def nvidia_smi(args: list[str]) -> str | None:
    """nvidia-smi's output for ``args``, or None when it is missing or fails."""
    exe = shutil.which("nvidia-smi")
    if exe is None:
        return None
    try:
        r = subprocess.run([exe, *args], capture_output=True, text=True, timeout=QUERY_TIMEOUT_S)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return r.stdout if r.returncode == 0 else None


def gpu_facts() -> dict:
    """Name, driver version and memory of the first GPU, from the driver (no CUDA context)."""
    out = nvidia_smi(GPU_QUERY)
    if not out or not out.strip():
        return {"driver": None, "reason": "nvidia-smi is not available here"}
    name, driver, total, used = [p.strip() for p in out.strip().splitlines()[0].split(",")]
    return {"gpu_name": name, "driver": driver, "total_mib": float(total),
            "used_mib_at_start": float(used)}


class DriverMemorySampler:
    """Largest ``used_memory`` per pid while running (``with sampler: ...``)."""

    def __init__(self, enabled: bool = True):
        self.enabled = enabled and shutil.which("nvidia-smi") is not None
        self.peak_mib: dict[int, float] = {}
        self.samples = 0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def __enter__(self):
        if self.enabled:
            self._thread = threading.Thread(target=self._run, name="nvidia-smi sampler",
                                            daemon=True)
            self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        if self._thread is not None:
            self._thread.join(QUERY_TIMEOUT_S + POLL_S)
        return False

    def _run(self) -> None:
        while not self._stop.is_set():
            self.sample()
            self._stop.wait(POLL_S)

    def sample(self) -> None:
        out = nvidia_smi(APPS_QUERY)
        if out is None:
            return
        self.samples += 1
        for line in out.strip().splitlines():
            parts = [p.strip() for p in line.split(",")]
            if len(parts) != 2 or not parts[0].isdigit():
                continue
            try:
                mib = float(parts[1])
            except ValueError:   # "[N/A]" where the driver cannot tell
                continue
            pid = int(parts[0])
            self.peak_mib[pid] = max(mib, self.peak_mib.get(pid, 0.0))

    def per_worker(self, result) -> list[dict]:
        """One row per worker of a pool StrategyResult: the driver's peak next to the
        allocator's peaks (reserved, allocated) that the worker reported."""
        rows = []
        for worker, pid in sorted(result.worker_pids.items(), key=lambda kv: int(kv[0])):
            key = f"worker {worker}"
            rows.append({"strategy": result.strategy, "worker": int(worker), "pid": pid,
                         "driver_mib": self.peak_mib.get(pid),
                         "allocator_reserved_mib": result.peak_reserved_mib.get(key),
                         "allocator_allocated_mib": result.peak_allocated_mib.get(key)})
        return rows

    def status(self) -> str:
        if not self.enabled:
            return "nvidia-smi not available: no driver figures"
        if not self.samples:
            return "nvidia-smi answered no query"
        return f"{self.samples} nvidia-smi samples every {POLL_S:g} s"
