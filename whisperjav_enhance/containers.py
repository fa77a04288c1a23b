"""What a container's header declares about its own size, read without decoding: the check that
tells a truncated WAV (a copy cut short, a download stopped) from a short one.

libsndfile sizes a WAV by the bytes actually present, so a file whose header declares 10 s but
holds 0.5 s decodes as a valid 0.5 s scene; only the ``data`` chunk's declared length shows that
9.5 s are missing. (FLAC declares its length in STREAMINFO, which libsndfile reports as the frame
count; a cut FLAC is caught when fewer frames decode, see audio.read_audio.)"""

from __future__ import annotations

import os
import struct
from dataclasses import dataclass

# Chunks walked before giving up on finding ``data`` (real files have a handful; a corrupt or
# hostile header must not make the probe loop long).
MAX_CHUNKS = 1024
# Declared lengths that mean "unknown" in a plain RIFF header: writers that stream to a pipe put
# 0 or 0xFFFFFFFF there and never come back to fix them.
_UNKNOWN_SIZES = (0, 0xFFFFFFFF)


@dataclass(frozen=True)
class DeclaredSize:
    """A WAV's declared and present amount of audio, in frames (samples per channel)."""

    declared_frames: int   # what the ``data`` chunk's length says
    present_frames: int    # what the file's bytes after the chunk header hold

    @property
    def missing_frames(self) -> int:
        return max(0, self.declared_frames - self.present_frames)


def wav_declared_size(fh, file_size: int) -> DeclaredSize | None:
    """Read a RIFF/RF64 WAV header from the binary file ``fh`` (any position); None when the
    header does not declare a usable length (not a WAV, streamed, or unparseable: the decoder
    has the last word on those)."""
    fh.seek(0)
    head = fh.read(12)
    if len(head) < 12 or head[8:12] != b"WAVE" or head[:4] not in (b"RIFF", b"RF64", b"BW64"):
        return None
    rf64 = head[:4] != b"RIFF"
    block_align, ds64_data = 0, None
    pos = 12
    for _ in range(MAX_CHUNKS):
        fh.seek(pos)
        hdr = fh.read(8)
        if len(hdr) < 8:
            return None
        cid, size = hdr[:4], struct.unpack("<I", hdr[4:])[0]
        body = pos + 8
        if cid == b"ds64" and size >= 16:
            fields = _read_struct(fh, "<QQ")
            if fields is None:
                return None  # cut off inside its header: the decoder reports the file
            ds64_data = fields[1]
        elif cid == b"fmt " and size >= 14:
            fields = _read_struct(fh, "<HHIIH")
            if fields is None:
                return None
            block_align = fields[4]
        elif cid == b"data":
            if rf64 and size == 0xFFFFFFFF and ds64_data is not None:
                size = ds64_data
            elif size in _UNKNOWN_SIZES:
                return None
            if block_align <= 0:
                return None
            present = max(0, file_size - body)
            return DeclaredSize(size // block_align, present // block_align)
        pos = body + size + (size & 1)  # chunks are padded to even lengths
        if pos >= file_size:
            return None
    return None


class FdReader:
    """The two calls :func:`wav_declared_size` needs, on a raw descriptor (the one the input
    was checked on, so the header read is of that same file)."""

    def __init__(self, fd: int):
        self.fd = fd

    def seek(self, pos: int) -> None:
        os.lseek(self.fd, pos, os.SEEK_SET)

    def read(self, n: int) -> bytes:
        return os.read(self.fd, n)


def _read_struct(fh, fmt: str) -> tuple | None:
    """``fmt`` unpacked from the next bytes of ``fh``; None when the file ends before them."""
    data = fh.read(struct.calcsize(fmt))
    return struct.unpack(fmt, data) if len(data) == struct.calcsize(fmt) else None


__all__ = ["DeclaredSize", "FdReader", "wav_declared_size", "MAX_CHUNKS"]
