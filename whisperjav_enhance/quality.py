"""Objective quality check: SI-SDR, wide-band PESQ and STOI of noisy versus enhanced scenes,
measured against clean references, per backend, written as a table (markdown) and JSON.

Each noisy scene in one folder is paired with the clean reference of the same file name in
another (``examples/scenes`` and ``examples/clean``, made by ``examples/make_examples.py``). Every
backend that can run here enhances every scene in this process (:class:`engine.Engine`, the code
the workers run), and its output is scored at the reference's rate; PESQ-WB is defined at 16 kHz,
so both signals are resampled to it for that score (soxr). A backend that cannot run (package
missing, no weights) is listed with its reason instead of failing the check.

    python -m whisperjav_enhance.quality --backend deepfilternet -o benchmarks/results/quality

``whisperjav-enhance bench --quality`` calls :func:`run_quality`.
"""

from __future__ import annotations

import argparse
import json
import math
import platform
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

import numpy as np

from .audio import read_audio, resample
from .errors import BackendUnavailable, ConfigError, DeviceError, EnhanceError, WeightsError
from .events import Log

PESQ_RATE_HZ = 16_000           # wide-band PESQ (ITU-T P.862.2) is defined at 16 kHz
SI_SDR_EPS = 1e-12              # keeps SI-SDR finite for silent references or perfect estimates
METRICS = ("si_sdr_db", "pesq_wb", "stoi")
# Backends scored when none are named: the real enhancers (passthrough would only repeat "noisy").
DEFAULT_BACKENDS = ("mossformer2", "zipenhancer", "deepfilternet")
METADATA_FILE = "examples.json"  # optional scene descriptions beside the noisy folder


# -- metrics ------------------------------------------------------------------------------------
def si_sdr(reference: np.ndarray, estimate: np.ndarray) -> float:
    """Scale-invariant signal-to-distortion ratio in dB (Le Roux et al., 2019), zero-mean.

    The estimate is projected on the reference; the ratio of the projection's energy to the
    residual's is the score, so a louder or quieter but otherwise perfect estimate scores high.
    """
    ref, est = _pair(reference, estimate)
    ref = ref - ref.mean()
    est = est - est.mean()
    alpha = np.dot(est, ref) / (np.dot(ref, ref) + SI_SDR_EPS)
    target = alpha * ref
    residual = est - target
    return float(10 * np.log10((np.dot(target, target) + SI_SDR_EPS)
                               / (np.dot(residual, residual) + SI_SDR_EPS)))


def pesq_wb(reference: np.ndarray, estimate: np.ndarray, sample_rate: int) -> float | None:
    """Wide-band PESQ (MOS-LQO, about 1.0-4.64) at 16 kHz; None when PESQ finds no utterance."""
    from pesq import NoUtterancesError, PesqError, pesq

    ref, est = _pair(reference, estimate)
    ref16 = resample(ref.astype(np.float32), sample_rate, PESQ_RATE_HZ).astype(np.float64)
    est16 = resample(est.astype(np.float32), sample_rate, PESQ_RATE_HZ).astype(np.float64)
    try:
        return float(pesq(PESQ_RATE_HZ, ref16, est16, "wb"))
    except (NoUtterancesError, PesqError):
        return None


def stoi(reference: np.ndarray, estimate: np.ndarray, sample_rate: int) -> float:
    """Short-time objective intelligibility (0-1; Taal et al., 2011) via pystoi."""
    from pystoi import stoi as _stoi

    ref, est = _pair(reference, estimate)
    return float(_stoi(ref, est, sample_rate, extended=False))


def measure(reference: np.ndarray, estimate: np.ndarray, sample_rate: int) -> dict:
    """All three scores of ``estimate`` against ``reference`` (same rate and length)."""
    return {"si_sdr_db": si_sdr(reference, estimate),
            "pesq_wb": pesq_wb(reference, estimate, sample_rate),
            "stoi": stoi(reference, estimate, sample_rate)}


def _pair(reference, estimate) -> tuple[np.ndarray, np.ndarray]:
    ref = np.asarray(reference, dtype=np.float64)
    est = np.asarray(estimate, dtype=np.float64)
    if ref.ndim != 1 or est.shape != ref.shape:
        raise ValueError(f"reference and estimate must be 1-D and equally long, not "
                         f"{ref.shape} and {est.shape}")
    return ref, est


