"""Where weights are and where they come from: an explicit path, an environment variable, then the
standard caches, in that order (every place looked at is recorded, so a miss can say exactly where
it looked); each backend's published source (hub, repository, files); and the one place that
decides which "how to get them" command to print, by looking at what is installed here.

Nothing here imports torch or a hub client, so hints and searches are cheap in any process.
"""

from __future__ import annotations

import importlib.util
import os
import shlex
import shutil
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterable

from .errors import WeightsError

# Marker key the backends' write_random_weights put into random-initialised checkpoints (tests,
# benchmarks), so every report can say that random weights ran. Real checkpoints never carry it.
RANDOM_WEIGHTS_MARKER = "whisperjav_enhance_random_init"

HUGGINGFACE = "huggingface"
MODELSCOPE = "modelscope"


# Of a checkpoint that is not a zip archive (torch's legacy format), the bytes searched for the
# marker: its pickle (keys, never tensor data) comes first and is far shorter than this.
LEGACY_SCAN_BYTES = 8 << 20


class DamagedCheckpoint(Exception):
    """A zip-format checkpoint that is not a whole archive (the message says what is wrong)."""


def carries_random_marker(path: str | os.PathLike) -> bool:
    """Whether a torch checkpoint carries :data:`RANDOM_WEIGHTS_MARKER`, read without torch (the
    parent never imports it): the marker is a key of the pickled dict, so its name is in the
    pickle's bytes. A zip-format file (torch's default) must be a whole archive with a pickle in
    it, else :class:`DamagedCheckpoint`."""
    import zipfile

    marker = RANDOM_WEIGHTS_MARKER.encode("ascii")
    path = Path(path)
    if not zipfile.is_zipfile(path):
        with open(path, "rb") as fh:
            head = fh.read(LEGACY_SCAN_BYTES)
        if not head or head.startswith(b"PK\x03\x04"):  # a zip archive cut short: no directory
            raise DamagedCheckpoint("empty" if not head else "a zip archive cut short")
        return marker in head
    try:
        with zipfile.ZipFile(path) as archive:
            pickles = [n for n in archive.namelist() if n.endswith("/data.pkl") or n == "data.pkl"]
            if not pickles:
                raise DamagedCheckpoint("a zip archive without a pickle in it")
            return marker in archive.read(pickles[0])
    except (zipfile.BadZipFile, OSError, EOFError) as exc:
        raise DamagedCheckpoint(str(exc) or type(exc).__name__) from None


class WeightsNotFound(WeightsError):
    """No explicit path, no environment variable, and nothing usable in any standard place: the
    one miss a download can cure (a bad explicit path or a damaged file is a plain WeightsError)."""


@dataclass(frozen=True)
class WeightsSource:
    """Where a backend's published weights live; the backends and the downloader read these."""

    backend: str              # canonical backend name
    title: str                # the model's name for people, e.g. "MossFormer2_SE_48K"
    hub: str                  # HUGGINGFACE or MODELSCOPE
    repo_id: str              # "owner/name" on that hub
    files: tuple[str, ...]    # files fetched, in this order: the one that makes a folder look
                              # complete (a pointer, a config) comes after what it points at
    env_var: str              # environment variable naming a checkpoint file or folder
    page: str                 # web page of the repository, for downloads by hand

    def __post_init__(self):
        if self.hub not in (HUGGINGFACE, MODELSCOPE):
            raise ValueError(f"{self.backend}: unknown hub {self.hub!r}")
        if self.repo_id.count("/") != 1 or not self.files:
            raise ValueError(f"{self.backend}: repo_id must be owner/name and files non-empty")

    def cache(self) -> Path:
        """The hub's cache folder (read now: the environment may change between calls)."""
        return hf_hub_cache() if self.hub == HUGGINGFACE else modelscope_cache()


MOSSFORMER2 = WeightsSource(
    backend="mossformer2", title="MossFormer2_SE_48K", hub=HUGGINGFACE,
    repo_id="alibabasglab/MossFormer2_SE_48K",
    files=("last_best_checkpoint.pt", "last_best_checkpoint"),
    env_var="WHISPERJAV_ENHANCE_MOSSFORMER2_WEIGHTS",
    page="https://huggingface.co/alibabasglab/MossFormer2_SE_48K")
ZIPENHANCER = WeightsSource(
    backend="zipenhancer", title="ZipEnhancer", hub=MODELSCOPE,
    repo_id="iic/speech_zipenhancer_ans_multiloss_16k_base",
    files=("pytorch_model.bin", "configuration.json"),
    env_var="WHISPERJAV_ENHANCE_ZIPENHANCER_WEIGHTS",
    page="https://modelscope.cn/models/iic/speech_zipenhancer_ans_multiloss_16k_base")
