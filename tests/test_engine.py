import numpy as np
import pytest
import torch

from whisperjav_enhance import engine as engine_mod
from whisperjav_enhance.backends.passthrough import PassthroughBackend
from whisperjav_enhance.engine import Engine, EngineOutOfMemory, overlap_weight
from whisperjav_enhance.planning import plan_windows


def _backend(cls=PassthroughBackend, **kw):
    b = cls(sample_rate=16_000, window_seconds=0.25, overlap_seconds=0.05, **kw)
    b.load(torch.device("cpu"))
    return b


def _scenes(lengths, seed=0):
    rng = np.random.default_rng(seed)
    return [(0.1 * rng.standard_normal(n)).astype(np.float32) for n in lengths]


LENGTHS = [1, 800, 3_999, 4_000, 4_001, 16_000 * 2 + 333]  # 0.05 s .. longer than many windows


def test_overlap_add_of_passthrough_reproduces_input():
    scenes = _scenes(LENGTHS)
    out = dict(Engine(_backend()).run(scenes))
    assert sorted(out) == list(range(len(scenes)))
    for i, x in enumerate(scenes):
        assert out[i].shape == x.shape and out[i].dtype == np.float32
        np.testing.assert_allclose(out[i], x, atol=1e-6)


class Scaler(PassthroughBackend):
    """Position-dependent backend: makes the weighting visible (output = input * (1 + t/T))."""

    def enhance_windows(self, batch):
        ramp = torch.linspace(1.0, 2.0, batch.shape[1], device=batch.device)
        return batch * ramp


def test_batched_and_one_at_a_time_agree():
    scenes = _scenes(LENGTHS, seed=1)
    a = dict(Engine(_backend(Scaler), max_batch=1).run(scenes))
    b = dict(Engine(_backend(Scaler), max_batch=7).run(scenes))
    eng = Engine(_backend(Scaler), max_batch=64)
    c = dict(eng.run(scenes))
    for i in range(len(scenes)):
        np.testing.assert_allclose(a[i], b[i], atol=1e-6)
        np.testing.assert_allclose(a[i], c[i], atol=1e-6)
    # with room for every window, there is one forward per distinct padded length
    shapes = {w.padded for w in plan_windows([len(x) for x in scenes], eng.plan)}
    assert eng.stats.forwards == len(shapes)
    assert Engine(_backend(Scaler), max_batch=1).stats.forwards == 0


def test_weight_window_is_positive_and_triangular():
    w = overlap_weight(10)
    assert (w > 0).all() and w.max() == 1.0
    assert list(w[:5]) == sorted(w[:5]) and list(w[5:]) == sorted(w[5:], reverse=True)


class OOMAbove(PassthroughBackend):
    """Raises the CUDA OOM error whenever a batch has more than ``limit`` windows."""

    limit = 2

    def enhance_windows(self, batch):
        if batch.shape[0] > self.limit:
            raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
        return batch.clone()


def test_oom_halves_the_batch_and_finishes():
    scenes = _scenes([4_000] * 9)
    eng = Engine(_backend(OOMAbove), max_batch=8)
    out = dict(eng.run(scenes))
    assert len(out) == 9 and eng.stats.oom_events >= 1
    assert max(eng.stats.batch_by_length.values()) <= 2
    for i, x in enumerate(scenes):
        np.testing.assert_allclose(out[i], x, atol=1e-6)


def test_oom_at_batch_one_names_the_scene():
    class Never(OOMAbove):
        limit = 0
    scenes = _scenes([100, 200])
    with pytest.raises(EngineOutOfMemory) as ei:
        list(Engine(_backend(Never), max_batch=4).run(scenes))
    assert ei.value.reason == "out_of_memory" and ei.value.scenes


def test_budget_limits_batch(monkeypatch):
    b = _backend()
    eng = Engine(b, budget_bytes=b.vram_bytes(3, 4_000), max_batch=64)
    assert eng.batch_for_length(4_000) == 3
    assert eng.batch_for_length(500) > 3      # shorter windows: more fit the same budget


def test_cpu_cap_is_module_level(monkeypatch):
    monkeypatch.setattr(engine_mod, "CPU_MAX_BATCH_WINDOWS", 2)
    assert Engine(_backend()).batch_for_length(4_000) == 2


def test_engine_leaves_no_inference_mode_in_caller():
    it = Engine(_backend()).run(_scenes([100, 20_000]))
    next(it)
    assert not torch.is_inference_mode_enabled()
    list(it)
