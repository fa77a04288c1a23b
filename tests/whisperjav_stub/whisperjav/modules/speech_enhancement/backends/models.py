"""Stand-ins for the model-based enhancers: ClearVoice, BS-RoFormer, ZipEnhancer, htdemucs. Each
keeps its model where the real class does and runs at the real class's rate."""

from __future__ import annotations

import numpy as np

from .common import StubEnhancer, moving_average, one_pole

CLEARVOICE_MODELS = ("MossFormer2_SE_48K", "FRCRN_SE_16K", "MossFormerGAN_SE_16K",
                     "MossFormer2_SS_16K")


class ClearVoiceEnhancer(StubEnhancer):
    _name = "clearvoice"
    MODELS = CLEARVOICE_MODELS

    def __init__(self, model: str = "MossFormer2_SE_48K", device: str | None = None):
        super().__init__(model)
        self.device = device

    @property
    def display_name(self) -> str:
        return f"ClearVoice ({self._model_name})"

    def _rate(self) -> int:
        return 48_000 if self._model_name.endswith("48K") else 16_000

    def _process(self, x, rate):
        width = 9 if self._model_name.startswith("FRCRN") else 5
        return 0.9 * moving_average(x, width), rate


class BSRoformerEnhancer(StubEnhancer):
    _name = "bs-roformer"
    MODELS = ("vocals", "other")

    def __init__(self, model: str = "vocals"):
        super().__init__(model)

    @property
    def display_name(self) -> str:
        return f"BS-RoFormer ({self._model_name})"

    def _rate(self) -> int:
        return 44_100

    def _process(self, x, rate):
        vocals = one_pole(x, rate, 150.0, high=True)
        return (vocals if self._model_name == "vocals" else x - vocals), rate


class ZipEnhancerEnhancer(StubEnhancer):
    """Keeps its variant as ``model_variant``."""

    _name = "zipenhancer"
    MODELS = ("torch", "onnx")

    def __init__(self, model: str = "torch"):
        if model not in self.MODELS:
            raise ValueError(f"zipenhancer: unknown variant {model!r}; supported: {list(self.MODELS)}")
        self.model_variant = model
        self._ready = False

    @property
    def display_name(self) -> str:
        return f"ZipEnhancer ({self.model_variant})"

    def _rate(self) -> int:
        return 16_000

    def _process(self, x, rate):
        return (0.8 * np.tanh(1.5 * x)).astype(np.float32), rate


class HTDemucsEnhancer(StubEnhancer):
    """Never available in the stand-in (its package is not installed)."""

    _name = "htdemucs"
    MODELS = ("htdemucs",)

    def __init__(self, model: str = "htdemucs"):
        super().__init__(model)

    def _rate(self) -> int:
        return 44_100

    def _process(self, x, rate):
        return x, rate