# Backends whose weights can be downloaded, by canonical name.
SOURCES = {s.backend: s for s in (MOSSFORMER2, ZIPENHANCER)}


# -- caches ---------------------------------------------------------------------------------------
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


# -- searching ------------------------------------------------------------------------------------
def first_existing(explicit: str | os.PathLike | None, env_var: str,
                   candidates: Iterable[tuple[str, Path]], accept: Callable[[Path], Path | None],
                   what: str, how_to_get: str) -> tuple[Path, str]:
    """Return ``(path, origin)`` of the first acceptable candidate.

    ``accept(path)`` returns the path to load (it may descend into a folder) or None. An explicit
    path or environment variable that does not resolve is an error at once: the user asked for
    that file, so silently using another would be wrong. Nothing found anywhere is a
    :class:`WeightsNotFound`.
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
    raise WeightsNotFound(f"no {what} weights found. {how_to_get}", tuple(searched))


# -- how to get them: the one place that looks at which commands exist here -----------------------
def command_path(name: str) -> str | None:
    """How to type the console command ``name`` here: its bare name when it is on PATH, its full
    path when it sits beside this Python (a virtual environment not activated), else None."""
    if shutil.which(name):
        return name
    return shutil.which(name, path=str(Path(sys.executable).parent))


def python_command() -> str:
    """``python`` when that is this interpreter, else this interpreter's full path.

    Paths are compared without following symlinks: a virtual environment's ``python`` is a
    link to the system's, and only the environment's path sees the environment's packages."""
    on_path = shutil.which("python")
    same = on_path is not None and os.path.abspath(on_path) == os.path.abspath(sys.executable)
    return "python" if same else shlex.quote(sys.executable)


def own_download_command(backend: str) -> str:
    """This package's download command for ``backend``, as it can be typed here."""
    exe = command_path("whisperjav-enhance")
    head = shlex.quote(exe) if exe else f"{python_command()} -m whisperjav_enhance"
    return f"{head} models --download {backend}"


def hub_download_command(source: WeightsSource) -> str | None:
    """The hub's own command that fills the cache searched for ``source``, or None when neither
    its command-line tool nor its Python package is installed here."""
    repo = source.repo_id
    if source.hub == HUGGINGFACE:
        for tool in ("hf", "huggingface-cli"):   # `hf` since huggingface_hub 0.34; the old name
            exe = command_path(tool)             # may be gone
            if exe:
                return f"{shlex.quote(exe)} download {repo}"
        if importlib.util.find_spec("huggingface_hub") is not None:
            return (f"{python_command()} -c \"from huggingface_hub import snapshot_download; "
                    f"snapshot_download('{repo}')\"")
        return None
    exe = command_path("modelscope")
    if exe:
        # `--model` is understood by every modelscope CLI that has `download` (newer ones also
        # take the id positionally, and keep --model as an alias).
        return f"{shlex.quote(exe)} download --model {repo}"
    if importlib.util.find_spec("modelscope") is not None:
        return (f"{python_command()} -c \"from modelscope.hub.snapshot_download import "
                f"snapshot_download; snapshot_download('{repo}')\"")
    return None


def how_to_get(backend: str) -> str:
    """Sentences for people: how to get ``backend``'s weights with commands that exist here."""
    s = SOURCES[backend]
    ours = own_download_command(backend)
    theirs = hub_download_command(s)
    cache = ("the Hugging Face cache" if s.hub == HUGGINGFACE
             else f"the ModelScope cache, {modelscope_cache()} or $MODELSCOPE_CACHE")
    pkg = "huggingface_hub" if s.hub == HUGGINGFACE else "modelscope"
    alt = f", or `{theirs}`" if theirs else f" (after `pip install {pkg}`)"
    files = " and ".join(f"`{f}`" for f in sorted(s.files))
    return (f"Get them with `{ours}`{alt} (they land in {cache}, which is searched), or put "
            f"{files} from {s.page} in a folder and pass it with --weights or ${s.env_var}.")


def manual_download_hint(backend: str) -> str:
    """What to do where this machine has no network (or may not use it)."""
    s = SOURCES[backend]
    return (f"Without a network here: on a machine with one, run `whisperjav-enhance models "
            f"--download {backend}` (or download {s.page}), copy the files here and pass the "
            f"folder with --weights or ${s.env_var}.")
