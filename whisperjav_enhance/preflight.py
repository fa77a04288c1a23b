"""Checks made in the parent before any worker starts: the output folder is writable and big
enough, and which outputs are already complete. A run refused here has started nothing."""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

from .errors import OutputError

# Free space kept in reserve beyond the estimated size of the outputs (bytes): the manifest, the
# summary and temporary files need a little room too.
DISK_MARGIN_BYTES = 16 * 1024 * 1024
BYTES_PER_SAMPLE = {"PCM_16": 2, "PCM_24": 3, "FLOAT": 4}
WAV_HEADER_BYTES = 1024   # generous: RIFF, fmt and data chunk headers of one output


def check_output_writable(out_root: Path) -> None:
    """Create OUT_DIR if needed and prove a file can be created in it (OutputError if not)."""
    try:
        if out_root.exists() and not out_root.is_dir():
            raise OutputError(f"output folder {out_root} exists and is not a folder; "
                              "choose another -o/--out-dir")
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
    """Refuse to start when the outputs cannot fit (a full disk mid-run fails every scene)."""
    try:
        free = shutil.disk_usage(out_root).free
    except OSError:
        return  # cannot tell (some network filesystems); the writes will say
    if needed_bytes + DISK_MARGIN_BYTES > free:
        raise OutputError(f"the output folder {out_root} has {free / 2**20:.0f} MiB free but the "
                          f"outputs need about {(needed_bytes + DISK_MARGIN_BYTES) / 2**20:.0f} MiB; "
                          "free some space or choose another -o/--out-dir")


def output_is_complete(path: Path) -> bool:
    """An existing output under its final name is whole (atomic writes); a header check guards
    against files some other tool left there."""
    try:
        if not path.is_file() or path.stat().st_size == 0:
            return False
        import soundfile as sf

        return sf.info(str(path)).frames > 0
    except Exception:
        return False


__all__ = ["check_output_writable", "check_disk_space", "output_is_complete", "output_bytes",
           "DISK_MARGIN_BYTES"]
