"""The quality comparison's report: per-backend means where every mean of one metric covers the
same scenes (those where the metric could be computed for both the noisy and the enhanced
signal), quality.json and quality.md."""

from __future__ import annotations

import json
import math
import platform
import time
from pathlib import Path

import numpy as np

from .quality_metrics import METRIC_MEANINGS, METRICS

KINDS = ("noisy", "enhanced", "delta")


def row(pair, backend: str, noisy: dict, enhanced: dict) -> dict:
    """One scored scene: noisy and enhanced values and their difference, None where n/a."""
    out = {"scene": pair.name, "description": pair.description, "backend": backend, "status": "ok"}
    for m in METRICS:
        a, b = _round(noisy[m]), _round(enhanced[m])
        out[f"noisy_{m}"] = a
        out[f"enhanced_{m}"] = b
        out[f"delta_{m}"] = _round(b - a) if a is not None and b is not None else None
    return out


def _round(v):
    return None if v is None or not math.isfinite(v) else round(float(v), 4)


def summarise(rows: list[dict]) -> list[dict]:
    """Mean scores per backend over the scenes it enhanced. A scene where a metric is n/a (for
    the noisy or the enhanced signal) is left out of that metric's noisy, enhanced and change
    means alike; ``scenes_<metric>`` says how many each mean covers."""
    out = []
    for backend in dict.fromkeys(r["backend"] for r in rows):
        ok = [r for r in rows if r["backend"] == backend and r["status"] == "ok"]
        if not ok:
            continue
        s = {"backend": backend, "scenes": len(ok)}
        for m in METRICS:
            both = [r for r in ok if r[f"delta_{m}"] is not None]
            s[f"scenes_{m}"] = len(both)
            for k in KINDS:
                vals = [r[f"{k}_{m}"] for r in both]
                s[f"mean_{k}_{m}"] = round(float(np.mean(vals)), 4) if vals else None
        out.append(s)
    return out


def write_reports(out_dir: Path, pairs, runs, rows, device, notes: list[dict]):
    """quality.json and quality.md in ``out_dir``; returns their paths."""
    from whisperjav_enhance import __version__

    out_dir.mkdir(parents=True, exist_ok=True)
    doc = {"tool": f"whisperjav-enhance {__version__} quality check",
           "created_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
           "machine": {"python": platform.python_version(), "platform": platform.platform(),
                       "processor": platform.processor() or platform.machine()},
           "device": device, "metrics": METRIC_MEANINGS,
           "scenes": [{"name": p.name, "description": p.description} for p in pairs],
           "backends": runs, "summary": summarise(rows), "rows": rows,
           "third_party_warnings": notes}
    jpath = out_dir / "quality.json"
    mpath = out_dir / "quality.md"
    _write_text(jpath, json.dumps(doc, indent=2, ensure_ascii=False) + "\n")
    _write_text(mpath, render_markdown(runs, rows, notes))
    return jpath, mpath


def _cell(r: dict, m: str, digits: int, covered: str = "") -> str:
    a, b, d = r[f"noisy_{m}"], r[f"enhanced_{m}"], r[f"delta_{m}"]

    def f(v):
        return "n/a" if v is None else f"{v:.{digits}f}"

    sign = "" if d is None else ("+" if d >= 0 else "")
    return f"{f(a)} → {f(b)} ({sign}{f(d)}){covered}"


def _run_line(run: dict) -> str:
    if run["status"] != "ok":
        return f"- **{run['backend']}**: not run ({run['reason']})"
    w = run["described"].get("weights", {})
    random = " — RANDOM TEST WEIGHTS" if w.get("random_test_weights") else ""
    picked = f" ({run['note']})" if run.get("note") else ""
    return (f"- **{run['backend']}**{picked}: weights {w.get('origin')} "
            f"({w.get('description') or w.get('path')}){random}; {run['enhance_seconds']:.2f} s "
            f"wall for {run['audio_seconds']:.2f} s of audio here, per-scene start-up included "
            f"(not a speed benchmark)")


def render_markdown(runs: list[dict], rows: list[dict], notes: list[dict] | None = None) -> str:
    lines = ["# Objective quality: noisy vs enhanced, against the clean references", ""]
    lines += [_run_line(run) for run in runs]
    lines += ["", "| scene | noise | backend | SI-SDR dB | PESQ-WB | STOI |",
              "|---|---|---|---|---|---|"]
    for r in rows:
        if r["status"] == "ok":
            lines.append(f"| {r['scene']} | {r['description'] or '-'} | {r['backend']} | "
                         f"{_cell(r, 'si_sdr_db', 2)} | {_cell(r, 'pesq_wb', 2)} | "
                         f"{_cell(r, 'stoi', 3)} |")
        elif "scene" in r:
            lines.append(f"| {r['scene']} | | {r['backend']} | failed: {r['reason']} | | |")
    for s in summarise(rows):
        mean = {f"{k}_{m}": s[f"mean_{k}_{m}"] for m in METRICS for k in KINDS}
        cells = []
        for m, digits in zip(METRICS, (2, 2, 3)):
            n = s[f"scenes_{m}"]
            cells.append(_cell(mean, m, digits, f" [{n} of {s['scenes']}]" if n != s["scenes"] else ""))
        lines.append(f"| **mean of {s['scenes']}** | | **{s['backend']}** | " + " | ".join(cells) + " |")
    lines += ["", "Cells read noisy → enhanced (change). SI-SDR is scale-invariant SDR "
              "(zero-mean); PESQ-WB is ITU-T P.862.2 at 16 kHz; STOI is classic STOI (pystoi). "
              "n/a: the metric cannot be computed for that scene (STOI needs 30 non-silent "
              "analysis frames, about 0.4 s of speech; PESQ needs an utterance); such a scene is "
              "left out of that metric's means, noisy, enhanced and change alike ([k of n] says "
              "how many a mean covers)."]
    if notes:
        total = sum(n["count"] for n in notes)
        lines.append(f"{total} third-party warning(s) were recorded while scoring; they are in "
                     "quality.json (`third_party_warnings`).")
    return "\n".join(lines + [""])


def _write_text(path: Path, text: str) -> None:
    """Write through a temporary name so a report under its final name is always whole."""
    tmp = path.with_name(f".{path.name}.partial")
    tmp.write_text(text, encoding="utf-8")
    tmp.replace(path)
