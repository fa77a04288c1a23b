"""The GPU acceptance's results folder: results.json (everything), results.md (the pass/fail
table, then every section), COMMAND.txt, and three plots: peak memory against scene length
(scaling.png), film-set throughput per strategy (film.png), and each worker's device memory as
the driver and the allocator report it (workers.png)."""

from __future__ import annotations

import json
from pathlib import Path

from ..report import fmt, fmt_rate, weights_label
from ..results import RAN
from .criteria import Criterion, Section

FILES = ("results.json", "results.md", "COMMAND.txt", "scaling.png", "film.png", "workers.png")


def pass_fail_table(criteria: list[Criterion], smoke: bool) -> str:
    """The table printed last (plain text): verdict, criterion, what was measured, the bar."""
    head = "GPU acceptance" + (" (SMOKE: CPU, tiny sizes, nothing judged)" if smoke else "")
    width = max(len(c.title) for c in criteria)
    lines = [head, "=" * len(head)]
    for c in criteria:
        extra = f"  [{c.note}]" if c.note else ""
        lines.append(f"{c.verdict:<10} {c.title:<{width}}  {c.value} (bar: {c.target}){extra}")
    passed = sum(c.passed is True for c in criteria)
    failed = sum(c.passed is False for c in criteria)
    lines.append(f"{passed} passed, {failed} failed, {len(criteria) - passed - failed} not judged")
    return "\n".join(lines)


def write(out: Path, meta: dict, sections: list[Section], criteria: list[Criterion]) -> None:
    out.mkdir(parents=True, exist_ok=True)
    doc = {"meta": meta, "criteria": [c.as_dict() for c in criteria],
           "sections": [s.as_dict() for s in sections]}
    (out / "results.json").write_text(json.dumps(doc, indent=1, default=str) + "\n")
    (out / "results.md").write_text(markdown(meta, sections, criteria))
    (out / "COMMAND.txt").write_text(meta["command"] + "\n")
    plots(out, meta, sections)


def _cell(text: str) -> str:
    return str(text).replace("|", "\\|")


def _criteria_md(criteria: list[Criterion]) -> list[str]:
    lines = ["| criterion | bar | measured | verdict |", "|---|---|---|---|"]
    for c in criteria:
        note = f" ({_cell(c.note)})" if c.note else ""
        lines.append(f"| {_cell(c.title)} | {_cell(c.target)} | {_cell(c.value)} | "
                     f"**{c.verdict}**{note} |")
    return lines


def _section_md(s: Section) -> list[str]:
    lines = [f"### {s.name}: {s.status}" + (f" ({s.reason})" if s.reason else "")
             + f", {s.seconds:.1f} s", ""]
    if s.name.startswith("agreement") and s.status == RAN:
        d = s.data
        lines.append(f"- {d['windows']} window(s) of {d['window_s']:g} s: max |device - cpu| "
                     f"{d['max_abs_diff']:.3e}, max |cpu| {d['max_abs_cpu']:.3f}, ok: {d['ok']}")
        if d.get("memory_model"):
            mm = d["memory_model"]
            lines.append(f"- memory model: peak {mm['peak_mib']:,.0f} MiB, estimate "
                         f"{mm['model_mib']:,.0f} MiB (batch {mm['batch']} x {mm['window_s']:g} s)")
    elif s.name.startswith("scaling") and s.status == RAN:
        lines += ["| scene s | windows | forwards | peak allocated MiB | wall s |",
                  "|---|---|---|---|---|"]
        for r in s.data["a"]["rows"]:
            lines.append(f"| {r['scene_seconds']:g} | {r['windows']} | {r['forwards']} | "
                         f"{fmt(r['peak_allocated_mib'], 0)} | {r['wall_s']} |")
        lines += ["", "| windows per forward | windows | wall s | audio s/s |", "|---|---|---|---|"]
        for r in s.data["b"]["rows"]:
            lines.append(f"| {r['batch']} | {r['windows']} | {r['wall_s']} | {r['audio_s_per_s']} |")
    elif s.name.startswith("film-") and "result" in s.data:
        lines += _film_md(s)
    elif s.name == "film-write" and s.status == RAN:
        d = s.data
        lines.append(f"- set `{d['set']}`: {d['scenes']} scenes, {d['audio_seconds']:,.0f} s, "
                     f"{d['shortest_s']:g}-{d['longest_s']:g} s, {d['over_29_s']} over 29 s")
    return lines + [""]


