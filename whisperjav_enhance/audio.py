"""Audio files in and out: probing, reading as mono float32 at a requested rate (resampled with
soxr), and atomic writing (temporary name in the destination folder, then rename).

Everything that can be wrong with a scene file is reported as an :class:`AudioError` with a
specific ``reason`` (:class:`~.status.Reason`), so one bad scene never takes a run down with a
traceback. Reading never opens a pipe or a device (it would block or never end), checks the
container's declared length (a cut file fails as ``truncated`` instead of being enhanced short),
refuses scenes whose decoded size exceeds :data:`MAX_DECODED_BYTES` before reading them, and
downmixes block by block so a many-channel file never sits in memory whole.

Writing goes through :mod:`.atomic`; samples are encoded straight into the temporary file's
descriptor by a sink that never lets an OS error escape into libsndfile's callbacks, so a full
disk is one :class:`~.diskspace.DiskFull` for the caller, not dozens of ignored tracebacks."""

from __future__ import annotations

import os
import stat
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import soundfile as sf

from .atomic import atomic_fd
from .containers import FdReader, wav_declared_size
from .diskspace import format_bytes
from .errors import AudioError, ConfigError, OutputError
from .safeio import NotRegularFile, file_kind, open_regular, write_all
from .status import Reason

# Bounds outside which a file is rejected rather than enhanced. Module-level so tests can shrink them.
MIN_SAMPLE_RATE_HZ = 4_000
MAX_SAMPLE_RATE_HZ = 384_000
MIN_DURATION_S = 0.01          # shorter than this is "empty" for our purposes (10 ms)
MAX_DURATION_S = 4 * 3600.0    # a "scene" of more than 4 hours is a mistake, not a scene
MAX_CHANNELS = 64
# Host memory budget of one scene's decode: its samples as float32, every channel counted (the
# work decoding does, and a bound on what it holds: one mono copy plus a block). 4 GiB admits
# 4 h of 48 kHz mono (MAX_DURATION_S at the usual scene rate, 2.8 GB) and 2 h of 48 kHz stereo;
# it refuses headers no scene has (64 channels at 384 kHz for 87 s: 8.6 GB) before a byte is
# read, where a worker would otherwise spend minutes and GiBs on them.
MAX_DECODED_BYTES = 4 * 2**30
# Frames decoded and downmixed at a time: at MAX_CHANNELS a block is 16 MiB of float32.
DECODE_BLOCK_FRAMES = 65_536
# Audio a file may lack against its declared length and still count as whole: some writers
# declare a frame or a pad byte more than they wrote; 5 ms is below what subtitle timing shows.
TRUNCATION_TOLERANCE_S = 0.005

CLIP_POLICIES = ("clip", "normalize", "none")
SUBTYPES = ("PCM_16", "PCM_24", "FLOAT")


@dataclass(frozen=True)
class AudioInfo:
    """What probing a file learned, without decoding its samples."""

    path: Path
    sample_rate: int   # Hz, as stored in the file
    channels: int      # downmixed to mono on read
    frames: int        # samples per channel
    format: str        # container, e.g. "WAV", "FLAC"
    subtype: str       # sample encoding, e.g. "PCM_16"

    @property
    def duration_s(self) -> float:
        return self.frames / self.sample_rate

    @property
    def decoded_bytes(self) -> int:
        """Size of every channel's samples as float32 (what :data:`MAX_DECODED_BYTES` bounds)."""
        return self.frames * self.channels * 4


def check_output_sample_rate(rate) -> int:
    """An output sample rate within the bounds input rates are held to; ConfigError otherwise."""
    if isinstance(rate, bool) or not isinstance(rate, (int, np.integer)) or \
            not MIN_SAMPLE_RATE_HZ <= int(rate) <= MAX_SAMPLE_RATE_HZ:
        raise ConfigError(f"output sample rate must be a whole number of Hz from "
                          f"{MIN_SAMPLE_RATE_HZ} to {MAX_SAMPLE_RATE_HZ}, not {rate!r}")
    return int(rate)


# -- reading --------------------------------------------------------------------------------
def probe(path: str | os.PathLike) -> AudioInfo:
    """Read a file's header and check it is something we can enhance."""
    path = Path(path)
    with _open_input(path) as (snd, declared):
        info = _info(path, snd)
    _check_header(info, declared)
    return info


