"""ZipEnhancer backend: ModelScope's 16 kHz ZipEnhancer network, loaded from a ModelScope model
folder by our own strict loader, run on short windows.

The network class and its STFT helpers come from ``modelscope`` unchanged; what ModelScope's
``ZipenhancerDecorator`` adds around them is re-done here, because its loader keeps random weights
without a word when ``pytorch_model.bin`` is missing and unpickles without ``weights_only``:

    x [B, T] --zero-pad to a multiple of the STFT hop--> per-row RMS normalisation
      --STFT (400/100/400 Hann, |X|^0.3)--> ZipEnhancer --ISTFT--> / norm --crop--> [B, T]

ModelScope normalises once over the whole forward input; we normalise each batch row on its own,
so a row's result does not depend on what it is batched with, and a silent row gives silence
instead of NaN. With one row and a length that is a multiple of the hop, this is exactly
ModelScope's computation (the tests compare the two on the same weights).

Memory grows with the square of the window length (attention over time frames; docs/measurements.md:
~290 MiB per 1 s window, ~1,050 MiB per 2 s window, 24 GiB for one 10 s input), so windows stay
short: 2 s with 0.5 s overlap, i.e. ModelScope's own 2 s windows at a 1.5 s stride.
"""

from __future__ import annotations

import dataclasses
import json
import os
from pathlib import Path

from ..errors import WeightsError
from ..weights import (RANDOM_WEIGHTS_MARKER, ZIPENHANCER, first_existing, how_to_get,
                       modelscope_cache)
from .base import Backend, BackendOption, WeightsInfo, check_windowing

MODEL_ID = ZIPENHANCER.repo_id         # where the weights come from (weights.SOURCES)
ENV_VAR = ZIPENHANCER.env_var
CONFIG_FILE = "configuration.json"     # ModelScope's hyper-parameter file (ModelFile.CONFIGURATION)
WEIGHTS_FILE = "pytorch_model.bin"     # ModelScope's weight file (ModelFile.TORCH_MODEL_BIN_FILE)
# Key of our own entry in configuration.json; ModelScope ignores unknown top-level keys.
OWN_CONFIG_KEY = "whisperjav_enhance"

# STFT of the released model (fixed in ZipenhancerDecorator.forward, not in configuration.json).
N_FFT = 400                # samples (25 ms at 16 kHz)
HOP = 100                  # samples (6.25 ms)
WIN = 400                  # samples, Hann
COMPRESS = 0.3             # magnitude compression exponent
# Shortest forward input: the centred STFT reflect-pads n_fft/2 samples, which needs more than
# that many input samples. Shorter windows are zero-padded up to this (samples).
MIN_FORWARD_SAMPLES = N_FFT
# A row whose mean square is at or below this is silence (RMS 1e-10, -200 dBFS; the smallest
# 16-bit step is 3e-5): it has no level to normalise to, so its output is zeros.
SILENT_MEAN_SQUARE = 1e-20

# Hyper-parameters the network's constructor needs from configuration.json's "model" object.
REQUIRED_HPARAMS = ("dense_channel", "num_tsconformers", "former_conf", "batch_first",
                    "model_num_spks")
# The released model's values as public code reads them (docs/measurements.md; 2,044,436 parameters).
# Only write_random_weights uses them: load() always reads the folder's own configuration.json.
TEST_HPARAMS = {
    "dense_channel": 64,
    "num_tsconformers": 4,
    "batch_first": True,
    "model_num_spks": 1,
    "former_conf": {
        "num_encoder_layers": [1, 1, 1, 1],
        "downsampling_factor": [1, 2, 2, 1],
        "f_downsampling_factor": [1, 2, 2, 1],
        "encoder_dim": [64, 64, 64, 64],
        "pos_dim": 24,
        "num_heads": 4,
        "query_head_dim": 12,
        "pos_head_dim": 4,
        "value_head_dim": 8,
        "feedforward_dim": [256, 256, 256, 256],
        "cnn_module_kernel": 15,
        "causal": False,
        "encoder_unmasked_dim": 64,
        "warmup_batches": 4000.0,
    },
}

# Device memory model per window of L seconds: VRAM_QUAD_MIB_PER_S2 * L^2 + VRAM_LIN_MIB_PER_S * L.
# Fitted to docs/measurements.md (H100, inference mode): 1 s -> ~290 MiB, 2 s -> ~1,050 MiB give
# 235 L^2 + 55 L, which also predicts 4 s (3,980 vs 4,034 measured) and 10 s (24,050 vs 24,216);
# the coefficients are rounded up and a margin and a fixed per-forward overhead are added on top.
VRAM_QUAD_MIB_PER_S2 = 240.0
VRAM_LIN_MIB_PER_S = 60.0
VRAM_MARGIN = 1.25                     # multiplier on the per-window estimate
VRAM_FIXED_MIB = 64.0                  # per forward: STFT window, workspace, allocator rounding
_MIB = 1 << 20


