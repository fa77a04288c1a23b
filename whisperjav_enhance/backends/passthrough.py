"""Identity backend: resampling and everything around the model, no network. For dry runs and for
testing windowing, batching, the pool and the pipeline without weights."""

from __future__ import annotations

from .base import Backend, WeightsInfo


class PassthroughBackend(Backend):
    name = "passthrough"
    sample_rate = 48_000
    needs_cuda_for_speed = False

    def __init__(self, weights: WeightsInfo | None = None, sample_rate: int | None = None,
                 window_seconds: float = 4.0, overlap_seconds: float = 1.0):
        super().__init__(weights or WeightsInfo(None, "none", False, "identity, no weights"))
        if sample_rate is not None:
            self.sample_rate = int(sample_rate)
        self.window_seconds = window_seconds
        self.overlap_seconds = overlap_seconds

    @classmethod
    def resolve(cls, weights_path=None, **kwargs) -> "PassthroughBackend":
        return cls(**kwargs)

    def load(self, device) -> None:
        self.device = device

    def enhance_windows(self, batch):
        return batch.clone()

    def vram_bytes(self, batch: int, window_samples: int) -> int:
        return 2 * 4 * batch * window_samples
