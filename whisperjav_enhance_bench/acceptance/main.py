"""Every GPU criterion in one command: ``python benchmarks/gpu_acceptance.py`` (see that file and
benchmarks/README.md for the device command that installs the carried wheels first).

    plan (sizes, estimates, budget) --> for each section, criteria first:
        skipped when its estimate no longer fits the budget (with the reason)
        | agreement/scaling in a spawned child | film strategies through the benchmark's runners
    --> criteria (every one: PASS, FAIL or not judged with why) --> results folder
    --> the pass/fail table, printed last

Exit code: 0 every criterion measured and passed (smoke: every section ran or was skipped with
its reason); 1 some criterion failed or could not be measured (smoke: a section broke); 2 bad
arguments or no CUDA device without --smoke.
"""

from __future__ import annotations

import argparse
import datetime as _dt
import os
import platform
import re
import shlex
import sys
import tempfile
import time
import traceback
from pathlib import Path

from whisperjav_enhance.errors import EnhanceError

from . import film, network, report
from ..results import ERROR, SKIPPED
from .criteria import Section, final_table
from .drivermem import gpu_facts
from .plan import SECTIONS, Budget, full_plan, smoke_plan

# Packages the report names with their versions (the carried wheels and what they run on).
VERSIONED = ("torch", "numpy", "soundfile", "soxr", "multiprocess", "clearvoice", "modelscope",
             "einops", "rotary-embedding-torch", "librosa", "torchaudio", "matplotlib")


def parse_args(argv):
    p = argparse.ArgumentParser(prog="python benchmarks/gpu_acceptance.py",
                                description="Check every GPU criterion in one command.")
    p.add_argument("--smoke", action="store_true",
                   help="the same code paths on the CPU with tiny sizes, in under 2 minutes "
                        "(CI); judges nothing (default: off)")
    p.add_argument("--budget-s", type=float, default=None,
                   help="sections that would end later are skipped with the reason (default: "
                        "430 s, smoke 240 s)")
    p.add_argument("--out", default=None, help="the results folder itself (default: "
                   "ROOT/<date>-<gpu name>)")
    p.add_argument("--root", default="benchmarks/results",
                   help="where the dated folder is made (default: benchmarks/results)")
    p.add_argument("--recycle-standbys", type=int, default=None,
                   help="warm standbys at most in the recycle-cost run: more hide a start that "
                        "takes longer than a worker's life (default: PoolPolicy's)")
    p.add_argument("--sections", default=None,
                   help="comma-separated subset of: " + ", ".join(SECTIONS) + " (default: all)")
    args = p.parse_args(argv)
    if args.budget_s is not None and not args.budget_s > 0:
        p.error("--budget-s must be positive")
    if args.recycle_standbys is not None and args.recycle_standbys < 1:
        p.error("--recycle-standbys must be at least 1")
    chosen = SECTIONS if not args.sections else tuple(
        s.strip() for s in args.sections.split(",") if s.strip())
    unknown = [s for s in chosen if s not in SECTIONS]
    if unknown:
        p.error(f"unknown section(s) {', '.join(unknown)}; choose from {', '.join(SECTIONS)}")
    args.chosen = chosen
    return args


def environment(plan, argv) -> dict:
    """Versions and the device, without creating a CUDA context in this process."""
    import importlib.metadata as md

    import torch

    env = {"torch": torch.__version__, "cuda": torch.version.cuda,
           "python": platform.python_version(), "platform": platform.platform(),
           "cpu_count": os.cpu_count(),
           "date": _dt.datetime.now().astimezone().isoformat(timespec="seconds"),
           "packages": {}}
    for name in VERSIONED:
        try:
            env["packages"][name] = md.version(name)
        except md.PackageNotFoundError:
            env["packages"][name] = None
    if plan.device == "cuda":
        env.update(gpu_facts())
        if not env.get("gpu_name"):
            from ..context import cuda_device_facts

            facts = cuda_device_facts(None)
            env["gpu_name"] = facts.get("device_name")
    else:
        from ..context import cpu_name

        env["device_name"] = f"CPU: {cpu_name()}"
    return env