# -- scenes ---------------------------------------------------------------------------------------
@dataclass(frozen=True)
class ScenePair:
    """One noisy scene and its clean reference."""

    name: str          # file name (the same in both folders)
    noisy: Path
    clean: Path
    description: str   # e.g. "white noise, 0 dB SNR" (from examples.json), or ""


def find_pairs(noisy_dir: str | Path, clean_dir: str | Path) -> list[ScenePair]:
    """Noisy scenes with a clean reference of the same name, in name order."""
    noisy_dir, clean_dir = Path(noisy_dir), Path(clean_dir)
    for d in (noisy_dir, clean_dir):
        if not d.is_dir():
            raise ConfigError(f"quality check: {d} is not a folder")
    meta = _scene_metadata(noisy_dir)
    pairs = []
    for p in sorted(noisy_dir.iterdir()):
        if p.suffix.lower() in (".wav", ".flac") and (clean_dir / p.name).is_file():
            pairs.append(ScenePair(p.name, p, clean_dir / p.name, meta.get(p.name, "")))
    if not pairs:
        raise ConfigError(f"quality check: no scene in {noisy_dir} has a clean reference of the "
                          f"same name in {clean_dir}")
    return pairs


def _scene_metadata(noisy_dir: Path) -> dict[str, str]:
    for candidate in (noisy_dir / METADATA_FILE, noisy_dir.parent / METADATA_FILE):
        if candidate.is_file():
            try:
                scenes = json.loads(candidate.read_text(encoding="utf-8"))["scenes"]
                return {s["name"]: f"{s['noise']} noise, {s['snr_db']:g} dB SNR" for s in scenes}
            except (ValueError, KeyError, TypeError):
                return {}
    return {}


# -- the check ------------------------------------------------------------------------------------
def run_quality(examples_dir_noisy: str | Path, clean_dir: str | Path,
                backends: Sequence[str] | None = None, out_dir: str | Path | None = None,
                device: str = "cpu", weights: dict[str, str] | None = None,
                backend_options: dict[str, dict] | None = None,
                on_event: Callable[[object], None] | None = None) -> list[dict]:
    """Enhance every paired scene with each backend and score noisy and enhanced audio.

    ``backends``: names (default :data:`DEFAULT_BACKENDS`); ``weights`` and ``backend_options``
    map a backend name to its ``--weights`` path and constructor options. Returns one row per
    (scene, backend) with the noisy and enhanced scores and their differences, plus one row per
    backend that could not run (``status`` "unavailable" and its ``reason``). With ``out_dir``,
    writes ``quality.json`` and ``quality.md`` there.
    """
    from .backends import parse_backend_spec

    emit = on_event or (lambda e: None)
    names = [parse_backend_spec(b) for b in (backends or DEFAULT_BACKENDS)]
    if "auto" in names:
        raise ConfigError("quality check: name the backends to score; 'auto' is not one")
    pairs = find_pairs(examples_dir_noisy, clean_dir)
    clean = {p.name: read_audio(p.clean) for p in pairs}
    baseline = {}
    for p in pairs:
        ref, info = clean[p.name]
        noisy, _ = read_audio(p.noisy, info.sample_rate)
        baseline[p.name] = measure(ref, _fit(noisy, ref.size), info.sample_rate)
    rows, runs = [], []
    for name in names:
        emit(Log(f"quality: {name} on {len(pairs)} scenes"))
        run, scored = _score_backend(name, pairs, clean, baseline, device,
                                     (weights or {}).get(name), (backend_options or {}).get(name, {}))
        runs.append(run)
        rows.extend(scored)
        if run["status"] != "ok":
            emit(Log(f"quality: {name} skipped: {run['reason']}", "warning"))
    if out_dir is not None:
        write_reports(Path(out_dir), pairs, runs, rows, device)
    return rows