def _film_md(s: Section) -> list[str]:
    r = s.data["result"]
    lines = [f"- `{s.data['strategy']}` ({s.data['backend']}) on `{s.data['set']}`: "
             f"{s.data['scenes']} scenes, {s.data['audio_seconds_in_set']:,.0f} s"]
    if r["status"] == RAN:
        fails = ", ".join(f"{k} {v}" for k, v in sorted(r["failure_reasons"].items())) or "none"
        peak_res = max((v for v in r["peak_reserved_mib"].values() if v is not None), default=None)
        peak_all = max((v for v in r["peak_allocated_mib"].values() if v is not None), default=None)
        lines.append(f"- {r['scenes_ok']}/{r['scenes_total']} ok (failures: {fails}); "
                     f"{r['oom_events']} OOM; {fmt(r['wall_seconds'])} s, "
                     f"{fmt_rate(r['audio_seconds_per_second'])} audio s/s; peak reserved "
                     f"{fmt(peak_res, 0)} MiB, allocated {fmt(peak_all, 0)} MiB; workers started "
                     f"{r['workers_started']}, recycles {r['recycles'] or 0}, start-up wait "
                     f"{fmt(r['startup_wait_seconds'])} s")
    if s.data.get("workers"):
        lines += ["", f"Device memory per worker ({s.data['driver_memory']}):", "",
                  "| worker | pid | driver (nvidia-smi) MiB | allocator reserved MiB | "
                  "allocator allocated MiB |", "|---|---|---|---|---|"]
        for w in s.data["workers"]:
            lines.append(f"| {w['worker']} | {w['pid']} | {fmt(w['driver_mib'], 0)} | "
                         f"{fmt(w['allocator_reserved_mib'], 0)} | "
                         f"{fmt(w['allocator_allocated_mib'], 0)} |")
    return lines


def markdown(meta: dict, sections: list[Section], criteria: list[Criterion]) -> str:
    env = meta["environment"]
    smoke = meta["plan"]["mode"] == "smoke"
    lines = [f"# GPU acceptance: {env.get('gpu_name') or env.get('device_name')}", ""]
    if smoke:
        lines += ["**SMOKE RUN** on the CPU with tiny sizes: proves the script's code paths; "
                  "no figure here is a GPU measurement and no criterion is judged.", ""]
    lines += [f"- weights: **RANDOM TEST WEIGHTS** for every network (time and memory do not "
              f"depend on weight values): " + "; ".join(
                  f"{b}: {weights_label(w)}" for b, w in meta["weights"].items()),
              f"- torch {env['torch']}, CUDA {env.get('cuda') or '-'}, driver "
              f"{env.get('driver') or '-'}, Python {env['python']}, {env['cpu_count']} CPUs",
              f"- budget {meta['plan']['budget_s']:g} s (plan estimate "
              f"{meta['plan']['estimated_total_s']:g} s); took {meta['elapsed_s']:.0f} s",
              f"- command: `{meta['command']}`", "", "## Criteria", ""]
    lines += _criteria_md(criteria) + ["", "## Sections", ""]
    for s in sections:
        lines += _section_md(s)
    return "\n".join(lines)


def plots(out: Path, meta: dict, sections: list[Section]) -> None:
    try:
        import matplotlib
    except ImportError:
        return   # the table is the result; plots need matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from .plots import film_plot, scaling_plot, workers_plot

    where = "SMOKE (CPU)" if meta["plan"]["mode"] == "smoke" else \
        meta["environment"].get("gpu_name", "GPU")
    scaling_plot(plt, out / "scaling.png", sections, where)
    film_plot(plt, out / "film.png", sections, where)
    workers_plot(plt, out / "workers.png", sections, where)