def read_audio(path: str | os.PathLike, target_rate: int | None = None) -> tuple[np.ndarray, AudioInfo]:
    """Decode a file to mono float32 in [-1, 1] at ``target_rate`` (the file's rate if None).

    Rejects files whose samples are not all finite (float WAVs can hold NaN/Inf), since one NaN
    poisons a whole overlap-add window and, in some runtimes, all later output; and files that
    decode to fewer samples than they declare (``truncated``).
    """
    path = Path(path)
    with _open_input(path) as (snd, declared):
        info = _info(path, snd)
        _check_header(info, declared)
        mono = _decode_mono(snd, info)
    if target_rate is not None:
        mono = resample(mono, info.sample_rate, target_rate)
    return mono, info


def _info(path: Path, snd: sf.SoundFile) -> AudioInfo:
    return AudioInfo(path, int(snd.samplerate), int(snd.channels), int(snd.frames),
                     str(snd.format), str(snd.subtype))


def _check_header(ai: AudioInfo, declared) -> None:
    path = ai.path
    if not MIN_SAMPLE_RATE_HZ <= ai.sample_rate <= MAX_SAMPLE_RATE_HZ:
        raise AudioError(Reason.BAD_SAMPLE_RATE, f"{path}: sample rate {ai.sample_rate} Hz is "
                         f"outside {MIN_SAMPLE_RATE_HZ}-{MAX_SAMPLE_RATE_HZ} Hz")
    if not 1 <= ai.channels <= MAX_CHANNELS:
        raise AudioError(Reason.BAD_CHANNELS, f"{path}: {ai.channels} channels is not usable")
    if declared is not None and declared.missing_frames > _tolerance_frames(ai.sample_rate):
        raise AudioError(Reason.TRUNCATED, f"{path}: truncated: its header declares "
                         f"{declared.declared_frames / ai.sample_rate:.2f} s but the file holds "
                         f"{declared.present_frames / ai.sample_rate:.2f} s (cut short while "
                         "copying or writing?); copy or export it again")
    if ai.frames <= 0 or ai.duration_s < MIN_DURATION_S:
        raise AudioError(Reason.EMPTY, f"{path}: no audio ({ai.frames} samples; "
                         f"at least {MIN_DURATION_S * 1000:.0f} ms needed)")
    if ai.duration_s > MAX_DURATION_S:
        raise AudioError(Reason.TOO_LONG, f"{path}: {ai.duration_s / 3600:.1f} h is longer than the "
                         f"{MAX_DURATION_S / 3600:.0f} h limit for one scene; cut it into scenes first")
    if ai.decoded_bytes > MAX_DECODED_BYTES:
        raise AudioError(Reason.TOO_LARGE, f"{path}: decoding it needs {format_bytes(ai.decoded_bytes)}"
                         f" ({ai.channels} channels x {ai.duration_s:.1f} s at {ai.sample_rate} Hz),"
                         f" more than the {format_bytes(MAX_DECODED_BYTES)} one scene may use; "
                         "downmix it to mono or cut it into shorter scenes")


def _tolerance_frames(rate: int) -> int:
    return int(TRUNCATION_TOLERANCE_S * rate)


def _decode_mono(snd: sf.SoundFile, info: AudioInfo) -> np.ndarray:
    """All frames downmixed to mono, one block at a time (never every channel at once)."""
    out = np.empty(info.frames, dtype=np.float32)
    block = None if info.channels == 1 else np.empty((DECODE_BLOCK_FRAMES, info.channels), np.float32)
    pos, bad, error = 0, 0, None
    try:
        while pos < info.frames:
            want = min(DECODE_BLOCK_FRAMES, info.frames - pos)
            chunk = out[pos:pos + want]
            if block is None:  # mono: nothing to downmix, decode straight into the result
                n = len(snd.read(want, dtype="float32", out=chunk))
            else:
                n = len(snd.read(want, dtype="float32", out=block[:want]))
                np.mean(block[:n], axis=1, dtype=np.float32, out=chunk[:n])
            if n == 0:
                break
            bad += n - int(np.count_nonzero(np.isfinite(chunk[:n])))
            pos += n
    except Exception as exc:  # libsndfile reports a cut or corrupt stream as an error mid-way
        error = exc
    path = info.path
    if pos == 0:
        if error is not None:
            raise AudioError(Reason.UNREADABLE, f"{path}: decoding failed ({_one_line(error)})") from error
        raise AudioError(Reason.EMPTY, f"{path}: no samples could be decoded")
    if info.frames - pos > _tolerance_frames(info.sample_rate):
        why = f" (decoding stopped: {_one_line(error)})" if error is not None else ""
        raise AudioError(Reason.TRUNCATED, f"{path}: truncated: its header declares "
                         f"{info.duration_s:.2f} s but only {pos / info.sample_rate:.2f} s decode"
                         f"{why}; copy or export it again")
    if bad:
        raise AudioError(Reason.NON_FINITE, f"{path}: {bad} samples are NaN or infinite")
    return out[:pos] if pos < info.frames else out