def _score_backend(name, pairs, clean, baseline, device, weights_path, options):
    """Run one backend over the scenes; returns its run record and its rows."""
    import torch

    from .backends import create_backend
    from .engine import Engine

    try:
        backend = create_backend(name, weights_path, **options)
        backend.load(torch.device(device))
    except (BackendUnavailable, WeightsError, ConfigError, DeviceError) as exc:
        reason = str(exc).splitlines()[0]
        return ({"backend": name, "status": "unavailable", "reason": reason},
                [{"backend": name, "status": "unavailable", "reason": reason}])
    rows, audio_s, enhance_s = [], 0.0, 0.0
    try:
        for p in pairs:
            ref, info = clean[p.name]
            noisy, _ = read_audio(p.noisy, backend.sample_rate)
            t0 = time.perf_counter()
            try:
                (_, enhanced), = Engine(backend).run([noisy])
            except EnhanceError as exc:
                rows.append({"scene": p.name, "backend": name, "status": "failed",
                             "reason": getattr(exc, "reason", type(exc).__name__),
                             "message": str(exc).splitlines()[0]})
                continue
            enhance_s += time.perf_counter() - t0
            audio_s += noisy.size / backend.sample_rate
            enhanced = _fit(resample(enhanced, backend.sample_rate, info.sample_rate), ref.size)
            rows.append(_row(p, name, baseline[p.name], measure(ref, enhanced, info.sample_rate)))
        run = {"backend": name, "status": "ok", "described": backend.describe(),
               "audio_seconds": round(audio_s, 3), "enhance_seconds": round(enhance_s, 3),
               "real_time_factor": round(enhance_s / audio_s, 4) if audio_s else None}
    finally:
        backend.close()
    return run, rows


def _row(pair: ScenePair, backend: str, noisy: dict, enhanced: dict) -> dict:
    row = {"scene": pair.name, "description": pair.description, "backend": backend, "status": "ok"}
    for m in METRICS:
        a, b = noisy[m], enhanced[m]
        row[f"noisy_{m}"] = _round(a)
        row[f"enhanced_{m}"] = _round(b)
        row[f"delta_{m}"] = _round(b - a) if a is not None and b is not None else None
    return row


def _fit(x: np.ndarray, n: int) -> np.ndarray:
    """Exactly ``n`` samples: resampling round trips may differ by one."""
    if x.size >= n:
        return x[:n]
    return np.pad(x, (0, n - x.size))


def _round(v):
    return None if v is None or not math.isfinite(v) else round(float(v), 4)


# -- reports ----------------------------------------------------------------------------------------
def summarise(rows: list[dict]) -> list[dict]:
    """Mean scores per backend over the scenes it enhanced."""
    out = []
    for backend in dict.fromkeys(r["backend"] for r in rows):
        ok = [r for r in rows if r["backend"] == backend and r["status"] == "ok"]
        if not ok:
            continue
        s = {"backend": backend, "scenes": len(ok)}
        for key in (f"{k}_{m}" for m in METRICS for k in ("noisy", "enhanced", "delta")):
            vals = [r[key] for r in ok if r[key] is not None]
            s[f"mean_{key}"] = round(float(np.mean(vals)), 4) if vals else None
        out.append(s)
    return out


def write_reports(out_dir: Path, pairs, runs, rows, device) -> tuple[Path, Path]:
    from . import __version__

    out_dir.mkdir(parents=True, exist_ok=True)
    doc = {"tool": f"whisperjav-enhance {__version__} quality check",
           "created_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
           "machine": {"python": platform.python_version(), "platform": platform.platform(),
                       "processor": platform.processor() or platform.machine()},
           "device": device, "metrics": {
               "si_sdr_db": "scale-invariant SDR in dB, zero-mean (higher is better)",
               "pesq_wb": "wide-band PESQ, MOS-LQO 1.0-4.64, both signals resampled to 16 kHz",
               "stoi": "short-time objective intelligibility, 0-1 (pystoi, classic STOI)"},
           "scenes": [{"name": p.name, "description": p.description} for p in pairs],
           "backends": runs, "summary": summarise(rows), "rows": rows}
    jpath = out_dir / "quality.json"
    mpath = out_dir / "quality.md"
    _write_text(jpath, json.dumps(doc, indent=2, ensure_ascii=False) + "\n")
    _write_text(mpath, render_markdown(runs, rows))
    return jpath, mpath


