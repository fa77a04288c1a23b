"""Benchmark results on disk: results.json (one object per strategy plus the environment),
results.md (the table, and what isolation costs when the direct runtime ran), memory.png and
throughput.png (matplotlib, Agg), COMMAND.txt.

On a CPU run the memory plot shows process RSS and says so in its title; the table says the run
was on CPU and which weights ran (random test weights are named as such), so a CPU table is never
mistaken for GPU numbers."""

from __future__ import annotations

import sys
from pathlib import Path

from .results import RAN, StrategyResult, as_json, largest, load_results

# Issue 14's bar: the pool keeps at least this share of the direct runtime's speed per worker.
ISOLATION_TARGET = 0.95
DIRECT = "direct-runtime"


def write_results(out: Path, results: list[StrategyResult], meta: dict) -> None:
    out.mkdir(parents=True, exist_ok=True)
    (out / "results.json").write_text(as_json(results, meta))
    (out / "results.md").write_text(markdown_table(results, meta))
    commands = meta.get("commands") or [meta["environment"]["command"]]
    (out / "COMMAND.txt").write_text("\n".join(commands) + "\n")
    write_plots(out, results, meta)


def render(folder: Path) -> None:
    """Rewrite results.md and the plots of ``folder`` from its results.json (after a change to
    the rendering; the measurements and COMMAND.txt are left as they are)."""
    results, meta = load_results(folder)
    (Path(folder) / "results.md").write_text(markdown_table(results, meta))
    write_plots(Path(folder), results, meta)


def fmt(v, digits: int = 1) -> str:
    if v is None:
        return "-"
    if isinstance(v, float):
        return f"{v:,.{digits}f}"
    return str(v)


def fmt_rate(v: float | None) -> str:
    """Audio seconds per second: two significant figures below 10 (CPU rates are small)."""
    if v is None:
        return "-"
    return f"{v:.2g}" if v < 10 else f"{v:,.0f}"


def weights_label(w: dict | None) -> str:
    if w is None or w.get("origin") == "none":
        return "none (backend has no weights)"
    kind = "RANDOM TEST WEIGHTS" if w.get("random_test_weights") else "real weights"
    return f"{kind} ({w.get('origin')}: {w.get('path')})"


def _max_of(d: dict):
    return largest(d.values()) if d else None


def _alloc(r: StrategyResult) -> str:
    v = _max_of(r.peak_allocated_mib)
    return fmt(v, 0) + ("*" if v is not None and not r.allocated_is_peak else "")


def _header(meta: dict) -> list[str]:
    env = meta["environment"]
    lines = [f"# Isolation-strategy benchmark: set `{meta['set']}`, backend `{meta['backend']}`", ""]
    if not str(env["device"]).startswith("cuda"):
        lines += ["**CPU run** (no GPU here): VRAM columns are empty; memory is process RSS. "
                  "These are not GPU numbers.", ""]
    repeat = meta.get("repeat", 1)
    lines += [f"- device: {env['device']} ({env.get('device_name', '?')}), torch {env['torch']}, "
              f"{env['cpu_count']} CPUs",
              f"- backend: {meta['backend']} ({meta['backend_note']}); weights: "
              f"{weights_label(meta['weights'])}",
              f"- scenes: {meta['scenes']} ({meta['audio_seconds']:,.1f} s of audio, seed "
              f"{meta['seed']}); recycle period N = {meta['scenes_per_recycle']}; batch "
              f"{meta['batch_seconds']:g} s; VRAM budget: {fmt(meta['vram_budget_gb'])} GiB"
              + (f"; each strategy run {repeat} times interleaved, the median wall shown"
                 if repeat > 1 else ""),
              *[f"- command: `{c}`" for c in (meta.get("commands") or [env["command"]])], ""]
    return lines


def _row(r: StrategyResult) -> str:
    if r.status != RAN:
        return f"| {r.strategy} | {r.status}: {r.reason} | | | | | | | | | | | |"
    fails = ", ".join(f"{k} {v}" for k, v in sorted(r.failure_reasons.items()))
    rec = ", ".join(f"{k} {v}" for k, v in sorted(r.recycles.items())) or "0"
    walls = (" (" + ", ".join(f"{w:.1f}" for w in r.wall_seconds_runs) + ")"
             if len(r.wall_seconds_runs) > 1 else "")
    return (f"| {r.strategy} | ran | {r.scenes_ok} / {r.scenes_failed}"
            f"{f' ({fails})' if fails else ''} | {fmt(r.wall_seconds)}{walls} | "
            f"{fmt_rate(r.audio_seconds_per_second)} | {fmt(_max_of(r.peak_reserved_mib), 0)} | "
            f"{_alloc(r)} | {fmt(_max_of(r.peak_rss_mib), 0)} | {fmt(r.alloc_retries)} | {rec} | "
            f"{r.workers_started} / {r.workers_at_once} | {fmt(r.startup_wait_seconds)} | "
            f"{fmt(r.recycle_cost_seconds, 2)} |")


