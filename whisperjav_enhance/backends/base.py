"""The small interface every enhancer implements, and what a loaded backend reports about itself.

A backend is constructed cheaply in any process (it only resolves where its weights are), then
``load(device)`` builds the network in the worker. Windowed backends take a batch of
equal-length windows at their own sample rate and return a batch of the same shape; the engine
does cutting, batching and overlap-add. Streaming backends (``windowed = False``) take one whole
scene at a time and are free to keep their own state per scene.
"""

from __future__ import annotations

import abc
from dataclasses import dataclass
from typing import ClassVar

import numpy as np


@dataclass(frozen=True)
class WeightsInfo:
    """Where a backend's weights came from; copied into every summary and benchmark report."""

    path: str | None            # file or folder loaded; None for backends without weights
    origin: str                 # "explicit", "env:<VAR>", "hf-cache", "clearvoice-checkpoints",
                                # "modelscope-cache", "bundled", "none"
    random_test_weights: bool   # True when the checkpoint was written by whisperjav_enhance.testing
    description: str = ""       # one line for people, e.g. "MossFormer2_SE_48K, 55.3 M parameters"

    def as_dict(self) -> dict:
        return {"path": self.path, "origin": self.origin,
                "random_test_weights": self.random_test_weights, "description": self.description}


class Backend(abc.ABC):
    """One speech enhancer. Subclasses set the class attributes and implement the methods."""

    name: ClassVar[str]                 # canonical name, e.g. "mossformer2"
    sample_rate: ClassVar[int]          # Hz the network runs at; scenes are resampled to it
    windowed: ClassVar[bool] = True     # False: enhance_scene() is called per whole scene
    window_seconds: float = 4.0         # window length the engine cuts scenes into
    overlap_seconds: float = 1.0        # overlap between consecutive windows
    needs_cuda_for_speed: ClassVar[bool] = True  # False for CPU-native backends (more workers)

    def __init__(self, weights: WeightsInfo):
        self.weights = weights
        self.device = None

    # -- lifecycle ---------------------------------------------------------------------------
    @abc.abstractmethod
    def load(self, device) -> None:
        """Build the network on ``device`` (a torch.device) and load the weights."""

    def close(self) -> None:
        """Drop the network; the worker calls this before it retires."""

    # -- inference ---------------------------------------------------------------------------
    def enhance_windows(self, batch):
        """[B, T] float32 tensor on the device -> enhanced [B, T]; called under inference mode."""
        raise NotImplementedError(f"{self.name} is not a windowed backend")

    def enhance_scene(self, audio: np.ndarray) -> np.ndarray:
        """Whole scene (mono float32 at ``sample_rate``) -> enhanced, same length."""
        raise NotImplementedError(f"{self.name} is a windowed backend")

    # -- memory model ------------------------------------------------------------------------
    def vram_bytes(self, batch: int, window_samples: int) -> int:
        """Estimated peak device bytes a forward of ``batch`` windows needs, above the weights.

        The engine sizes batches from this and a budget; it must over-estimate rather than under.
        """
        return 0

    def describe(self) -> dict:
        return {"backend": self.name, "sample_rate": self.sample_rate,
                "window_seconds": self.window_seconds if self.windowed else None,
                "overlap_seconds": self.overlap_seconds if self.windowed else None,
                "weights": self.weights.as_dict()}
