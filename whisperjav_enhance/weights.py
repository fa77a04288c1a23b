"""Finding weight files: an explicit path, an environment variable, then the standard caches, in
that order. Every place looked at is recorded so a miss can say exactly where it looked."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Callable, Iterable

from .errors import WeightsError

# Marker key written by whisperjav_enhance.testing into random-initialised checkpoints, so every
# report can say that random weights ran. Real checkpoints never carry it.
RANDOM_WEIGHTS_MARKER = "whisperjav_enhance_random_init"


def hf_hub_cache() -> Path:
    """The Hugging Face hub cache folder, honouring HF_HUB_CACHE and HF_HOME."""
    if os.environ.get("HF_HUB_CACHE"):
        return Path(os.environ["HF_HUB_CACHE"])
    home = Path(os.environ.get("HF_HOME") or Path.home() / ".cache" / "huggingface")
    return home / "hub"


def hf_snapshot_candidates(repo_id: str, filename: str) -> list[Path]:
    """Snapshot files of ``repo_id`` in the HF cache (newest first), or the pattern if none."""
    base = hf_hub_cache() / ("models--" + repo_id.replace("/", "--")) / "snapshots"
    found = sorted(base.glob(f"*/{filename}"), key=lambda p: p.stat().st_mtime if p.exists() else 0,
                   reverse=True)
    return found or [base / "<revision>" / filename]


def modelscope_cache() -> Path:
    """The ModelScope cache folder, honouring MODELSCOPE_CACHE."""
    return Path(os.environ.get("MODELSCOPE_CACHE") or Path.home() / ".cache" / "modelscope")


def first_existing(explicit: str | os.PathLike | None, env_var: str,
                   candidates: Iterable[tuple[str, Path]], accept: Callable[[Path], Path | None],
                   what: str, how_to_get: str) -> tuple[Path, str]:
    """Return ``(path, origin)`` of the first acceptable candidate.

    ``accept(path)`` returns the path to load (it may descend into a folder) or None. An explicit
    path or environment variable that does not resolve is an error at once: the user asked for
    that file, so silently using another would be wrong.
    """
    searched: list[str] = []
    if explicit:
        p = Path(explicit).expanduser()
        got = accept(p)
        if got is None:
            raise WeightsError(f"{what}: --weights {p} is not a usable {what} checkpoint "
                               f"(missing, or not the expected layout). {how_to_get}", (str(p),))
        return got, "explicit"
    env = os.environ.get(env_var)
    if env:
        p = Path(env).expanduser()
        got = accept(p)
        if got is None:
            raise WeightsError(f"{what}: {env_var}={p} is not a usable {what} checkpoint. "
                               f"{how_to_get}", (f"{p} (from {env_var})",))
        return got, f"env:{env_var}"
    searched.append(f"${env_var} (not set)")
    for origin, p in candidates:
        searched.append(str(p))
        got = accept(p) if "<" not in str(p) else None
        if got is not None:
            return got, origin
    raise WeightsError(f"no {what} weights found. {how_to_get}", tuple(searched))
