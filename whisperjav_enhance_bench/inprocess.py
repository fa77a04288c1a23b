"""The process an in-process strategy runs in: one model, the scenes in order, memory sampled
after every scene, one result message back to the benchmark.

Three loops share it: the subtitle pipeline's status quo (clearvoice's own decode path, autograd
on), our engine with one whole scene per forward (and its variants), and the backend's runtime
called directly, as a worker calls it but with no pool around it. They deliberately have no
isolation: the point is to measure what that costs, or what isolation costs against them. Each
strategy gets a fresh spawned process with its environment (``CUDA_VISIBLE_DEVICES``, and
``PYTORCH_CUDA_ALLOC_CONF`` for the expandable-segments variant) set before it starts, so CUDA
options apply from the first allocation and no strategy inherits another's allocator state.

    run_in_child(cfg, env) --spawn.call_in_child--> scene_loop(cfg) --> result
"""

from __future__ import annotations

import argparse
import gc
import sys
import time

import numpy as np

from whisperjav_enhance.audio import read_audio, resample, write_audio_atomic
from whisperjav_enhance.errors import BackendUnavailable, SceneError
from whisperjav_enhance.status import Reason, Status

from .product import memory_sample
from .spawn import call_in_child

# Whole-scene mode pads each scene only up to this step (upstream does not pad at all): 40 ms is a
# whole number of MossFormer2 (384) and ZipEnhancer (100) STFT hops at their rates.
WHOLE_SCENE_QUANTUM_S = 0.04
# The upstream decode's arguments (clearvoice/config/inference/MossFormer2_SE_48K.yaml).
UPSTREAM_ARGS = {"network": "MossFormer2_SE_48K", "sampling_rate": 48_000,
                 "one_time_decode_length": 20, "decode_window": 4, "win_type": "hamming",
                 "win_len": 1920, "win_inc": 384, "fft_len": 1920, "num_mels": 60}
UPSTREAM_SUBMODULE = "utils.decode_batch"   # clearvoice.utils.decode_batch
# What clearvoice.utils.decode_batch needs beyond torch and numpy (it and the modules it imports).
UPSTREAM_DEPENDENCIES = ("torchaudio", "librosa", "scipy", "joblib", "pydub")
# Run in a fresh interpreter by the benchmark (so its own process never imports torchaudio):
# lists every missing dependency, then tries the real import, which also catches a torchaudio
# that is installed but does not load.
UPSTREAM_IMPORT_PROBE = (
    "import importlib.util as u, sys\n"
    f"missing = [m for m in {UPSTREAM_DEPENDENCIES!r} if u.find_spec(m) is None]\n"
    "if missing: sys.exit('not installed: ' + ', '.join(missing))\n"
    "from whisperjav_enhance.backends.mossformer2 import import_clearvoice_submodule\n"
    f"import_clearvoice_submodule({UPSTREAM_SUBMODULE!r})\n")


def _setup_device(cfg: dict):
    """The device the loop runs on: a torch.device for backends that use torch, else the plain
    string, so a loop of a torch-free runtime never imports torch itself."""
    if not cfg.get("uses_torch", True):
        return cfg["torch_device"]
    import torch

    from whisperjav_enhance.devices import apply_memory_cap

    device = torch.device(cfg["torch_device"])
    if device.type == "cuda":
        torch.cuda.set_device(device)
        apply_memory_cap(device, cfg.get("vram_budget_gb"))
    return device


def _load_ours(cfg: dict, device):
    """Our engine with one whole-scene window per forward, batch 1. Returns (process, rate, close)."""
    from whisperjav_enhance.backends import create_backend
    from whisperjav_enhance.engine import Engine
    from whisperjav_enhance.planning import WindowPlan

    backend = create_backend(cfg["backend"], cfg["weights_path"], window_seconds=cfg["window_s"],
                             overlap_seconds=0.0) if cfg["windowed"] else \
        create_backend(cfg["backend"], cfg["weights_path"])
    backend.load(device)
    plan = (WindowPlan.from_seconds(backend.sample_rate, cfg["window_s"], 0.0,
                                    quantum_s=WHOLE_SCENE_QUANTUM_S) if backend.windowed else None)
    engine = Engine(backend, max_batch=1, plan=plan)

    def process(audio):
        ((_, y),) = list(engine.run([audio]))
        return y

    return process, backend.sample_rate, backend.close