def _how_to_get() -> str:
    """Naming commands that exist here (decided in one place, weights.how_to_get)."""
    return how_to_get("zipenhancer")


def _folder_problem(path: Path) -> str | None:
    """Why ``path`` (a model folder, or the weight file inside one) is not usable; None if it is."""
    if path.is_file():
        folder = path.parent
        if not (folder / CONFIG_FILE).is_file():
            return f"{folder / CONFIG_FILE} is missing (it must sit beside {path.name})"
        return None
    if not path.exists():
        return f"{path} does not exist"
    if not path.is_dir():
        return f"{path} is neither a model folder nor a weight file"
    for name in (CONFIG_FILE, WEIGHTS_FILE):
        if not (path / name).is_file():
            return f"{path / name} is missing"
    return None


def _accept(path: Path) -> Path | None:
    return path if _folder_problem(path) is None else None


def _split(path: Path) -> tuple[Path, Path]:
    """(model folder, weight file) of an accepted path."""
    return (path.parent, path) if path.is_file() else (path, path / WEIGHTS_FILE)


def _cache_candidates() -> list[tuple[str, Path]]:
    """Where ModelScope versions put the model: the SDK's ``hub/models/<owner>/<name>`` (and
    ``models/<owner>/<name>`` when MODELSCOPE_CACHE is set), the older layout without
    ``models/``, and the newer hub client's ``models/<owner>--<name>/snapshots/<rev>``."""
    root = modelscope_cache()
    owner, name = MODEL_ID.split("/")
    paths = [root / "hub" / "models" / owner / name, root / "models" / owner / name,
             root / "hub" / owner / name, root / owner / name]
    snaps = root / "models" / f"{owner}--{name}" / "snapshots"
    found = sorted((p for p in snaps.iterdir() if p.is_dir()), key=lambda p: p.stat().st_mtime,
                   reverse=True) if snaps.is_dir() else []
    paths += found or [snaps / "<revision>"]
    return [("modelscope-cache", p) for p in paths]


def _read_config(folder: Path) -> dict:
    """The whole configuration.json; a missing or unreadable file is a WeightsError naming it."""
    cfg_path = folder / CONFIG_FILE
    try:
        text = cfg_path.read_text(encoding="utf-8")
    except OSError as exc:
        raise WeightsError(f"ZipEnhancer: cannot read {cfg_path} ({exc.strerror or exc}). "
                           + _how_to_get(), (str(cfg_path),)) from exc
    try:
        config = json.loads(text)
    except ValueError as exc:
        raise WeightsError(f"ZipEnhancer: {cfg_path} is not valid JSON ({exc}); the model folder "
                           "looks damaged. " + _how_to_get(), (str(cfg_path),)) from exc
    if not isinstance(config, dict):
        raise WeightsError(f"ZipEnhancer: {cfg_path} holds a {type(config).__name__}, not a "
                           "JSON object. " + _how_to_get(), (str(cfg_path),))
    return config


def read_hparams(folder: Path) -> dict:
    """The network's hyper-parameters from ``folder``'s configuration.json ("model" object)."""
    cfg_path = folder / CONFIG_FILE
    model = _read_config(folder).get("model")
    if not isinstance(model, dict):
        raise WeightsError(f"ZipEnhancer: {cfg_path} has no \"model\" object with the network's "
                           "hyper-parameters. " + _how_to_get(), (str(cfg_path),))
    missing = [k for k in REQUIRED_HPARAMS if k not in model]
    if missing:
        raise WeightsError(f"ZipEnhancer: {cfg_path} lacks {', '.join(missing)} in its \"model\" "
                           "object. " + _how_to_get(), (str(cfg_path),))
    ints_ok = all(isinstance(model[k], int) and not isinstance(model[k], bool) and model[k] > 0
                  for k in ("dense_channel", "num_tsconformers", "model_num_spks"))
    if not ints_ok or not isinstance(model["former_conf"], dict) \
            or not isinstance(model["batch_first"], bool):
        raise WeightsError(f"ZipEnhancer: {cfg_path} has hyper-parameters of the wrong type "
                           "(dense_channel, num_tsconformers, model_num_spks: positive integers; "
                           "former_conf: object; batch_first: boolean)", (str(cfg_path),))
    return {k: model[k] for k in REQUIRED_HPARAMS}


def _is_random_marked(folder: Path) -> bool:
    try:
        own = _read_config(folder).get(OWN_CONFIG_KEY)
    except WeightsError:
        return False  # load() reports the damaged file; resolving stays cheap and quiet
    return isinstance(own, dict) and own.get(RANDOM_WEIGHTS_MARKER) is True


