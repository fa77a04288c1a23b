"""The GPU acceptance's three plots (matplotlib, Agg). Every title says where the numbers came
from and that the weights were random."""

from __future__ import annotations

from pathlib import Path

from ..results import RAN
from .criteria import Section


def _empty(plt, path: Path, title: str, why: str) -> None:
    fig, ax = plt.subplots(figsize=(6, 2))
    ax.axis("off")
    ax.text(0.5, 0.5, why, ha="center", va="center", fontsize=9)
    ax.set_title(title, fontsize=10)
    fig.savefig(path, dpi=100)
    plt.close(fig)


def scaling_plot(plt, path: Path, sections: list[Section], where: str) -> None:
    """Peak allocated device memory against scene length, one line per backend."""
    rows = [(s.name.split("-", 1)[1], s.data["a"]["rows"]) for s in sections
            if s.name.startswith("scaling-") and s.status == RAN]
    peaks = [(b, r) for b, r in rows if all(x["peak_allocated_mib"] is not None for x in r)]
    title = f"Peak device memory vs scene length ({where}, random weights)"
    if not peaks:
        _empty(plt, path, title, "no device peaks (CPU run or sections skipped)")
        return
    fig, ax = plt.subplots(figsize=(7, 3.5))
    for backend, r in peaks:
        ax.plot([x["scene_seconds"] for x in r], [x["peak_allocated_mib"] for x in r], "o-",
                label=backend)
    ax.set_xlabel("scene length (s)")
    ax.set_ylabel("peak allocated MiB")
    ax.set_ylim(bottom=0)
    ax.legend()
    ax.grid(alpha=0.3)
    ax.set_title(title, fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def film_plot(plt, path: Path, sections: list[Section], where: str) -> None:
    """Audio seconds per second of every film section (grey: did not run)."""
    film = [s for s in sections if s.name.startswith("film-") and "result" in s.data]
    title = f"Film set: throughput per strategy ({where}, random weights)"
    if not film:
        _empty(plt, path, title, "no film section ran")
        return
    fig, ax = plt.subplots(figsize=(8, 0.5 * len(film) + 1.5))
    names = [f"{s.name} ({s.data['backend']}, {s.data['scenes']} scenes)" for s in film]
    vals = [s.data["result"]["audio_seconds_per_second"] or 0.0 for s in film]
    ax.barh(names, vals, color=["C0" if s.status == RAN else "0.8" for s in film])
    for i, s in enumerate(film):
        label = f"{vals[i]:,.0f}" if s.status == RAN else s.status
        ax.text(vals[i], i, f" {label}", va="center", fontsize=8)
    ax.invert_yaxis()
    ax.set_xlabel("audio seconds per second (end to end, start-up included)")
    ax.grid(axis="x", alpha=0.3)
    ax.set_title(title, fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def workers_plot(plt, path: Path, sections: list[Section], where: str) -> None:
    """Each pool worker's peak device memory: the driver's figure beside the allocator's."""
    rows = [w for s in sections if s.name.startswith("film-") for w in s.data.get("workers", [])
            if w["driver_mib"] is not None or w["allocator_reserved_mib"] is not None]
    title = f"Device memory per worker: driver vs allocator ({where})"
    if not rows:
        _empty(plt, path, title, "no device figures (CPU run, or nvidia-smi unavailable)")
        return
    fig, ax = plt.subplots(figsize=(9, 0.35 * len(rows) + 1.5))
    labels = [f"{w['strategy']} w{w['worker']}" for w in rows]
    ys = range(len(rows))
    ax.barh([y - 0.2 for y in ys], [w["driver_mib"] or 0 for w in rows], height=0.4,
            label="driver (nvidia-smi)")
    ax.barh([y + 0.2 for y in ys], [w["allocator_reserved_mib"] or 0 for w in rows], height=0.4,
            label="allocator reserved")
    ax.set_yticks(list(ys))
    ax.set_yticklabels(labels, fontsize=7)
    ax.invert_yaxis()
    ax.set_xlabel("peak MiB")
    ax.legend(fontsize=8)
    ax.grid(axis="x", alpha=0.3)
    ax.set_title(title, fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
