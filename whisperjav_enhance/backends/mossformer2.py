"""MossFormer2_SE_48K backend: clearvoice's network, with everything around it in torch on the
worker's device (features, STFT, mask, inverse STFT), and weights found and loaded strictly here.
This module needs no torch (the parent finds weights with it); the torch half, loaded by the
worker, is mossformer2_net.py.

Per window (``[B, T]`` float audio at 48 kHz), the math of clearvoice's
``decode_one_audio_mossformer2_se_48k`` (utils/decode.py, utils/misc.py; hamming 1920/384,
FFT 1920, 60 mel bins):

    x * 32768 -> Kaldi fbank (60) + delta + delta-delta -> [B, frames, 180] -> network
    -> mask [B, frames, 961];  STFT(x) (center=False, symmetric hamming) * mask (real and imag)
    -> inverse STFT with the input's length -> / 32768

Differences from clearvoice, all deliberate:
- Dither: clearvoice computes fbank with ``dither=1.0`` (Gaussian noise of one 16-bit step added
  to every frame, fresh on every call), so its output is not reproducible. We keep the amplitude
  (default ``dither=1.0``) but add a fixed, seeded noise pattern indexed by frame, so the same
  window always gives the same output, whatever it is batched with. The amplitude matters
  because clearvoice never computes features without it, so dithered silence (log-mel ~-3..12,
  mean ~7) is the silence the network knows. Without dither, digital silence, and the zeros the
  engine pads short scenes with (up to a multiple of window/8: a 0.6 s scene is 40% padding),
  give ``log(float32 eps)`` = -15.9 in every bin, plus a delta spike where speech meets padding;
  with it, padding looks like the quiet after an utterance. Audible signal is unaffected (one
  16-bit step against thousands). ``dither=0`` is the exact noiseless computation (the parity
  test against clearvoice's math uses it). Reflect-padding instead would need the engine to
  pass each row's real length and would feed the network mirrored speech; dither needs neither.
- The STFT runs on the unscaled audio (the mask is linear in it, so scaling by 32768 and back is
  an identity up to rounding); only the features see the 16-bit scale the network was trained on.
- Every window is padded internally with zeros (dithered like the rest, see above) to at least
  ``MIN_FRAMES`` frames and to a whole hop, so every input sample lies under a frame
  (clearvoice returns zeros for the last ``(T - 1920) % 384`` samples), then trimmed back to
  exactly ``T`` samples.
- Long scenes are cut, batched and overlap-added by the engine, not by clearvoice's 4 s / 3 s
  segment loop; no autograd is recorded.

Weights: clearvoice's layout is a folder with a text file ``last_best_checkpoint`` whose first
line names the checkpoint file beside it (``last_best_checkpoint.pt`` in the Hugging Face repo
``alibabasglab/MossFormer2_SE_48K``); the checkpoint is ``{'model': state_dict}`` with keys
possibly prefixed ``module.``. clearvoice falls back to random weights when a key is missing; we
refuse with a :class:`WeightsError` naming the file.
"""

from __future__ import annotations

import importlib
import importlib.util
import sys
import types
from pathlib import Path

from .. import weights as weights_mod
from ..devices import is_cuda
from ..errors import WeightsError
from .base import Backend, BackendOption, WeightsInfo, check_windowing

MODEL_NAME = "MossFormer2_SE_48K"
HF_REPO_ID = weights_mod.MOSSFORMER2.repo_id   # where the weights come from (weights.SOURCES)
ENV_VAR = weights_mod.MOSSFORMER2.env_var
POINTER_FILE = "last_best_checkpoint"          # text file naming the checkpoint beside it
CHECKPOINT_FILE = "last_best_checkpoint.pt"    # the checkpoint's name in the HF repo
POINTER_MAX_BYTES = 1024                       # a pointer is one short line of text
NETWORK_SUBMODULE = "models.mossformer2_se.mossformer2_se_wrapper"