def _load_direct(cfg: dict, device):
    """The backend as a worker drives it, minus the pool: its own settings, its own windows; a
    streaming backend (DeepFilterNet3) gets each whole scene straight into its runtime."""
    from whisperjav_enhance.backends import create_backend

    backend = create_backend(cfg["backend"], cfg["weights_path"], **cfg["backend_options"])
    backend.load(device)
    if backend.windowed:
        from whisperjav_enhance.engine import Engine

        engine = Engine(backend)

        def process(audio):
            ((_, y),) = list(engine.run([audio]))
            return y
    else:
        process = backend.enhance_scene
    return process, backend.sample_rate, backend.close


def _load_upstream(cfg: dict, device):
    """The status quo: our loader for the checkpoint (strict, never silently random), then the
    network driven by clearvoice's own numpy decode with autograd left on, as the pipeline does."""
    from whisperjav_enhance.backends import create_backend
    from whisperjav_enhance.backends.mossformer2 import import_clearvoice_submodule

    decode = import_clearvoice_submodule(UPSTREAM_SUBMODULE).decode_one_audio_mossformer2_se_48k
    backend = create_backend("mossformer2", cfg["weights_path"])
    backend.load(device)
    net = backend.net
    if net is None:
        raise BackendUnavailable("the mossformer2 backend did not build its network")
    args = argparse.Namespace(**UPSTREAM_ARGS)

    def process(audio):
        y = decode(net, device, audio[None, :].astype(np.float32), args)
        return np.asarray(y, dtype=np.float32).reshape(-1)[:audio.shape[0]]

    return process, UPSTREAM_ARGS["sampling_rate"], backend.close


LOADERS = {"upstream": _load_upstream, "inprocess": _load_ours, "direct": _load_direct}


def scene_loop(cfg: dict) -> dict:
    """One process, one model, the scenes in order: what the subtitle pipeline does today."""
    device = _setup_device(cfg)
    loader = LOADERS[cfg["kind"]]
    load_s: list[float] = []
    t_start = time.perf_counter()

    def load():
        t = time.perf_counter()
        loaded = loader(cfg, device)
        load_s.append(time.perf_counter() - t)
        return loaded

    process, rate, close = load()
    outcomes, samples, reloads = [], [], 0
    for i, (src, dst) in enumerate(zip(cfg["inputs"], cfg["outputs"])):
        if cfg["reload_every"] and i and i % cfg["reload_every"] == 0:
            close()
            del process, close
            gc.collect()
            _empty_cache(device)
            process, rate, close = load()
            reloads += 1
        outcomes.append(_one_scene(process, rate, src, dst))
        if cfg["empty_cache"]:
            _empty_cache(device)
        samples.append(dict(memory_sample(device), scenes_done=i + 1, worker=0))
    wall = time.perf_counter() - t_start
    close()
    return {"outcomes": outcomes, "wall_seconds": wall, "load_seconds": load_s,
            "reloads": reloads, "samples": samples, "final": memory_sample(device),
            "torch_imported": "torch" in sys.modules}


def _one_scene(process, rate: int, src: str, dst: str) -> dict:
    """Read, enhance, write one scene; a failure ends only this scene, as in the pipeline."""
    try:
        audio, info = read_audio(src, rate)
        y = process(audio)
        y = resample(np.ascontiguousarray(y, dtype=np.float32), rate, info.sample_rate)
        write_audio_atomic(dst, y, info.sample_rate)
        return {"status": Status.ENHANCED, "reason": None}
    except SceneError as exc:
        return {"status": Status.FAILED, "reason": exc.reason, "message": str(exc)}
    except Exception as exc:  # a per-scene failure (e.g. CUDA OOM in upstream code) ends only it
        from whisperjav_enhance.engine import is_out_of_memory

        oom = "torch" in sys.modules and is_out_of_memory(exc)
        return {"status": Status.FAILED, "reason": Reason.OUT_OF_MEMORY if oom else Reason.BACKEND_ERROR,
                "message": f"{type(exc).__name__}: {exc}"[:300]}


def _empty_cache(device) -> None:
    if getattr(device, "type", "cpu") == "cuda":
        import torch

        torch.cuda.empty_cache()


def run_in_child(cfg: dict, env: dict, timeout_s: float) -> dict:
    """:func:`scene_loop` in a fresh spawned process with ``env`` set before it starts (so CUDA
    options such as expandable_segments apply from its first allocation); its result."""
    return call_in_child(__name__, "scene_loop", {"cfg": cfg}, timeout_s, env)
