"""Which scene files a run covers and where each one's output goes.

Inputs are files and folders; folders are searched recursively for ``.wav`` and ``.flac``. Every
scene gets one output path, ``OUT_DIR/<path relative to its input folder>`` with a ``.wav``
suffix, and the whole list is kept in natural sort order (``scene_2`` before ``scene_10``), which
is the order scenes are planned, run and reported in. Nothing here touches audio samples.

Paths are checked so a run can never write outside OUT_DIR, never write over one of its own
inputs, and never send two inputs to one output.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Sequence

from .errors import ConfigError

# Suffixes a folder search picks up (compared case-insensitively). A file named explicitly is
# taken whatever its suffix: the probe says whether it is audio.
SCENE_SUFFIXES = (".wav", ".flac")
OUTPUT_SUFFIX = ".wav"


@dataclass(frozen=True)
class Scene:
    """One scene file of a run and where its output goes."""

    index: int          # position in the run's naturally sorted list (what reports call it)
    input_path: Path    # the scene file as found (absolute)
    output_path: Path   # final output file, always inside the run's OUT_DIR (absolute)
    relative: str       # output path relative to OUT_DIR, POSIX separators (for people)


def natural_key(text: str) -> tuple:
    """Sort key that orders digit runs by value: ``scene_2`` < ``scene_10``; case-insensitive.

    ``re.split`` with a capturing group alternates text and digits starting with text, so two
    keys always compare str with str and int with int.
    """
    parts = re.split(r"(\d+)", text)
    return tuple(int(p) if i % 2 else p.casefold() for i, p in enumerate(parts))


def path_key(relative: str) -> tuple:
    """Natural sort key of a relative path, compared folder by folder."""
    return tuple(natural_key(part) for part in relative.split("/"))


def same_path_key(path: str | os.PathLike) -> str:
    """Key for "the same path" (the same output, input or summary): absolute, links resolved,
    case-folded where the OS folds case."""
    return os.path.normcase(os.path.normpath(str(Path(os.path.abspath(path)).resolve())))


def output_path_for(relative: str | os.PathLike, out_dir: Path) -> Path:
    """``out_dir/relative`` with a ``.wav`` suffix; a path that would land outside ``out_dir``
    (``..`` parts, an absolute path, a symlinked folder pointing elsewhere) is a ConfigError."""
    rel = Path(relative)
    out_root = Path(os.path.abspath(out_dir))
    if rel.is_absolute() or rel.drive or any(part == ".." for part in rel.parts):
        raise ConfigError(f"output path {relative} would be written outside {out_root}")
    target = (out_root / rel).with_suffix(OUTPUT_SUFFIX)
    # Lexically inside is not enough: an existing symlinked folder under OUT_DIR could still
    # lead elsewhere, so compare the resolved forms too.
    if not Path(os.path.abspath(target)).is_relative_to(out_root) or \
            not target.resolve().is_relative_to(out_root.resolve()):
        raise ConfigError(f"output path {target} would be written outside {out_root}")
    return target


def _walk_folder(folder: Path, skip_under: Path | None) -> list[Path]:
    """Scene files below ``folder``: regular files (or links to them) with a scene suffix, not
    hidden, outside ``skip_under``; pipes, devices and sockets are never taken (reading one would
    block or never end), and linked folders are not entered."""
    found = []
    pending = [folder]
    while pending:
        here = pending.pop()
        if skip_under is not None and here.resolve().is_relative_to(skip_under):
            continue  # never take a run's own outputs as its inputs
        try:
            entries = list(os.scandir(here))
        except OSError:
            continue  # an unreadable sub-folder holds nothing we could read either
        for entry in entries:
            if entry.name.startswith("."):
                continue  # hidden files and folders, macOS "._x.wav" forks, our temporary files
            try:
                if entry.is_dir(follow_symlinks=False):
                    pending.append(Path(entry.path))
                elif entry.is_file() and Path(entry.name).suffix.lower() in SCENE_SUFFIXES:
                    found.append(Path(entry.path))
            except OSError:
                continue
    return found


def discover_scenes(inputs: Sequence[str | os.PathLike] | str | os.PathLike,
                    out_dir: str | os.PathLike) -> list[Scene]:
    """Every scene named by ``inputs`` (files and folders), naturally sorted, with output paths.

    Errors (ConfigError, exit code 2): an input that does not exist at all, a folder without any
    scene, no scene found at all, two inputs that would be written to one output, an output that
    would overwrite an input. Something named explicitly that exists but is not a regular file (a
    pipe, a device, a dangling link, a folder named like a scene file with no scene in it) is a
    scene of its own that fails alone when probed (``not_a_file``, ``missing``): nothing here
    opens it. The same file reached twice (a folder and a file inside it) is taken once, first
    mapping wins.
    """
    if isinstance(inputs, (str, os.PathLike)):
        inputs = [inputs]
    out_root = Path(os.path.abspath(out_dir))
    pairs: list[tuple[Path, str]] = []   # (input file, path relative to OUT_DIR)
    for raw in inputs:
        item = Path(os.path.abspath(Path(raw).expanduser()))
        if not os.path.lexists(item):
            raise ConfigError(f"input {raw} does not exist")
        if item.is_dir():
            # OUT_DIR inside an input folder: its files are this run's outputs, not scenes.
            nested = out_root.resolve()
            skip = nested if nested.is_relative_to(item.resolve()) and nested != item.resolve() else None
            files = _walk_folder(item, skip)
            if files:
                pairs.extend((f, f.relative_to(item).as_posix()) for f in files)
                continue
            if item.suffix.lower() not in SCENE_SUFFIXES:
                raise ConfigError(f"no .wav or .flac files found in {item}")
        # A file, or something named like one that is not (probing says what, without opening).
        pairs.append((item, item.name))
    if not pairs:
        raise ConfigError("no input scenes given")
    return _assign(pairs, out_root)


def scenes_from_pairs(pairs: Iterable[tuple[str | os.PathLike, str | os.PathLike]],
                      out_dir: str | os.PathLike, sort: bool = False) -> list[Scene]:
    """Scenes with outputs chosen by the caller (``relative`` to ``out_dir``), in the given order
    unless ``sort``; the same checks as :func:`discover_scenes` apply."""
    out_root = Path(os.path.abspath(out_dir))
    items = [(Path(os.path.abspath(i)), Path(r).as_posix()) for i, r in pairs]
    return _assign(items, out_root, sort=sort)


def _assign(pairs: list[tuple[Path, str]], out_root: Path, sort: bool = True) -> list[Scene]:
    if sort:
        pairs = sorted(pairs, key=lambda p: (path_key(p[1]), path_key(p[0].as_posix())))
    seen_inputs: set[str] = set()
    by_output: dict[str, Path] = {}
    scenes: list[Scene] = []
    for inp, rel in pairs:
        in_key = same_path_key(inp)
        if in_key in seen_inputs:
            continue
        target = output_path_for(rel, out_root)
        out_key = same_path_key(target)
        if out_key == in_key:
            raise ConfigError(f"the output for {inp} would overwrite the input itself; "
                              "choose an OUT_DIR that is not the input folder")
        if out_key in by_output:
            raise ConfigError(f"{by_output[out_key]} and {inp} would both be written to {target}; "
                              "rename one of them or enhance them into different OUT_DIRs")
        seen_inputs.add(in_key)
        by_output[out_key] = inp
        scenes.append(Scene(len(scenes), inp, target, target.relative_to(out_root).as_posix()))
    return scenes