SAMPLE_RATE_HZ = 48_000
MAX_WAV_VALUE = 32768.0      # clearvoice scales float audio to 16-bit units before the fbank
WIN_LEN = 1920               # STFT and fbank frame, samples (40 ms)
WIN_INC = 384                # hop, samples (8 ms)
FFT_LEN = 1920               # STFT size (961 one-sided bins = the mask's width)
NUM_MELS = 60                # fbank bins; with deltas the network sees 3 * 60 = 180 features
DITHER = 1.0                 # fbank dither std, 16-bit steps (clearvoice's; seeded here, see top)
# The network's FSMN blocks call ``squeeze()`` without a dim: with one frame and a batch above 1
# they broadcast rows of different windows together. Two frames (48 ms) avoid that.
MIN_FRAMES = 2

MiB = 1 << 20
# Memory model from docs/measurements.md (H100, inference mode, network only): peak above the weights
# is ~7.4-7.6 MiB per second of audio in the batch for batches >= 64 s of audio, up to ~9 MiB/s
# for small batches, plus ~40 MiB fixed. STFT/iSTFT and features run before or after the
# network's activations exist and need less than that. Margin and workspace keep it an
# over-estimate (the engine must never be told a batch fits when it does not).
VRAM_BYTES_PER_AUDIO_SECOND = int(7.6 * MiB)
VRAM_MARGIN = 1.3
VRAM_WORKSPACE_BYTES = 256 * MiB

# How to get the weights, naming commands that exist here (decided once, in weights.how_to_get).
HOW_TO_GET = weights_mod.how_to_get("mossformer2")

def import_clearvoice_submodule(name: str):
    """Import ``clearvoice.<name>`` without running clearvoice's top-level ``__init__`` (which
    imports torchaudio, librosa and every other model).

    A bare package module stands in for ``clearvoice`` while the subpackage is imported, and is
    taken out again afterwards, so a later real ``import clearvoice`` in the same process (the
    subtitle pipeline uses it) still runs the real ``__init__``. ImportError when clearvoice is
    not installed or the submodule's own imports fail.
    """
    full = f"clearvoice.{name}"
    if "clearvoice" in sys.modules:
        return importlib.import_module(full)
    spec = importlib.util.find_spec("clearvoice")
    if spec is None or not spec.submodule_search_locations:
        raise ImportError("clearvoice is not installed (pip install --no-deps clearvoice)")
    bare = types.ModuleType("clearvoice")
    bare.__path__ = list(spec.submodule_search_locations)
    bare.__file__ = spec.origin
    sys.modules["clearvoice"] = bare
    try:
        return importlib.import_module(full)
    finally:
        if sys.modules.get("clearvoice") is bare:
            del sys.modules["clearvoice"]


# -- finding the checkpoint ------------------------------------------------------------------
def _is_pointer(path: Path) -> bool:
    """clearvoice's ``last_best_checkpoint``: a short text file (a checkpoint is binary)."""
    try:
        if path.stat().st_size > POINTER_MAX_BYTES:
            return False
        head = path.read_bytes()
    except OSError:
        return False
    if b"\0" in head:
        return False
    try:
        return bool(head.decode("utf-8").strip())
    except UnicodeDecodeError:
        return False


def follow_pointer(path: Path) -> Path:
    """The checkpoint file ``path`` stands for: itself, or the file its first line names.

    The target is looked up beside the pointer without resolving symlinks, so a Hugging Face
    snapshot (symlinks into ``blobs/``) finds its sibling.
    """
    if not _is_pointer(path):
        return path
    name = path.read_text(encoding="utf-8").strip().splitlines()[0].strip()
    target = path.parent / name
    if not target.is_file():
        raise WeightsError(f"{path} names the checkpoint {name!r}, but {target} does not exist "
                           f"(an incomplete download?). {HOW_TO_GET}", (str(path),))
    if _is_pointer(target):
        raise WeightsError(f"{path} names {target}, which is not a checkpoint file either. "
                           f"{HOW_TO_GET}", (str(path),))
    return target


