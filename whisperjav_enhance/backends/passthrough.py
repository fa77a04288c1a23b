"""Identity backend: resampling and everything around the model, no network. For dry runs and for
testing windowing, batching, the pool and the pipeline without weights."""

from __future__ import annotations

from .base import Backend, BackendOption, WeightsInfo, check_windowing


class PassthroughBackend(Backend):
    name = "passthrough"
    sample_rate = 48_000
    needs_cuda_for_speed = False
    uses_torch = False      # numpy windows: its workers never import torch
    TYPICAL_SPEED = {"cpu": 90.0, "cuda": 90.0}   # file I/O and resampling only
    OPTIONS = (
        BackendOption("window_seconds", float, 4.0, "window the scenes are cut into (s)",
                      minimum=0.001),
        BackendOption("overlap_seconds", float, 1.0, "overlap between windows (s)", minimum=0.0),
        BackendOption("sample_rate", int, 48_000, "rate the identity runs at (Hz)",
                      minimum=4_000, maximum=384_000),
    )

    def __init__(self, weights: WeightsInfo | None = None, sample_rate: int | None = None,
                 window_seconds: float = 4.0, overlap_seconds: float = 1.0):
        super().__init__(weights or WeightsInfo(None, "none", False, "identity, no weights"))
        if sample_rate is not None:
            self.sample_rate = int(sample_rate)
        self.window_seconds, self.overlap_seconds = check_windowing(self.name, window_seconds,
                                                                    overlap_seconds)

    @classmethod
    def resolve(cls, weights_path=None, **kwargs) -> "PassthroughBackend":
        return cls(**cls.check_options(kwargs))

    def load(self, device) -> None:
        self.device = device

    def enhance_windows(self, batch):
        # A copy, never the input itself (numpy here; subclasses that use torch get tensors).
        return batch.clone() if hasattr(batch, "clone") else batch.copy()

    def vram_bytes(self, batch: int, window_samples: int) -> int:
        return 2 * 4 * batch * window_samples