def render_markdown(runs: list[dict], rows: list[dict]) -> str:
    def cell(r, m, digits):
        a, b, d = r[f"noisy_{m}"], r[f"enhanced_{m}"], r[f"delta_{m}"]
        f = lambda v: "n/a" if v is None else f"{v:.{digits}f}"
        sign = "" if d is None else ("+" if d >= 0 else "")
        return f"{f(a)} → {f(b)} ({sign}{f(d)})"

    lines = ["# Objective quality: noisy vs enhanced, against the clean references", ""]
    for run in runs:
        if run["status"] == "ok":
            w = run["described"].get("weights", {})
            random = " — RANDOM TEST WEIGHTS" if w.get("random_test_weights") else ""
            lines.append(f"- **{run['backend']}**: weights {w.get('origin')} "
                         f"({w.get('description') or w.get('path')}){random}; "
                         f"{run['enhance_seconds']:.2f} s wall for {run['audio_seconds']:.2f} s of "
                         f"audio here, per-scene start-up included (not a speed benchmark)")
        else:
            lines.append(f"- **{run['backend']}**: not run ({run['reason']})")
    lines += ["", "| scene | noise | backend | SI-SDR dB | PESQ-WB | STOI |", "|---|---|---|---|---|---|"]
    for r in rows:
        if r["status"] == "ok":
            lines.append(f"| {r['scene']} | {r['description'] or '-'} | {r['backend']} | "
                         f"{cell(r, 'si_sdr_db', 2)} | {cell(r, 'pesq_wb', 2)} | {cell(r, 'stoi', 3)} |")
        elif "scene" in r:
            lines.append(f"| {r['scene']} | | {r['backend']} | failed: {r['reason']} | | |")
    for s in summarise(rows):
        mean = {f"{k}_{m}": s[f"mean_{k}_{m}"] for m in METRICS for k in ("noisy", "enhanced", "delta")}
        lines.append(f"| **mean of {s['scenes']}** | | **{s['backend']}** | {cell(mean, 'si_sdr_db', 2)} | "
                     f"{cell(mean, 'pesq_wb', 2)} | {cell(mean, 'stoi', 3)} |")
    lines += ["", "Cells read noisy → enhanced (change). SI-SDR is scale-invariant SDR "
              "(zero-mean); PESQ-WB is ITU-T P.862.2 at 16 kHz; STOI is classic STOI (pystoi).", ""]
    return "\n".join(lines)


def _write_text(path: Path, text: str) -> None:
    """Write through a temporary name so a report under its final name is always whole."""
    tmp = path.with_name(f".{path.name}.partial")
    tmp.write_text(text, encoding="utf-8")
    tmp.replace(path)


# -- entry point ------------------------------------------------------------------------------------
def _parse_option(text: str) -> tuple[str, object]:
    key, sep, value = text.partition("=")
    if not sep or not key:
        raise argparse.ArgumentTypeError(f"expected NAME=VALUE, not {text!r}")
    low = value.strip().lower()
    if low in ("true", "false"):
        return key.strip(), low == "true"
    try:
        return key.strip(), float(value)
    except ValueError:
        return key.strip(), value


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m whisperjav_enhance.quality",
                                 description="SI-SDR, PESQ-WB and STOI of noisy vs enhanced scenes "
                                             "against clean references, per backend.")
    ap.add_argument("--noisy", default="examples/scenes", help="folder of noisy scenes")
    ap.add_argument("--clean", default="examples/clean", help="folder of clean references")
    ap.add_argument("--backend", action="append", dest="backends",
                    help=f"backend to score (repeatable; default: {', '.join(DEFAULT_BACKENDS)})")
    ap.add_argument("--weights", action="append", default=[], metavar="BACKEND=PATH",
                    help="weights for one backend (repeatable)")
    ap.add_argument("--option", action="append", default=[], type=_parse_option,
                    metavar="NAME=VALUE", help="backend option, given to every scored backend")
    ap.add_argument("--device", default="cpu", help="cpu (default), cuda or cuda:N")
    ap.add_argument("-o", "--out", default="benchmarks/results/quality",
                    help="folder for quality.json and quality.md")
    args = ap.parse_args(argv)
    weights = dict(w.split("=", 1) for w in args.weights if "=" in w)
    names = args.backends or list(DEFAULT_BACKENDS)
    options = {n: dict(args.option) for n in names}
    try:
        rows = run_quality(args.noisy, args.clean, names, args.out, args.device, weights, options,
                           on_event=lambda e: print(e.message, file=sys.stderr))
    except EnhanceError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(Path(args.out, "quality.md").read_text(encoding="utf-8"))
    return 0 if any(r["status"] == "ok" for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
