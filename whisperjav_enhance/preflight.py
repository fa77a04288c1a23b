"""Checks made in the parent before any worker starts: the output folder is writable and big
enough, and which outputs are already complete. A run refused here has started nothing."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

from .diskspace import format_bytes, free_bytes
from .errors import OutputError

# Free space kept in reserve beyond the estimated size of the outputs (bytes): the manifest, the
# summary and temporary files need a little room too.
DISK_MARGIN_BYTES = 16 * 1024 * 1024
BYTES_PER_SAMPLE = {"PCM_16": 2, "PCM_24": 3, "FLOAT": 4}
WAV_HEADER_BYTES = 1024   # generous: RIFF, fmt and data chunk headers of one output


def check_out_dir_is_folder(out_root: str | os.PathLike) -> None:
    """OutputError when something that is not a folder (a file, a dangling link) is in OUT_DIR's
    place; a missing OUT_DIR is fine (a run creates it)."""
    if os.path.lexists(out_root) and not os.path.isdir(out_root):
        raise OutputError(f"output folder {out_root} exists and is not a folder; "
                          "choose another -o/--out-dir")


def check_output_writable(out_root: Path) -> None:
    """Create OUT_DIR if needed and prove a file can be created in it (OutputError if not)."""
    check_out_dir_is_folder(out_root)
    try:
        out_root.mkdir(parents=True, exist_ok=True)
        fd, probe_path = tempfile.mkstemp(prefix=".whisperjav-enhance-write-test.", suffix=".tmp",
                                          dir=out_root)
        os.close(fd)
        os.unlink(probe_path)
    except OSError as exc:
        raise OutputError(f"cannot write to the output folder {out_root}: "
                          f"{exc.strerror or exc}; choose a writable -o/--out-dir") from exc


def output_bytes(duration_s: float, sample_rate: int, subtype: str) -> int:
    """Estimated size of one mono output WAV."""
    return int(duration_s * sample_rate * BYTES_PER_SAMPLE.get(subtype, 4)) + WAV_HEADER_BYTES


def check_disk_space(out_root: Path, needed_bytes: int) -> None:
    """Refuse to start when the outputs cannot fit (a full disk mid-run fails every scene).
    OUT_DIR need not exist yet (a dry run): its nearest existing folder's disk is asked."""
    free = free_bytes(out_root)
    if free is None:
        return  # cannot tell (some network filesystems); the writes will say
    needed = needed_bytes + DISK_MARGIN_BYTES
    if needed > free:
        raise OutputError(f"the output folder {out_root} has {format_bytes(free)} free but the "
                          f"outputs need about {format_bytes(needed)}; free some space or choose "
                          "another -o/--out-dir")


def complete_output(path: Path):
    """What probing an existing output found (audio.AudioInfo), or None when there is no whole
    output there. A file under its final name is whole (atomic writes); the probe guards against
    files some other tool left there, and gives a skipped scene its duration without reading its
    input too."""
    from . import audio
    from .errors import AudioError

    try:
        return audio.probe(path) if os.path.lexists(path) else None
    except AudioError:
        return None


def output_is_complete(path: Path) -> bool:
    """Whether a whole output is there (see :func:`complete_output`)."""
    return complete_output(path) is not None


__all__ = ["check_out_dir_is_folder", "check_output_writable", "check_disk_space",
           "complete_output", "output_is_complete", "output_bytes", "DISK_MARGIN_BYTES"]
