"""The process an in-process strategy runs in: one model, the scenes in order, memory sampled
after every scene, one result message back to the benchmark.

This is the status quo of the subtitle pipeline (and its proposed variants) reproduced faithfully,
so it deliberately has no isolation: the point is to measure what that costs. Each strategy gets
a fresh spawned process, with its environment (``CUDA_VISIBLE_DEVICES``, and
``PYTORCH_CUDA_ALLOC_CONF`` for the expandable-segments variant) set before it starts, so CUDA
options apply from the first allocation and no strategy inherits another's allocator state.

    run_in_child(cfg, env) --spawn--> strategy_process_main --> scene_loop --> ("ok", result)
"""

from __future__ import annotations

import argparse
import gc
import os
import sys
import time
import traceback

import numpy as np

from .audio import read_audio, resample, write_audio_atomic
from .errors import BackendUnavailable, EnhanceError, SceneError
from .pool.telemetry import process_rss_bytes

MIB = 1024 * 1024
GIB = 1024 * MIB
# Whole-scene mode pads each scene only up to this step (upstream does not pad at all): 40 ms is a
# whole number of MossFormer2 (384) and ZipEnhancer (100) STFT hops at their rates.
WHOLE_SCENE_QUANTUM_S = 0.04
CHILD_EXIT_TIMEOUT_S = 30.0       # a strategy process that sent its result should exit by then
# The upstream decode's arguments (clearvoice/config/inference/MossFormer2_SE_48K.yaml).
UPSTREAM_ARGS = {"network": "MossFormer2_SE_48K", "sampling_rate": 48_000,
                 "one_time_decode_length": 20, "decode_window": 4, "win_type": "hamming",
                 "win_len": 1920, "win_inc": 384, "fft_len": 1920, "num_mels": 60}


def memory_sample(device) -> dict:
    """Allocator counters (CUDA) and RSS, in MiB, for the plots and peaks."""
    rss = process_rss_bytes()
    out = {"rss_mib": None if rss is None else rss / MIB, "allocated_mib": None, "reserved_mib": None,
           "peak_reserved_mib": None, "peak_allocated_mib": None, "inactive_split_mib": None,
           "alloc_retries": None, "oom_count": 0}
    if getattr(device, "type", "cpu") == "cuda":
        import torch

        st = torch.cuda.memory_stats(device)
        out.update(allocated_mib=st.get("allocated_bytes.all.current", 0) / MIB,
                   reserved_mib=st.get("reserved_bytes.all.current", 0) / MIB,
                   peak_reserved_mib=st.get("reserved_bytes.all.peak", 0) / MIB,
                   peak_allocated_mib=st.get("allocated_bytes.all.peak", 0) / MIB,
                   inactive_split_mib=st.get("inactive_split_bytes.all.current", 0) / MIB,
                   alloc_retries=int(st.get("num_alloc_retries", 0)),
                   oom_count=int(st.get("num_ooms", 0)))
    return out


def strategy_process_main(cfg: dict, conn) -> None:
    """Entry point of a strategy process: run the loop, send one result message, exit."""
    try:
        conn.send(("ok", scene_loop(cfg)))
    except BaseException as exc:  # the parent reports it; nothing may escape unreported
        conn.send(("error", f"{type(exc).__name__}: {exc}", traceback.format_exc()))
    finally:
        conn.close()


def _setup_device(cfg: dict):
    import torch

    device = torch.device(cfg["torch_device"])
    if device.type == "cuda":
        torch.cuda.set_device(device)
        if cfg.get("vram_budget_gb"):
            total = torch.cuda.get_device_properties(device).total_memory
            torch.cuda.set_per_process_memory_fraction(min(1.0, cfg["vram_budget_gb"] * GIB / total),
                                                       device)
    return device


def _load_ours(cfg: dict, device):
    """Our engine with one whole-scene window per forward, batch 1. Returns (process, rate, close)."""
    from .backends import create_backend
    from .engine import Engine
    from .planning import WindowPlan

    backend = create_backend(cfg["backend"], cfg["weights_path"], window_seconds=cfg["window_s"],
                             overlap_seconds=0.0)
    backend.load(device)
    engine = Engine(backend, max_batch=1)
    if backend.windowed:
        engine.plan = WindowPlan.from_seconds(backend.sample_rate, cfg["window_s"], 0.0,
                                              quantum_s=WHOLE_SCENE_QUANTUM_S)

    def process(audio):
        ((_, y),) = list(engine.run([audio]))
        return y

    return process, backend.sample_rate, backend.close