@contextmanager
def _open_input(path: Path):
    """(SoundFile, the WAV's declared size or None) for a regular file; pipes and devices are
    refused from their metadata, before anything opens them."""
    fd = _open_input_fd(path)
    try:
        try:
            declared = wav_declared_size(FdReader(fd), os.fstat(fd).st_size)
            os.lseek(fd, 0, os.SEEK_SET)
        except OSError as exc:  # an I/O error under the header: this scene only
            raise _unreadable(path, exc) from exc
        try:
            snd = _soundfile(fd, path)
        except Exception as exc:  # soundfile raises RuntimeError/LibsndfileError/TypeError variants
            raise AudioError(Reason.UNREADABLE,
                             f"{path}: not a readable audio file ({_one_line(exc)})") from exc
        with snd:
            yield snd, declared
    finally:
        os.close(fd)


def _soundfile(fd: int, path: Path) -> sf.SoundFile:
    """libsndfile on the checked descriptor. Windows reopens the path: a descriptor there is an
    index into one C runtime's table and libsndfile's DLL has its own (and a swap could put no
    FIFO or device there: Windows has none in the file namespace)."""
    return sf.SoundFile(str(path)) if os.name == "nt" else sf.SoundFile(fd, closefd=False)


def _open_input_fd(path: Path) -> int:
    """A blocking read descriptor of the regular file ``path`` (links followed: a link to a scene
    is a scene). Pipes and devices are refused from their metadata before anything opens them
    (opening a device can act on it); one swapped in after that look is refused by the open."""
    try:
        st = os.stat(path)
    except FileNotFoundError:
        link = f" (a link to {os.readlink(path)}, which does not exist)" if os.path.islink(path) else ""
        raise AudioError(Reason.MISSING, f"{path}: file does not exist{link}") from None
    except OSError as exc:
        raise _unreadable(path, exc) from exc
    _require_regular(path, st)
    try:
        fd = open_regular(path, os.O_RDONLY, follow_links=True)
    except FileNotFoundError:
        raise AudioError(Reason.MISSING, f"{path}: file does not exist") from None
    except NotRegularFile as exc:
        raise _not_a_file(path, exc.strerror) from None
    except OSError as exc:
        raise _unreadable(path, exc) from exc
    try:
        _require_regular(path, os.fstat(fd))  # the size, as the file now is
    except BaseException:
        os.close(fd)
        raise
    return fd


def _require_regular(path: Path, st: os.stat_result) -> None:
    if not stat.S_ISREG(st.st_mode):
        raise _not_a_file(path, f"is {file_kind(st.st_mode)}")
    if st.st_size == 0:
        raise AudioError(Reason.EMPTY, f"{path}: file is empty (0 bytes)")


def _not_a_file(path: Path, what: str) -> AudioError:  # what: e.g. "is a pipe (FIFO)"
    return AudioError(Reason.NOT_A_FILE, f"{path} {what}, not an audio file; name the scene "
                      "files (or their folder) instead")


def _unreadable(path: Path, exc: OSError) -> AudioError:
    return AudioError(Reason.UNREADABLE, f"{path}: cannot be read ({exc.strerror or exc})")


def resample(audio: np.ndarray, from_hz: int, to_hz: int) -> np.ndarray:
    """Resample mono float32 audio with soxr (high quality); identity when the rates match."""
    if from_hz == to_hz:
        return audio
    import soxr

    out = soxr.resample(audio, from_hz, to_hz, quality="HQ")
    return np.ascontiguousarray(out, dtype=np.float32)


def output_frames(input_frames: int, input_rate: int, output_rate: int) -> int:
    """How long a scene of ``input_frames`` at ``input_rate`` is at ``output_rate``: exactly its
    length when the rates match, else the rounded equivalent (so scene times stay true)."""
    if input_rate == output_rate:
        return int(input_frames)
    return max(1, int(round(input_frames * output_rate / input_rate)))


def fit_length(audio: np.ndarray, frames: int) -> np.ndarray:
    """``audio`` cut or zero-padded to ``frames`` samples. Resampling there and back can land a
    sample or two off (soxr rounds each way); an output must match its scene exactly."""
    if audio.shape[0] == frames:
        return audio
    if audio.shape[0] > frames:
        return audio[:frames]
    return np.concatenate([audio, np.zeros(frames - audio.shape[0], dtype=audio.dtype)])