class Weights:
    """Random weights per backend, written once (in the backend's real format, by its own
    ``write_random_weights``) and labelled random everywhere."""

    def __init__(self, folder: Path):
        self.folder = folder
        self.found: dict = {}

    def __call__(self, backend: str) -> tuple[str | None, dict]:
        if backend not in self.found:
            from whisperjav_enhance.backends import backend_class

            cls = backend_class(backend)
            path = None if backend == "passthrough" else str(
                cls.write_random_weights(self.folder / backend))
            self.found[backend] = (path, cls.resolve(path).weights.as_dict())
        return self.found[backend]


def run_section(name: str, plan, budget: Budget, state: dict) -> Section:
    """One section, timed; a harness failure is the section's error, not the run's end."""
    timeout = max(30.0, budget.left())
    weights = state["weights"]
    try:
        if name.startswith("agreement-"):
            b = name.split("-", 1)[1]
            return network.agreement_section(plan, b, weights(b)[0], timeout)
        if name.startswith("scaling-"):
            b = name.split("-", 1)[1]
            return network.scaling_section(plan, b, weights(b)[0], timeout)
        if name == "film-write":
            bk = {b: weights(b) for b in (plan.film_backend, "zipenhancer")}
            state["film"], section = film.write_film(plan, state["work"], bk, state["slot"])
            return section
        if state.get("film") is None:
            return Section(name, SKIPPED, "film-write did not run")
        return film.film_section(state["film"], name, timeout)
    except EnhanceError as exc:
        return Section(name, ERROR, str(exc).strip().splitlines()[0][:300],
                       data={"detail": str(exc)[-4000:]})
    except Exception as exc:  # a bug in one section must not cost the lease the other sections
        return Section(name, ERROR, f"{type(exc).__name__}: {exc}"[:300],
                       data={"detail": traceback.format_exc()[-4000:]})


def run_all(plan, chosen, state) -> list[Section]:
    budget = state["budget"]
    sections = []
    for name in chosen:
        why = budget.refuse(plan.estimates[name])
        if why:
            section = Section(name, SKIPPED, why)
        else:
            t0 = time.monotonic()
            section = run_section(name, plan, budget, state)
            section.seconds = time.monotonic() - t0
        sections.append(section)
        print(f"acceptance: {name}: {section.status}"
              + (f" ({section.reason})" if section.reason else "")
              + f" in {section.seconds:.1f} s; {budget.left():.0f} s of budget left",
              file=sys.stderr, flush=True)
    return sections


def out_folder(args, env: dict, plan) -> Path:
    if args.out:
        return Path(args.out)
    stamp = _dt.datetime.now().strftime("%Y%m%d")
    where = "cpu-smoke" if plan.mode == "smoke" else re.sub(
        r"[^A-Za-z0-9.]+", "-", env.get("gpu_name") or "gpu").strip("-")
    return Path(args.root) / f"{stamp}-{where}"


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    args = parse_args(argv)
    make = smoke_plan if args.smoke else full_plan
    plan = make(args.budget_s, args.recycle_standbys)
    budget = Budget(plan.budget_s)
    from whisperjav_enhance.devices import resolve_devices

    try:
        slot = resolve_devices("cpu" if args.smoke else "cuda:0")[0]
    except EnhanceError as exc:
        print(f"error: {exc}\n(no CUDA device here: `--smoke` runs the same code paths on the "
              "CPU)", file=sys.stderr)
        return 2
    env = environment(plan, argv)
    out = out_folder(args, env, plan)
    with tempfile.TemporaryDirectory(prefix="wje-acceptance-") as work:
        state = {"budget": budget, "slot": slot, "work": Path(work),
                 "weights": Weights(Path(work) / "weights"), "film": None}
        sections = run_all(plan, args.chosen, state)
        verdicts = film.film_verdicts(state["film"]) if state["film"] else []
        criteria = final_table(sections + [Section("film-verdicts", criteria=verdicts)])
        meta = {"command": "python benchmarks/gpu_acceptance.py " + shlex.join(argv),
                "environment": env, "plan": dict(vars(plan), estimated_total_s=plan.estimated_total_s),
                "weights": {b: w for b, (_, w) in state["weights"].found.items()},
                "random_weights": True, "elapsed_s": budget.elapsed()}
        report.write(out, meta, sections, criteria)
    print(f"acceptance: results in {out}", file=sys.stderr, flush=True)
    print(report.pass_fail_table(criteria, plan.mode == "smoke"), flush=True)
    if plan.mode == "smoke":
        return 1 if any(s.status == ERROR for s in sections) else 0
    return 0 if all(c.passed for c in criteria) else 1