# What clearvoice.utils.decode_batch needs beyond torch and numpy (it and the modules it imports).
UPSTREAM_DEPENDENCIES = ("torchaudio", "librosa", "scipy", "joblib", "pydub")
# Run in a fresh interpreter by the benchmark (so this process never imports torchaudio): lists
# every missing dependency, then tries the real import, which also catches a torchaudio that is
# installed but does not load.
UPSTREAM_IMPORT_PROBE = (
    "import importlib.util as u, sys, types\n"
    f"missing = [m for m in {UPSTREAM_DEPENDENCIES!r} if u.find_spec(m) is None]\n"
    "if missing: sys.exit('not installed: ' + ', '.join(missing))\n"
    "spec = u.find_spec('clearvoice')\n"
    "pkg = types.ModuleType('clearvoice'); pkg.__path__ = list(spec.submodule_search_locations)\n"
    "sys.modules['clearvoice'] = pkg\n"
    "import clearvoice.utils.decode_batch\n")


def _upstream_decode():
    """clearvoice's 48 kHz decode function, imported without running clearvoice/__init__ (which
    pulls in its whole wrapper). The decode module itself imports torchaudio and librosa."""
    import importlib.util
    import types

    if "clearvoice" not in sys.modules:
        spec = importlib.util.find_spec("clearvoice")
        if spec is None or not spec.submodule_search_locations:
            raise BackendUnavailable("clearvoice is not installed")
        pkg = types.ModuleType("clearvoice")
        pkg.__path__ = list(spec.submodule_search_locations)
        sys.modules["clearvoice"] = pkg
    from clearvoice.utils.decode_batch import decode_one_audio_mossformer2_se_48k

    return decode_one_audio_mossformer2_se_48k


def _load_upstream(cfg: dict, device):
    """The status quo: our loader for the checkpoint (strict, never silently random), then the
    network driven by clearvoice's own numpy decode with autograd left on, as the pipeline does."""
    from .backends import create_backend

    decode = _upstream_decode()
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


def scene_loop(cfg: dict) -> dict:
    """One process, one model, the scenes in order: what the subtitle pipeline does today."""
    device = _setup_device(cfg)
    loader = _load_upstream if cfg["kind"] == "upstream" else _load_ours
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
            "reloads": reloads, "samples": samples, "final": memory_sample(device)}


def _one_scene(process, rate: int, src: str, dst: str) -> dict:
    """Read, enhance, write one scene; a failure ends only this scene, as in the pipeline."""
    try:
        audio, info = read_audio(src, rate)
        y = process(audio)
        y = resample(np.ascontiguousarray(y, dtype=np.float32), rate, info.sample_rate)
        write_audio_atomic(dst, y, info.sample_rate)
        return {"status": "enhanced", "reason": None}
    except SceneError as exc:
        return {"status": "failed", "reason": exc.reason, "message": str(exc)}
    except Exception as exc:  # a per-scene failure (e.g. CUDA OOM in upstream code) ends only it
        from .engine import is_out_of_memory

        reason = "out_of_memory" if is_out_of_memory(exc) else "error"
        return {"status": "failed", "reason": reason, "message": f"{type(exc).__name__}: {exc}"[:300]}


def _empty_cache(device) -> None:
    if getattr(device, "type", "cpu") == "cuda":
        import torch

        torch.cuda.empty_cache()


def run_in_child(cfg: dict, env: dict, timeout_s: float) -> dict:
    """Run ``strategy_process_main`` in a spawned process with ``env`` set before it starts (so CUDA
    options such as expandable_segments apply from its first allocation); return its result."""
    import multiprocess as mp
    from multiprocess.connection import wait

    ctx = mp.get_context("spawn")
    reader, writer = ctx.Pipe(duplex=False)
    saved = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    try:
        proc = ctx.Process(target=strategy_process_main, args=(cfg, writer), daemon=True)
        proc.start()
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
    writer.close()
    try:
        ready = wait([reader, proc.sentinel], timeout=timeout_s)
        if not ready:
            raise EnhanceError(f"strategy process still running after {timeout_s:.0f} s; stopped")
        try:
            msg = reader.recv()
        except EOFError:
            proc.join(CHILD_EXIT_TIMEOUT_S)
            raise EnhanceError(f"strategy process died without a result (exit code {proc.exitcode})")
        proc.join(CHILD_EXIT_TIMEOUT_S)
    finally:
        if proc.is_alive():
            proc.kill()
            proc.join(CHILD_EXIT_TIMEOUT_S)
        reader.close()
    if msg[0] != "ok":
        raise EnhanceError(f"{msg[1]}\n{msg[2]}")
    return msg[1]