def accept_weights(path: Path) -> Path | None:
    """Checkpoint file for an explicit path or cache candidate, or None if there is none.

    A file is a checkpoint or a pointer; a folder must hold the pointer (or the checkpoint)
    directly or under ``MossFormer2_SE_48K/`` (clearvoice's ``checkpoints/`` folder).
    """
    if path.is_file():
        return follow_pointer(path)
    if path.is_dir():
        for rel in (POINTER_FILE, f"{MODEL_NAME}/{POINTER_FILE}", CHECKPOINT_FILE,
                    f"{MODEL_NAME}/{CHECKPOINT_FILE}"):
            if (path / rel).is_file():
                return follow_pointer(path / rel)
    return None


def weight_candidates() -> list[tuple[str, Path]]:
    """Standard places, in order: HF cache, then clearvoice's ``checkpoints/`` layout relative to
    the current folder and inside the installed clearvoice package."""
    out = [("hf-cache", p) for p in weights_mod.hf_snapshot_candidates(HF_REPO_ID, POINTER_FILE)]
    rel = Path("checkpoints") / MODEL_NAME / POINTER_FILE
    out.append(("clearvoice-checkpoints", Path.cwd() / rel))
    spec = importlib.util.find_spec("clearvoice")
    if spec is not None and spec.submodule_search_locations:
        for loc in spec.submodule_search_locations:
            out.append(("clearvoice-checkpoints", Path(loc) / rel))
    return out


# -- signal path -----------------------------------------------------------------------------
def stft_padded_length(n_samples: int) -> int:
    """Samples a window is padded to: at least MIN_FRAMES frames, and a whole number of hops
    past the first frame, so frames cover every sample."""
    n = max(n_samples, WIN_LEN + (MIN_FRAMES - 1) * WIN_INC)
    extra = (n - WIN_LEN) % WIN_INC
    return n + (WIN_INC - extra if extra else 0)


