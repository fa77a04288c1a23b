"""Objective quality check: SI-SDR, wide-band PESQ and STOI of noisy versus enhanced scenes,
measured against clean references, per backend, written as a table (markdown) and JSON.

Each noisy scene in one folder is paired with the clean reference of the same file name in
another (``examples/scenes`` and ``examples/clean``, made by ``examples/make_examples.py``). Every
backend that can run here enhances every scene in this process (``whisperjav_enhance.engine``,
the code the workers run), and its output is scored at the reference's rate. A backend that
cannot run (package missing, no weights) is listed with its reason instead of failing the check.
``auto`` is the backend ``whisperjav-enhance enhance`` would pick here.

    whisperjav-enhance bench --quality --backend deepfilternet -o benchmarks/results/quality
"""

from __future__ import annotations

import argparse
import json
import sys
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

import numpy as np

from whisperjav_enhance.audio import read_audio, resample
from whisperjav_enhance.errors import (BackendUnavailable, ConfigError, DeviceError, EnhanceError,
                                       WeightsError)
from whisperjav_enhance.events import Log

# The metrics and the summary are part of this module's surface (one import for users and tests).
from .quality_metrics import METRICS, Notes, measure, pesq_wb, si_sdr, stoi  # noqa: F401
from .quality_report import row, summarise, write_reports  # noqa: F401

# Backends scored when none are named: the real enhancers (passthrough would only repeat "noisy").
DEFAULT_BACKENDS = ("mossformer2", "zipenhancer", "deepfilternet")
METADATA_FILE = "examples.json"  # optional scene descriptions beside the noisy folder


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
    pairs = [ScenePair(p.name, p, clean_dir / p.name, meta.get(p.name, ""))
             for p in sorted(noisy_dir.iterdir())
             if p.suffix.lower() in (".wav", ".flac") and (clean_dir / p.name).is_file()]
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


def resolve_names(backends: Sequence[str] | None) -> list[tuple[str, str, str]]:
    """(as given, canonical name, note) per requested backend; ``auto`` is the product's own
    choice."""
    from whisperjav_enhance.backends import parse_backend_spec, select_backend

    out = []
    for spec in backends or DEFAULT_BACKENDS:
        name = parse_backend_spec(spec)
        if name == "auto":
            backend, note = select_backend("auto")
            out.append((spec, backend.name, note))
        else:
            out.append((spec, name, ""))
    return out


def run_quality(examples_dir_noisy: str | Path, clean_dir: str | Path,
                backends: Sequence[str] | None = None, out_dir: str | Path | None = None,
                device: str = "cpu", weights: dict[str, str] | None = None,
                backend_options: dict[str, dict] | None = None,
                on_event: Callable[[object], None] | None = None) -> list[dict]:
    """Enhance every paired scene with each backend and score noisy and enhanced audio.

    ``backends``: names (default :data:`DEFAULT_BACKENDS`; ``auto`` allowed); ``weights`` and
    ``backend_options`` map a backend name to its ``--weights`` path and constructor options.
    Returns one row per (scene, backend) with the noisy and enhanced scores and their
    differences (None where n/a), plus one row per backend that could not run (``status``
    "unavailable" and its ``reason``). With ``out_dir``, writes quality.json and quality.md.
    """
    emit = on_event or (lambda e: None)
    names = resolve_names(backends)
    pairs = find_pairs(examples_dir_noisy, clean_dir)
    notes = Notes()
    clean = {p.name: read_audio(p.clean) for p in pairs}
    baseline = {}
    for p in pairs:
        ref, info = clean[p.name]
        noisy, _ = read_audio(p.noisy, info.sample_rate)
        baseline[p.name] = measure(ref, _fit(noisy, ref.size), info.sample_rate, notes)
    rows, runs = [], []
    weights, backend_options = weights or {}, backend_options or {}
    for spec, name, note in names:
        emit(Log(f"quality: {name} on {len(pairs)} scenes" + (f" ({note})" if note else "")))
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            run, scored = _score_backend(name, pairs, clean, baseline, device, notes,
                                         weights.get(name, weights.get(spec)),
                                         backend_options.get(name, backend_options.get(spec, {})))
        notes.record(caught)
        run["note"] = note
        runs.append(run)
        rows.extend(scored)
        if run["status"] != "ok":
            emit(Log(f"quality: {name} skipped: {run['reason']}", "warning"))
    if len(notes):
        emit(Log(f"quality: {len(notes)} third-party warning(s) recorded in the report"))
    if out_dir is not None:
        write_reports(Path(out_dir), pairs, runs, rows, device, notes.as_list())
    return rows


def _score_backend(name, pairs, clean, baseline, device, notes, weights_path, options):
    """Run one backend over the scenes; returns its run record and its rows."""
    from whisperjav_enhance.backends import create_backend
    from whisperjav_enhance.engine import Engine

    try:
        backend = create_backend(name, weights_path, **options)
        backend.load(_device(backend, device))
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
            rows.append(row(p, name, baseline[p.name],
                            measure(ref, enhanced, info.sample_rate, notes)))
        run = {"backend": name, "status": "ok", "described": backend.describe(),
               "audio_seconds": round(audio_s, 3), "enhance_seconds": round(enhance_s, 3),
               "real_time_factor": round(enhance_s / audio_s, 4) if audio_s else None}
    finally:
        backend.close()
    return run, rows


def _device(backend, device: str):
    """A torch.device for backends that use torch; the plain string otherwise (no torch import)."""
    if not getattr(backend, "uses_torch", True):
        return device
    import torch

    return torch.device(device)


def _fit(x: np.ndarray, n: int) -> np.ndarray:
    """Exactly ``n`` samples: resampling round trips may differ by one."""
    if x.size >= n:
        return x[:n]
    return np.pad(x, (0, n - x.size))


# -- command line -------------------------------------------------------------------------------------
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


def build_parser(prog: str) -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog=prog,
                                 description="SI-SDR, PESQ-WB and STOI of noisy vs enhanced scenes "
                                             "against clean references, per backend.")
    ap.add_argument("--noisy", default="examples/scenes",
                    help="folder of noisy scenes (default: examples/scenes)")
    ap.add_argument("--clean", default="examples/clean",
                    help="folder of clean references (default: examples/clean)")
    ap.add_argument("--backend", action="append", dest="backends",
                    help="backend to score, repeatable; auto = the one `whisperjav-enhance "
                         "enhance` would pick here (DeepFilterNet3 on a fresh CPU machine) "
                         f"(default: {', '.join(DEFAULT_BACKENDS)})")
    ap.add_argument("--weights", action="append", default=[], metavar="BACKEND=PATH",
                    help="weights for one backend, repeatable (default: search caches)")
    ap.add_argument("--option", action="append", default=[], type=_parse_option,
                    metavar="NAME=VALUE",
                    help="backend option given to every scored backend, repeatable (default: none)")
    ap.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N (default: cpu)")
    ap.add_argument("-o", "--out", default="benchmarks/results/quality",
                    help="folder for quality.json and quality.md "
                         "(default: benchmarks/results/quality)")
    return ap


def main(argv=None, prog: str = "whisperjav-enhance bench --quality") -> int:
    args = build_parser(prog).parse_args(argv)
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
