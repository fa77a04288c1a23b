"""What every strategy of one benchmark shares (:class:`BenchContext`), and the decisions made
before any strategy runs: which backend (``auto`` means what it means to ``enhance``), which
weights (real, or random ones written in the real format and labelled as such), and where the
numbers came from (device, versions, the exact command)."""

from __future__ import annotations

import datetime as _dt
import json
import os
import platform
import shlex
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from whisperjav_enhance.errors import ConfigError, WeightsError

from . import scenesets

PROBE_TIMEOUT_S = 180.0           # a `python -c ...` probe in a fresh interpreter


@dataclass(frozen=True)
class BenchContext:
    """Everything a runner needs, fixed for the whole benchmark."""

    scene_set: scenesets.SceneSet
    scene_paths: tuple[str, ...]        # WAVs in run order (one per scene_set duration)
    backend: str                        # canonical backend name
    backend_options: dict               # window/overlap overrides for the pool strategies
    weights_path: str | None            # resolved checkpoint (None: backend has none)
    weights_dict: dict | None           # WeightsInfo.as_dict(), None when weights are missing
    weights_problem: str | None         # why weights are missing (strategies needing them skip)
    slot: object                        # devices.DeviceSlot the strategies run on
    work_dir: Path                      # scratch folder for outputs (removed afterwards)
    scenes_per_recycle: int             # N of the "-n" strategies
    batch_seconds: float                # audio seconds per unit in the batched pool strategies
    vram_budget_gb: float | None        # CUDA only
    keep_outputs: bool                  # keep each strategy's outputs under work_dir/outputs
    timeout_s: float                    # longest one in-process strategy may run

    def __post_init__(self):
        if len(self.scene_paths) != len(self.scene_set.durations_s):
            raise ValueError("one scene path per duration")
        if self.scenes_per_recycle < 1 or not self.batch_seconds > 0 or not self.timeout_s > 0:
            raise ValueError("scenes_per_recycle, batch_seconds and timeout_s must be positive")

    @property
    def durations(self) -> tuple[float, ...]:
        return self.scene_set.durations_s


# -- backend and weights ---------------------------------------------------------------------------
AUTO_HELP = ("auto = the backend `whisperjav-enhance enhance` would pick: the best one whose "
             "weights are present here (DeepFilterNet3 on a fresh CPU machine)")


def pick_backend(spec: str, random_weights: bool = False) -> tuple[str, str]:
    """Canonical backend for ``--backend`` and a note saying why. ``auto`` is the product's own
    choice (backends.select_backend), so the benchmark measures what a user would run."""
    from whisperjav_enhance.backends import parse_backend_spec, select_backend

    name = parse_backend_spec(spec or "auto")
    if name != "auto":
        return name, f"{name} was requested"
    if random_weights:
        raise ConfigError("--random-weights needs a named --backend (auto picks by the weights "
                          "present here, which random weights would not be)")
    backend, note = select_backend("auto")
    return backend.name, note


def resolve_weights(backend: str, weights: str | None, random_weights: bool, scratch: Path,
                    backend_options: dict):
    """Returns (weights_path, WeightsInfo dict or None, problem or None). Random weights are
    written by the backend's own ``write_random_weights`` and found by its real loader."""
    from whisperjav_enhance.backends import backend_class

    cls = backend_class(backend)
    if random_weights:
        if backend == "passthrough":   # nothing to randomise: the run is labelled "none"
            return None, cls.resolve(None, **backend_options).weights.as_dict(), None
        weights = str(cls.write_random_weights(scratch / "random-weights"))
    try:
        b = cls.resolve(weights, **backend_options)
    except WeightsError as exc:
        first = str(exc).splitlines()[0]
        where = "; ".join(exc.searched)
        return None, None, (f"needs {backend} weights: {first}"
                            + (f" (searched: {where})" if where else "")
                            + "; pass --weights PATH, or --random-weights to time random weights")
    return b.weights.path, b.weights.as_dict(), None


def backend_options(backend: str, window_s: float | None, overlap_s: float | None) -> dict:
    """Window overrides for the pool strategies. A window given alone gets an overlap of a
    quarter of it when the backend's default overlap would not fit inside it."""
    from whisperjav_enhance.backends import backend_class

    opts = {}
    if window_s is not None:
        opts["window_seconds"] = float(window_s)
        if overlap_s is None:
            default = float(getattr(backend_class(backend), "overlap_seconds", 0.0))
            overlap_s = default if default < window_s / 2 else window_s / 4
    if overlap_s is not None:
        opts["overlap_seconds"] = float(overlap_s)
    return opts


# -- where the numbers came from ------------------------------------------------------------------
def environment(slot, argv: list[str]) -> dict:
    """Device, versions and the command. The device is described by a fresh interpreter, so this
    process never creates a CUDA context (the pool's workers must have the card to themselves)."""
    import torch

    env = {"device": slot.label, "torch": torch.__version__, "python": platform.python_version(),
           "platform": platform.platform(), "cpu_count": os.cpu_count(),
           "command": command_line(argv), "argv": list(argv),
           "date": _dt.datetime.now().astimezone().isoformat(timespec="seconds")}
    if slot.is_cuda:
        env.update(cuda_device_facts(slot.visible_devices))
    else:
        env["device_name"] = f"CPU: {cpu_name()} ({os.cpu_count()} logical cores)"
    return env


def cuda_device_facts(visible_devices: str | None) -> dict:
    """Name, memory and CUDA version of the first visible GPU, asked of a fresh interpreter."""
    code = ("import json,torch;p=torch.cuda.get_device_properties(0);print(json.dumps("
            "{'name':p.name,'total_mib':p.total_memory/2**20,'cuda':torch.version.cuda}))")
    env = dict(os.environ)
    if visible_devices is not None:
        env["CUDA_VISIBLE_DEVICES"] = visible_devices
    try:
        r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                           timeout=PROBE_TIMEOUT_S, env=env)
        info = json.loads(r.stdout.strip().splitlines()[-1])
        return {"device_name": info["name"], "device_total_mib": round(info["total_mib"]),
                "cuda": info["cuda"]}
    except Exception as exc:  # the benchmark still runs; the report says what is unknown
        return {"device_name": f"unknown ({type(exc).__name__})"}


def cpu_name() -> str:
    """The processor's model name where the OS says it, else the architecture."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def command_line(argv: list[str]) -> str:
    """The command as a user would type it again."""
    prog = Path(argv[0]).name if argv else "whisperjav-enhance"
    if prog in ("__main__.py", "command.py", "-m", "-c", "bench.py"):
        head = ["python", "-m", "whisperjav_enhance_bench"]
    elif prog == "run_bench.py":
        head = ["python", "benchmarks/run_bench.py"]
    else:
        head = [prog, "bench"] if "bench" not in argv[1:2] else [prog]
    return shlex.join(head + list(argv[1:]))


def python_probe(code: str) -> str | None:
    """Run ``code`` in a fresh interpreter; None if it worked, else the error's last line. For
    imports this process must never attempt (torchaudio, clearvoice's decode module)."""
    try:
        r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                           timeout=PROBE_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        return f"the import check did not finish in {PROBE_TIMEOUT_S:.0f} s"
    if r.returncode == 0:
        return None
    lines = [ln for ln in (r.stderr or r.stdout).strip().splitlines() if ln.strip()]
    return lines[-1] if lines else f"exit code {r.returncode}"
