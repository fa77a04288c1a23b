"""The torch half of the MossFormer2 backend (mossformer2.py): clearvoice's network class, the
strict checkpoint reader, and the STFT/mask resynthesis. Only a worker imports this module, when
it loads the model: the parent finds weights without torch."""

from __future__ import annotations

import zipfile
from pathlib import Path

import torch

from .. import weights as weights_mod
from ..errors import BackendUnavailable, WeightsError
from .mossformer2 import (CHECKPOINT_FILE, FFT_LEN, HOW_TO_GET, MODEL_NAME, NETWORK_SUBMODULE,
                          POINTER_FILE, WIN_INC, WIN_LEN, import_clearvoice_submodule)

_network_cls = None


def network_class():
    """clearvoice's ``MossFormer2_SE_48K`` wrapper class (see :func:`import_clearvoice_submodule`)."""
    global _network_cls
    if _network_cls is None:
        _network_cls = import_clearvoice_submodule(NETWORK_SUBMODULE).MossFormer2_SE_48K
    return _network_cls


def build_network() -> torch.nn.Module:
    """The bare mask network (clearvoice's ``MossFormer2_SE_48K(args).model``; ``args`` unused)."""
    try:
        cls = network_class()
    except ImportError as exc:
        raise BackendUnavailable(
            f"mossformer2 needs clearvoice's network code ({exc}); install it with "
            "`pip install --no-deps clearvoice einops rotary-embedding-torch torchinfo`") from exc
    return cls(None).model


# -- reading the checkpoint ------------------------------------------------------------------
def read_checkpoint(path: Path, mmap: bool = False) -> dict:
    """``torch.load`` with ``weights_only=True``; anything unreadable is a WeightsError.

    ``mmap`` maps tensors instead of reading them (zip-format files only), for a cheap look at
    the top-level keys in the parent process.
    """
    use_mmap = mmap and zipfile.is_zipfile(path)
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True, mmap=use_mmap)
    except Exception as exc:  # torch raises RuntimeError, UnpicklingError, EOFError, ...
        if "weights only load failed" in str(exc).lower():
            raise WeightsError(f"{path} holds Python objects besides tensors, which are not "
                               f"loaded (torch.load weights_only=True); re-save it as "
                               f"{{'model': state_dict}}. {HOW_TO_GET}", (str(path),)) from exc
        raise WeightsError(f"cannot read the {MODEL_NAME} checkpoint {path}: it is truncated, "
                           f"corrupt or not a torch checkpoint ({type(exc).__name__}: "
                           f"{str(exc).splitlines()[0] if str(exc) else ''}). "
                           f"{HOW_TO_GET}", (str(path),)) from exc
    if not isinstance(ckpt, dict):
        raise WeightsError(f"{path} holds a {type(ckpt).__name__}, not a {MODEL_NAME} checkpoint "
                           f"(expected {{'model': state_dict}}). {HOW_TO_GET}", (str(path),))
    return ckpt


def state_dict_from(ckpt: dict, path: Path) -> dict[str, torch.Tensor]:
    """The state dict under ``'model'`` (or the dict itself, as clearvoice allows), with a
    leading ``module.`` (DataParallel) taken off every key."""
    sd = ckpt["model"] if isinstance(ckpt.get("model"), dict) else ckpt
    tensors = {k: v for k, v in sd.items() if isinstance(v, torch.Tensor)}
    if not tensors:
        raise WeightsError(f"{path} has no tensors under 'model' (keys: "
                           f"{sorted(map(str, ckpt))[:8]}); not a {MODEL_NAME} checkpoint. "
                           f"{HOW_TO_GET}", (str(path),))
    return {(k[len("module."):] if k.startswith("module.") else k): v for k, v in tensors.items()}


def check_state_dict(expected: dict[str, torch.Tensor], got: dict[str, torch.Tensor],
                     path: Path) -> None:
    """Strict key and shape check with a message that says what differs (first few of each)."""
    missing = sorted(set(expected) - set(got))
    unexpected = sorted(set(got) - set(expected))
    shapes = [f"{k}: file {tuple(got[k].shape)} vs network {tuple(expected[k].shape)}"
              for k in expected if k in got and tuple(got[k].shape) != tuple(expected[k].shape)]
    if not (missing or unexpected or shapes):
        return
    parts = []
    for label, items in (("missing", missing), ("unexpected", unexpected),
                         ("shape mismatch", shapes)):
        if items:
            more = f" (+{len(items) - 5} more)" if len(items) > 5 else ""
            parts.append(f"{len(items)} {label}: {', '.join(items[:5])}{more}")
    raise WeightsError(f"{path} does not match the {MODEL_NAME} network: " + "; ".join(parts)
                       + f". Is it a {MODEL_NAME} checkpoint? {HOW_TO_GET}", (str(path),))


def stft_window(device=None) -> torch.Tensor:
    """clearvoice's STFT window: symmetric (``periodic=False``) hamming."""
    return torch.hamming_window(WIN_LEN, periodic=False, dtype=torch.float32, device=device)


def masked_resynthesis(x: torch.Tensor, mask: torch.Tensor, window: torch.Tensor) -> torch.Tensor:
    """STFT ``x`` ([B, T]), scale every bin by ``mask`` ([B, frames, 961]), inverse STFT to T."""
    spec = torch.stft(x, FFT_LEN, WIN_INC, WIN_LEN, window=window, center=False,
                      return_complex=True)                                # [B, 961, frames]
    if spec.shape[-1] != mask.shape[1] or spec.shape[1] != mask.shape[2]:
        raise RuntimeError(f"mask {tuple(mask.shape)} does not line up with the STFT "
                           f"{tuple(spec.shape)}")
    spec = spec * mask.transpose(1, 2).to(spec.real.dtype)
    return torch.istft(spec, FFT_LEN, WIN_INC, WIN_LEN, window=window, center=False,
                       length=x.shape[-1])


def load_network(path: Path) -> torch.nn.Module:
    """The network with the checkpoint at ``path`` loaded strictly (WeightsError naming the file
    and what differs otherwise), in eval mode on the CPU."""
    sd = state_dict_from(read_checkpoint(path), path)
    net = build_network()
    check_state_dict(net.state_dict(), sd, path)
    try:
        net.load_state_dict(sd, strict=True)
    except RuntimeError as exc:  # anything the check above did not foresee
        raise WeightsError(f"{path} does not load into the {MODEL_NAME} network: "
                           f"{str(exc).splitlines()[0]}. {HOW_TO_GET}", (str(path),)) from exc
    return net.eval()


def save_random_checkpoint(folder: Path, seed: int) -> Path:
    """A random-initialised checkpoint in clearvoice's layout, marked as random; returns the
    pointer file."""
    folder.mkdir(parents=True, exist_ok=True)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        net = build_network()
    torch.save({"model": net.state_dict(), weights_mod.RANDOM_WEIGHTS_MARKER: True},
               folder / CHECKPOINT_FILE)
    pointer = folder / POINTER_FILE
    pointer.write_text(CHECKPOINT_FILE + "\n", encoding="utf-8")
    return pointer
