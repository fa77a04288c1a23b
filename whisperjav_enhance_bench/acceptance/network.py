"""The network checks of the GPU acceptance, each run in a fresh spawned process:

- agreement: the backend on the device against the same backend on the CPU, same weights, same
  input, TF32 off (what ``pytest -m gpu`` checks per backend), and on CUDA one forward's peak
  against the backend's own memory model (``vram_bytes``), which the engine sizes batches from;
- scaling: peak memory against scene length at a fixed batch, and windows per forward
  (whisperjav_enhance_bench.scaling).

The functions named ``*_in_child`` run in the child and return plain dicts; the ``*_section``
functions run in the acceptance's process and turn them into a Section with its criteria.
"""

from __future__ import annotations

from .. import scaling
from ..spawn import call_in_child
from .criteria import Criterion, Section, judged

MIB = 2 ** 20
# assert_close-style tolerances: |device - cpu| <= atol + RTOL |cpu| (ZipEnhancer's atol scales
# with the output's peak: its outputs are not normalised).
RTOL = 1e-3
ATOL = {"mossformer2": 1e-4, "zipenhancer": 1e-4}
ATOL_RELATIVE_TO_PEAK = {"zipenhancer": True}


def _backend(name: str, weights: str | None, options: dict, device: str):
    import torch

    from whisperjav_enhance.backends import backend_class

    b = backend_class(name).resolve(weights, **options)
    b.load(torch.device(device))
    return b


def _input(backend, windows: int, seconds: float):
    import numpy as np
    import torch

    from ..scenesets import synthesize

    n = int(round(seconds * backend.sample_rate))
    return torch.from_numpy(np.stack([synthesize(i, n, seed=7, sample_rate=backend.sample_rate)
                                      for i in range(windows)]))


def agreement_in_child(backend: str, weights: str | None, device: str, windows: int,
                       seconds: float, options: dict, memory_batch: int) -> dict:
    import torch

    cpu = _backend(backend, weights, options, "cpu")
    dev = _backend(backend, weights, options, device)
    saved = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False
    try:
        x = _input(cpu, windows, seconds)
        with torch.inference_mode():
            ref = cpu.enhance_windows(x)
            got = dev.enhance_windows(x.to(dev.device)).cpu()
        atol = ATOL[backend] * (float(ref.abs().max()) if ATOL_RELATIVE_TO_PEAK.get(backend) else 1.0)
        excess = (got - ref).abs() - (atol + RTOL * ref.abs())
        out = {"windows": windows, "window_s": seconds, "max_abs_diff": float((got - ref).abs().max()),
               "max_abs_cpu": float(ref.abs().max()), "worst_excess": float(excess.max()),
               "ok": bool((excess <= 0).all()), "finite": bool(torch.isfinite(got).all()),
               "weights": dev.weights.as_dict()}
        if dev.device.type == "cuda":
            out["memory_model"] = _memory_model(dev, memory_batch)
    finally:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = saved
        cpu.close()
        dev.close()
    return out


def _memory_model(backend, batch: int) -> dict:
    """One forward of ``batch`` default windows: its peak above the weights against the
    backend's estimate."""
    import torch

    window = int(round(backend.window_seconds * backend.sample_rate))
    xb = 0.1 * torch.randn(batch, window, device=backend.device)
    torch.cuda.synchronize()
    base = torch.cuda.memory_allocated()
    torch.cuda.reset_peak_memory_stats()
    with torch.inference_mode():
        backend.enhance_windows(xb)
    torch.cuda.synchronize()
    peak = torch.cuda.max_memory_allocated() - base
    model = backend.vram_bytes(batch, window)
    return {"batch": batch, "window_s": backend.window_seconds, "peak_mib": peak / MIB,
            "model_mib": model / MIB, "ok": bool(0 < peak <= model)}


def scaling_in_child(backend: str, weights: str | None, device: str, options: dict, lengths,
                     batch: int, windows: int, batches) -> dict:
    import torch

    b = _backend(backend, weights, options, device)
    try:
        if b.device.type == "cuda":   # as a worker runs it (engine_scaling.py does the same)
            torch.backends.cuda.matmul.allow_tf32 = True
            torch.backends.cudnn.allow_tf32 = True
        return {"a": scaling.memory_vs_length(b, b.device, lengths, batch),
                "b": scaling.batch_speed(b, b.device, windows, tuple(batches)),
                "weights": b.weights.as_dict()}
    finally:
        b.close()


def agreement_section(plan, backend: str, weights: str | None, timeout_s: float) -> Section:
    windows, seconds = plan.agreement[backend]
    data = call_in_child(__name__, "agreement_in_child", {
        "backend": backend, "weights": weights, "device": plan.device, "windows": windows,
        "seconds": seconds, "options": plan.windows.get(backend, {}),
        "memory_batch": plan.memory_model_batch}, timeout_s)
    smoke = plan.mode == "smoke"
    passed, note = judged(data["ok"] and data["finite"], smoke,
                          "" if data["finite"] else "non-finite output on the device")
    crit = [Criterion(f"agree-{backend}", f"max |diff| {data['max_abs_diff']:.2e} (max |cpu| "
                      f"{data['max_abs_cpu']:.2f})", passed, note)]
    mm = data.get("memory_model")
    if mm is None:
        crit.append(Criterion(f"model-{backend}", "-", None, "needs CUDA (device peaks)"))
    else:
        passed, note = judged(mm["ok"], smoke)
        crit.append(Criterion(f"model-{backend}", f"{mm['peak_mib']:,.0f} MiB <= "
                              f"{mm['model_mib']:,.0f} MiB (batch {mm['batch']} x "
                              f"{mm['window_s']:g} s)", passed, note))
    return Section(f"agreement-{backend}", data=data, criteria=crit)


def scaling_section(plan, backend: str, weights: str | None, timeout_s: float) -> Section:
    data = call_in_child(__name__, "scaling_in_child", {
        "backend": backend, "weights": weights, "device": plan.device,
        "options": plan.windows.get(backend, {}), "lengths": plan.scaling_lengths[backend],
        "batch": plan.scaling_batch, "windows": plan.speed_windows,
        "batches": plan.speed_batches}, timeout_s)
    smoke = plan.mode == "smoke"
    spread = data["a"]["peak_spread"]
    lengths = ", ".join(f"{r['scene_seconds']:g}" for r in data["a"]["rows"])
    if spread is None:
        crit = [Criterion(f"flat-{backend}", f"{lengths} s: no device peaks", None,
                          "needs CUDA (device peaks)")]
    else:
        short = [r["scene_seconds"] for r in data["a"]["rows"] if r["windows"] < data["a"]["batch"]]
        passed, note = judged(spread <= scaling.MEMORY_TOLERANCE, smoke,
                              f"{short} s did not fill a batch of {data['a']['batch']}" if short else "")
        peaks = ", ".join(f"{r['peak_allocated_mib']:,.0f}" for r in data["a"]["rows"])
        crit = [Criterion(f"flat-{backend}", f"spread {spread:.1%} (peaks {peaks} MiB at "
                          f"{lengths} s)", passed, note)]
    if backend == "mossformer2":
        b = data["b"]
        passed, note = judged(b["speedup"] >= scaling.SPEEDUP_TARGET, smoke)
        rates = " vs ".join(f"{r['audio_s_per_s']:,.1f}" for r in b["rows"])
        crit.append(Criterion("batch-mossformer2", f"{b['speedup']:.1f}x ({rates} audio s/s)",
                              passed, note))
    return Section(f"scaling-{backend}", data=data, criteria=crit)