# -- writing --------------------------------------------------------------------------------
def apply_clip_policy(audio: np.ndarray, policy: str) -> np.ndarray:
    """Bring audio into [-1, 1] for integer output.

    ``clip`` hard-limits samples (enhancers rarely overshoot, and then only by a little);
    ``normalize`` scales the whole scene down when its peak exceeds 1 (no distortion, lower level);
    ``none`` leaves samples as they are (only sensible with FLOAT output).
    """
    if policy not in CLIP_POLICIES:
        raise ValueError(f"clip policy must be one of {CLIP_POLICIES}, not {policy!r}")
    if policy == "none":
        return audio
    peak = float(np.max(np.abs(audio))) if audio.size else 0.0
    if peak <= 1.0:
        return audio
    if policy == "normalize":
        return (audio / peak).astype(np.float32)
    return np.clip(audio, -1.0, 1.0)


def write_audio_atomic(path: str | os.PathLike, audio: np.ndarray, sample_rate: int,
                       subtype: str = "PCM_16", clip: str = "clip",
                       root: str | os.PathLike | None = None) -> Path:
    """Write a WAV so that a file under its final name is always complete.

    ``root`` (OUT_DIR) bounds the folders never followed through links (see :mod:`.atomic`).
    On failure :class:`OutputError` names the path; :class:`~.diskspace.DiskFull` (reason
    ``disk_full``, naming the free space) when the disk or quota is full.
    """
    path = Path(path)
    if subtype not in SUBTYPES:
        raise ValueError(f"subtype must be one of {SUBTYPES}, not {subtype!r}")
    if subtype != "FLOAT" and clip == "none":
        raise ValueError("clip='none' needs subtype='FLOAT'; integer samples must be limited")
    try:
        check_output_sample_rate(sample_rate)
    except ConfigError as exc:
        raise ValueError(str(exc)) from None
    audio = apply_clip_policy(np.asarray(audio, dtype=np.float32), clip)
    with atomic_fd(path, root) as fd:
        sink = _FdSink(fd)
        try:
            sf.write(sink, audio, sample_rate, subtype=subtype, format="WAV")
        except OSError:
            raise
        except Exception as exc:
            if sink.error is not None:
                raise sink.error from None
            raise OutputError(f"cannot write {path}: {_one_line(exc)}") from exc
        if not sink.flush():
            raise sink.error
    return path


class _FdSink:
    """A file object for libsndfile's callbacks that never raises into them.

    An exception inside a cffi callback is printed ("Exception ignored from cffi callback") and
    lost; here the first one is kept, every later call fails quietly (libsndfile then reports a
    short write), and :func:`write_audio_atomic` raises the kept one once libsndfile returns.
    KeyboardInterrupt is kept the same way, so Ctrl-C during a write is not swallowed. Writes are
    gathered into :data:`_SINK_BUFFER_BYTES` (libsndfile hands over 8 KiB at a time)."""

    def __init__(self, fd: int):
        self.fd = fd
        self.error: BaseException | None = None
        self._buf = bytearray()

    def write(self, data) -> int:
        if self.error is not None:
            return 0
        try:
            self._buf += data
        except BaseException as exc:  # MemoryError, KeyboardInterrupt: kept, raised later
            self.error = exc
            return 0
        if len(self._buf) >= _SINK_BUFFER_BYTES and not self.flush():
            return 0
        return len(data)

    def flush(self) -> bool:
        """Write out what is gathered; False (the error kept) when that failed."""
        if self.error is None and self._buf:
            # A fresh buffer: the failed write's traceback may still hold a view of the old one.
            data, self._buf = self._buf, bytearray()
            try:
                write_all(self.fd, data)
            except BaseException as exc:
                self.error = exc
        return self.error is None

    def seek(self, offset: int, whence: int = os.SEEK_SET) -> int:
        if self.flush():
            try:
                return os.lseek(self.fd, offset, whence)
            except BaseException as exc:
                self.error = exc
        return -1

    def tell(self) -> int:
        return self.seek(0, os.SEEK_CUR)

    def read(self, n: int = -1) -> bytes:  # never called in write mode; virtual IO wants it
        return b""


# Bytes the sink gathers before one write(): fewer system calls, little memory.
_SINK_BUFFER_BYTES = 1 << 20


def _one_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0] if text else type(exc).__name__