def isolation_lines(results: list[StrategyResult]) -> list[str]:
    """What isolation costs: every pool strategy's speed per worker against the direct runtime's
    (issue 14's bar: at least ISOLATION_TARGET)."""
    direct = next((r for r in results if r.strategy == DIRECT and r.status == RAN), None)
    pools = [r for r in results if r.status == RAN and r.strategy != DIRECT
             and r.settings.get("policy") is not None]
    if direct is None or not direct.audio_seconds_per_second or not pools:
        return []
    lines = ["## What isolation costs", "",
             f"`{DIRECT}`: {fmt_rate(direct.audio_seconds_per_second)} audio s/s in one process "
             f"(largest RSS {fmt(_max_of(direct.peak_rss_mib), 0)} MiB; torch imported: "
             f"{direct.settings.get('torch_imported')}).", "",
             "| strategy | workers at once | audio s/s | per worker / direct | bar |",
             "|---|---|---|---|---|"]
    for r in pools:
        ratio = r.audio_seconds_per_second / (r.workers_at_once * direct.audio_seconds_per_second)
        mark = "meets" if ratio >= ISOLATION_TARGET else "below"
        lines.append(f"| {r.strategy} | {r.workers_at_once} | {fmt_rate(r.audio_seconds_per_second)}"
                     f" | {ratio:.2f} | {mark} {ISOLATION_TARGET:.2f} |")
    return lines + [""]


def markdown_table(results: list[StrategyResult], meta: dict) -> str:
    lines = _header(meta) + [
        "| strategy | status | ok / failed | wall s | audio s/s | peak reserved MiB | "
        "peak allocated MiB | peak RSS MiB | alloc retries | recycles | workers started / at "
        "once | start-up wait s | wait per recycle s |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    lines += [_row(r) for r in results]
    lines += [""] + isolation_lines(results)
    lines += ["Peaks are the largest over the strategy's processes (per-process values are in "
              "results.json). Allocated values marked * are the largest seen after a work unit "
              "(the telemetry carried no allocated peak); start-up wait is the time with work "
              "queued and no model ready (model loads, for the in-process loops); wait per "
              "recycle is that wait beyond the first start, per recycled worker. "
              "Strategies, in order: " + "; ".join(
                  f"`{r.strategy}`: {r.description}" for r in results), ""]
    return "\n".join(lines)


def write_plots(out: Path, results: list[StrategyResult], meta: dict) -> None:
    try:
        import matplotlib
    except ImportError:  # the table is the result; plots need the bench extra
        print("bench: matplotlib is not installed; no plots (pip install "
              "'whisperjav-enhance[bench]')", file=sys.stderr)
        return
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ran = [r for r in results if r.status == RAN]
    on_cpu = not str(meta["environment"]["device"]).startswith("cuda")
    _plot_memory(plt, out / "memory.png", ran, on_cpu, meta)
    _plot_throughput(plt, out / "throughput.png", results, on_cpu, meta)


def _plot_memory(plt, path: Path, ran: list[StrategyResult], on_cpu: bool, meta: dict) -> None:
    n = max(1, len(ran))
    cols = 2 if n > 1 else 1
    rows = (n + cols - 1) // cols
    fig, axes = plt.subplots(rows, cols, figsize=(6 * cols, 2.8 * rows), squeeze=False,
                             sharex=True)
    for ax, r in zip(axes.flat, ran):
        xs = [s["scenes_done"] for s in r.series]
        if on_cpu:
            ax.plot(xs, [s["rss_mib"] for s in r.series], ".-", lw=1, ms=3, label="RSS")
        else:
            ax.plot(xs, [s["reserved_mib"] for s in r.series], ".-", lw=1, ms=3, label="reserved")
            ax.plot(xs, [s["allocated_mib"] for s in r.series], ".--", lw=1, ms=3,
                    label="allocated")
        ax.set_title(r.strategy, fontsize=9)
        ax.set_ylabel("MiB")
        ax.set_xlabel("scenes finished", fontsize=8)
        ax.tick_params(labelbottom=True)
        ax.legend(fontsize=7, loc="upper left")
        ax.grid(alpha=0.3)
    for ax in list(axes.flat)[len(ran):]:
        ax.axis("off")
    what = ("process RSS over scenes (CPU run: no VRAM, RSS shown instead)" if on_cpu
            else "VRAM reserved and allocated over scenes")
    fig.suptitle(f"{what}; set {meta['set']}, backend {meta['backend']}", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _plot_throughput(plt, path: Path, results: list[StrategyResult], on_cpu: bool,
                     meta: dict) -> None:
    fig, ax = plt.subplots(figsize=(8, 0.45 * len(results) + 1.5))
    names = [r.strategy for r in results]
    vals = [r.audio_seconds_per_second or 0.0 for r in results]
    ax.barh(names, vals, color=["C0" if r.status == RAN else "0.8" for r in results])
    for i, r in enumerate(results):
        label = fmt_rate(vals[i]) if r.status == RAN else r.status
        ax.text(vals[i], i, f" {label}", va="center", fontsize=8)
    ax.invert_yaxis()
    ax.set_xlabel("audio seconds per second (end to end)")
    where = "CPU run" if on_cpu else meta["environment"].get("device_name", "GPU")
    w = meta.get("weights") or {}
    random = ", RANDOM weights" if w.get("random_test_weights") else ""
    ax.set_title(f"Throughput; set {meta['set']}, backend {meta['backend']} ({where}{random})",
                 fontsize=10)
    ax.grid(axis="x", alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