class ZipEnhancerBackend(Backend):
    """ModelScope ZipEnhancer (2.0 M parameters), 16 kHz, 2 s windows."""

    name = "zipenhancer"
    sample_rate = 16_000
    window_seconds = 2.0
    overlap_seconds = 0.5
    TYPICAL_SPEED = {"cuda": 150.0, "cpu": 0.7}   # H100 batch >= 8; 2-core CPU
    OPTIONS = (
        BackendOption("window_seconds", float, 2.0, "window the scenes are cut into (s); device "
                      "memory grows with its square", minimum=0.05),
        BackendOption("overlap_seconds", float, 0.5, "overlap between windows (s)", minimum=0.0),
    )

    def __init__(self, weights: WeightsInfo, model_dir: str | os.PathLike,
                 weights_file: str | os.PathLike | None = None,
                 window_seconds: float = 2.0, overlap_seconds: float = 0.5):
        super().__init__(weights)
        self.window_seconds, self.overlap_seconds = check_windowing(self.name, window_seconds,
                                                                    overlap_seconds)
        self.model_dir = Path(model_dir)
        self.weights_file = Path(weights_file) if weights_file else self.model_dir / WEIGHTS_FILE
        self.net = None   # torch.nn.Module once loaded

    # -- finding and writing weights ---------------------------------------------------------
    @classmethod
    def resolve(cls, weights_path: str | os.PathLike | None = None,
                **options) -> "ZipEnhancerBackend":
        """Find the model folder (explicit path, $WHISPERJAV_ENHANCE_ZIPENHANCER_WEIGHTS, then the
        ModelScope cache) without loading it; a miss is a WeightsError saying where it looked."""
        options = cls.check_options(options)
        for given, label in ((weights_path, "--weights"), (os.environ.get(ENV_VAR), ENV_VAR)):
            if given:
                problem = _folder_problem(Path(given).expanduser())
                if problem:
                    raise WeightsError(f"ZipEnhancer: {label} {given} is not a usable ModelScope "
                                       f"model folder: {problem}. " + _how_to_get(), (str(given),))
                break  # first_existing takes the same one
        found, origin = first_existing(weights_path, ENV_VAR, _cache_candidates(), _accept,
                                       "ZipEnhancer", _how_to_get())
        folder, weights_file = _split(found)
        random_marked = _is_random_marked(folder)
        desc = f"ZipEnhancer 16 kHz ({MODEL_ID})" + (", RANDOM TEST WEIGHTS" if random_marked else "")
        shown = folder if weights_file.name == WEIGHTS_FILE else weights_file
        info = WeightsInfo(str(shown), origin, random_marked, desc)
        return cls(info, folder, weights_file, **options)

    @classmethod
    def write_random_weights(cls, folder: str | os.PathLike, seed: int = 0) -> Path:
        """Write a model folder in ModelScope's real layout with random-initialised weights,
        marked with weights.RANDOM_WEIGHTS_MARKER. For tests and benchmarks only; returns the
        folder."""
        from .zipenhancer_net import save_random_model_folder

        return save_random_model_folder(Path(folder), seed)

    # -- lifecycle ---------------------------------------------------------------------------
    def load(self, device) -> None:
        import torch

        from .zipenhancer_net import load_network

        net, random_marked = load_network(self.model_dir, self.weights_file)
        if random_marked and not self.weights.random_test_weights:
            self.weights = dataclasses.replace(
                self.weights, random_test_weights=True,
                description=self.weights.description + ", RANDOM TEST WEIGHTS")
        self.device = torch.device(device)
        self.net = net.to(self.device)

    def close(self) -> None:
        self.net = None

    # -- inference ---------------------------------------------------------------------------
    def enhance_windows(self, batch):
        """[B, T] float32 tensor on the device -> [B, T] (zipenhancer_net.enhance)."""
        from .zipenhancer_net import enhance

        if self.net is None:
            raise RuntimeError("ZipEnhancerBackend.load() must be called before enhancing")
        if batch.dim() != 2:
            raise ValueError(f"expected a [batch, samples] tensor, got shape {tuple(batch.shape)}")
        return enhance(self.net, batch)

    # -- memory model ------------------------------------------------------------------------
    def vram_bytes(self, batch: int, window_samples: int) -> int:
        padded = max(MIN_FORWARD_SAMPLES, -(-int(window_samples) // HOP) * HOP)
        sec = padded / self.sample_rate
        per_window_mib = (VRAM_QUAD_MIB_PER_S2 * sec * sec + VRAM_LIN_MIB_PER_S * sec) * VRAM_MARGIN
        return int((max(1, int(batch)) * per_window_mib + VRAM_FIXED_MIB) * _MIB)


# The torch half's names, importable from here as before (loaded on first use, not with this
# module, so the parent never imports torch).
_NET_NAMES = ("build_network", "read_state_dict", "load_network")


def __getattr__(name: str):
    if name in _NET_NAMES:
        from . import zipenhancer_net

        return getattr(zipenhancer_net, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
