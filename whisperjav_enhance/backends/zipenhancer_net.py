"""The torch half of the ZipEnhancer backend (zipenhancer.py): ModelScope's network built from a
model folder, the strict weight reader, and one forward with ModelScope's STFT helpers. Only a
worker imports this module, when it loads the model: the parent finds weights without torch."""

from __future__ import annotations

import json
import os
from pathlib import Path

import torch
from modelscope.models.audio.ans.zipenhancer import (AttrDict, ZipEnhancer, mag_pha_istft,
                                                     mag_pha_stft)

from ..errors import WeightsError
from ..weights import RANDOM_WEIGHTS_MARKER
from .zipenhancer import (COMPRESS, CONFIG_FILE, HOP, MIN_FORWARD_SAMPLES, N_FFT, OWN_CONFIG_KEY,
                          SILENT_MEAN_SQUARE, TEST_HPARAMS, WEIGHTS_FILE, WIN, _how_to_get,
                          read_hparams)


def build_network(folder: Path) -> torch.nn.Module:
    """A ZipEnhancer built from ``folder``'s configuration.json, with untrained weights."""
    hp = read_hparams(folder)
    try:
        return ZipEnhancer(AttrDict(hp))
    except Exception as exc:  # the constructor raises TypeError/ValueError/... on odd values
        cfg_path = folder / CONFIG_FILE
        raise WeightsError(f"ZipEnhancer: the hyper-parameters in {cfg_path} do not build the "
                           f"network ({type(exc).__name__}: {exc})", (str(cfg_path),)) from exc


def read_state_dict(weights_file: Path) -> tuple[dict, bool]:
    """The network's state dict from a ModelScope weight file, and whether it is marked random.

    Two layouts, as ModelScope's own loader reads them: ``{"generator": ZipEnhancer state dict}``
    (the released model) and ``{"state_dict": ZipenhancerDecorator state dict}`` (models trained
    with ModelScope, keys prefixed ``model.``). Anything else is a WeightsError naming the file.
    """
    where = (str(weights_file),)
    try:
        ckpt = torch.load(str(weights_file), map_location="cpu", weights_only=True)
    except Exception as exc:  # truncated zip, foreign pickle, I/O error: all the same to a user
        raise WeightsError(f"ZipEnhancer: cannot load {weights_file} "
                           f"({type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''});"
                           " the file is damaged, truncated, or not a PyTorch weight file. "
                           + _how_to_get(), where) from exc
    if not isinstance(ckpt, dict):
        raise WeightsError(f"ZipEnhancer: {weights_file} holds a {type(ckpt).__name__}, not a "
                           "checkpoint dictionary", where)
    random_marked = ckpt.get(RANDOM_WEIGHTS_MARKER) is True
    if isinstance(ckpt.get("state_dict"), dict):
        sd = ckpt["state_dict"]
        foreign = [k for k in sd if not str(k).startswith("model.")]
        if foreign:
            raise WeightsError(f"ZipEnhancer: {weights_file} has a \"state_dict\" whose keys are "
                               f"not the decorator's model.* keys (e.g. {foreign[:3]})", where)
        sd = {k[len("model."):]: v for k, v in sd.items()}
    elif isinstance(ckpt.get("generator"), dict):
        sd = ckpt["generator"]
    else:
        raise WeightsError(f"ZipEnhancer: {weights_file} has neither a \"generator\" nor a "
                           f"\"state_dict\" entry (top-level keys: {sorted(map(str, ckpt))[:8]})",
                           where)
    bad = [k for k, v in sd.items() if not isinstance(v, torch.Tensor)]
    if bad:
        raise WeightsError(f"ZipEnhancer: {weights_file} has non-tensor entries {bad[:3]}", where)
    return sd, random_marked


def load_network(folder: Path, weights_file: Path) -> tuple[torch.nn.Module, bool]:
    """Build the network from configuration.json and load the weights with a strict key and
    shape check. Returns the network (on the CPU, in eval mode) and whether it is marked random."""
    net = build_network(folder)
    sd, random_marked = read_state_dict(weights_file)
    try:
        net.load_state_dict(sd, strict=True)
    except RuntimeError as exc:
        lines = [ln.strip() for ln in str(exc).splitlines() if ln.strip()]
        detail = " ".join(lines[:4])[:600]
        raise WeightsError(f"ZipEnhancer: {weights_file} does not match the network that "
                           f"{folder / CONFIG_FILE} describes ({detail}). Use the weight file and "
                           "configuration.json of the same model folder.",
                           (str(weights_file), str(folder / CONFIG_FILE))) from exc
    net.eval()
    net.requires_grad_(False)
    return net, random_marked


def enhance(net: torch.nn.Module, batch: torch.Tensor) -> torch.Tensor:
    """[B, T] float32 on the device -> [B, T]: each row normalised to RMS 1 on its own, enhanced,
    and scaled back to its input level."""
    n = int(batch.shape[1])
    padded = max(MIN_FORWARD_SAMPLES, -(-n // HOP) * HOP)
    with torch.inference_mode():
        x = torch.nn.functional.pad(batch.float(), (0, padded - n))
        energy = torch.sum(x ** 2.0, dim=1, keepdim=True)
        silent = energy <= padded * SILENT_MEAN_SQUARE
        norm = torch.sqrt(padded / torch.where(silent, torch.ones_like(energy), energy))
        mag, pha, _ = mag_pha_stft(x * norm, N_FFT, HOP, WIN, compress_factor=COMPRESS,
                                   center=True)
        amp_g, pha_g, _, _, _ = net(mag, pha)
        wav = mag_pha_istft(amp_g, pha_g, N_FFT, HOP, WIN, compress_factor=COMPRESS, center=True)
        if wav.shape[1] != padded:
            raise RuntimeError(f"ZipEnhancer gave {wav.shape[1]} samples for {padded}: the "
                               "network changed the STFT frame count")
        wav = torch.where(silent, torch.zeros_like(wav), wav / norm)
        return wav[:, :n].contiguous()


def save_random_model_folder(folder: Path, seed: int) -> Path:
    """A model folder in ModelScope's real layout with random-initialised weights
    (configuration.json + pytorch_model.bin under "generator"), both marked as random."""
    folder.mkdir(parents=True, exist_ok=True)
    config = {
        "framework": "pytorch",
        "task": "acoustic-noise-suppression",
        "model": {"type": "speech_zipenhancer_ans_multiloss_16k_base", **TEST_HPARAMS},
        "pipeline": {"type": "speech_zipenhancer_ans_multiloss_16k_base"},
        OWN_CONFIG_KEY: {RANDOM_WEIGHTS_MARKER: True},
    }
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        net = ZipEnhancer(AttrDict(json.loads(json.dumps(TEST_HPARAMS))))
    ckpt = {"generator": net.state_dict(), RANDOM_WEIGHTS_MARKER: True}
    tmp = folder / (WEIGHTS_FILE + ".partial")
    torch.save(ckpt, str(tmp))
    os.replace(tmp, folder / WEIGHTS_FILE)
    (folder / CONFIG_FILE).write_text(json.dumps(config, indent=2), encoding="utf-8")
    return folder