class MossFormer2Backend(Backend):
    """ClearerVoice's MossFormer2_SE_48K speech enhancer (55.3 M parameters, 48 kHz)."""

    name = "mossformer2"
    sample_rate = SAMPLE_RATE_HZ
    TYPICAL_SPEED = {"cuda": 900.0, "cpu": 2.0}   # H100 batch 32 x 4 s; 2-core CPU
    OPTIONS = (
        BackendOption("window_seconds", float, 4.0, "window the scenes are cut into (s)",
                      minimum=0.05),
        BackendOption("overlap_seconds", float, 1.0, "overlap between windows (s)", minimum=0.0),
        BackendOption("dither", float, DITHER, "fbank dither in 16-bit steps (0: exact, noiseless "
                      "features; see the module docstring)", minimum=0.0, maximum=100.0),
    )

    def __init__(self, weights: WeightsInfo, window_seconds: float = 4.0,
                 overlap_seconds: float = 1.0, dither: float = DITHER):
        super().__init__(weights)
        self.window_seconds, self.overlap_seconds = check_windowing(self.name, window_seconds,
                                                                    overlap_seconds)
        self.dither = float(dither)
        self.net = None
        self.fbank = None
        self.window = None

    # -- weights ---------------------------------------------------------------------------
    @classmethod
    def resolve(cls, weights_path=None, **options) -> "MossFormer2Backend":
        """Find the checkpoint (explicit path, ${ENV_VAR}, HF cache, clearvoice's checkpoints/)
        and return the backend unloaded, without torch: the worker's load reads it strictly."""
        options = cls.check_options(options)
        path, origin = weights_mod.first_existing(weights_path, ENV_VAR, weight_candidates(),
                                                  accept_weights, MODEL_NAME, HOW_TO_GET)
        random_init = _checked_archive(path)
        desc = f"{MODEL_NAME}, 55.3 M parameters" + (" (RANDOM test weights)" if random_init else "")
        return cls(WeightsInfo(str(path), origin, random_init, desc), **options)

    @classmethod
    def write_random_weights(cls, folder, seed: int = 0) -> Path:
        """Write a random-initialised checkpoint in clearvoice's layout (``last_best_checkpoint``
        pointing at ``last_best_checkpoint.pt``), marked as random; for tests and benchmarks.
        Returns the pointer file."""
        from .mossformer2_net import save_random_checkpoint

        return save_random_checkpoint(Path(folder), seed)

    # -- lifecycle -------------------------------------------------------------------------
    def load(self, device) -> None:
        import torch

        from .kaldi_features import FbankOptions, KaldiFbank
        from .mossformer2_net import load_network, stft_window

        device = torch.device(device)
        if not self.weights.path:
            raise WeightsError(f"{MODEL_NAME}: no checkpoint was resolved. {HOW_TO_GET}")
        path = Path(self.weights.path)
        if not path.is_file():
            raise WeightsError(f"{MODEL_NAME} checkpoint {path} does not exist. {HOW_TO_GET}",
                               (str(path),))
        self.net = load_network(path).to(device)
        opts = FbankOptions(sample_rate_hz=SAMPLE_RATE_HZ, frame_length=WIN_LEN,
                            frame_shift=WIN_INC, num_mel_bins=NUM_MELS, window_type="hamming",
                            dither=self.dither)
        self.fbank = KaldiFbank(opts).to(device)
        self.window = stft_window(device)
        self.device = device

    def close(self) -> None:
        on_cuda = is_cuda(self.device)
        self.net = self.fbank = self.window = None
        if on_cuda:
            import torch

            torch.cuda.empty_cache()

    # -- inference -------------------------------------------------------------------------
    def features(self, x):
        """Network input for float audio ``x`` [B, T] (a tensor): [B, frames, 180]."""
        return self.fbank.with_deltas(x * MAX_WAV_VALUE)

    def enhance_windows(self, batch):
        import torch

        from .mossformer2_net import masked_resynthesis

        if self.net is None:
            raise RuntimeError("MossFormer2Backend.load(device) must be called first")
        if batch.dim() != 2:
            raise ValueError(f"expected a [B, T] batch, got shape {tuple(batch.shape)}")
        n = batch.shape[-1]
        with torch.inference_mode():
            x = batch.to(self.device, torch.float32)
            pad = stft_padded_length(n) - n
            if pad:
                x = torch.nn.functional.pad(x, (0, pad))
            feats = self.features(x)
            mask = self.net(feats)[-1]
            del feats  # the STFT below runs after the network's activations are gone
            y = masked_resynthesis(x, mask, self.window)
            return y[:, :n].contiguous()

    # -- memory model ----------------------------------------------------------------------
    def vram_bytes(self, batch: int, window_samples: int) -> int:
        audio_seconds = batch * stft_padded_length(window_samples) / SAMPLE_RATE_HZ
        return int(VRAM_MARGIN * VRAM_BYTES_PER_AUDIO_SECOND * audio_seconds
                   + VRAM_WORKSPACE_BYTES)

    def describe(self) -> dict:
        d = super().describe()
        d["fbank_dither"] = self.dither
        return d


def _checked_archive(path: Path) -> bool:
    """What the parent can check of a checkpoint without torch: a zip-format file must be a whole
    archive (an interrupted download is not); returns whether it carries the random-weights
    marker. The worker's strict load checks the rest (keys, shapes, no Python objects)."""
    try:
        return weights_mod.carries_random_marker(path)
    except weights_mod.DamagedCheckpoint as exc:
        raise WeightsError(f"cannot read the {MODEL_NAME} checkpoint {path}: it is truncated, "
                           f"corrupt or not a torch checkpoint ({exc}). {HOW_TO_GET}",
                           (str(path),)) from None


# The torch half's names, importable from here as before (loaded on first use, not with this
# module, so the parent never imports torch).
_NET_NAMES = ("network_class", "build_network", "read_checkpoint", "state_dict_from",
              "check_state_dict", "stft_window", "masked_resynthesis", "load_network")


def __getattr__(name: str):
    if name in _NET_NAMES:
        from . import mossformer2_net

        return getattr(mossformer2_net, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
