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
    uses_torch = True  # torch tensors in, like the real network backends

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
    uses_torch = True  # torch tensors in, like the real network backends

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


class OOMSwitch(PassthroughBackend):
    """OOMs above ``limit`` windows; records every batch size it is handed."""
    uses_torch = True  # torch tensors in, like the real network backends

    limit = 2

    def __init__(self, **kw):
        super().__init__(**kw)
        self.sizes = []

    def enhance_windows(self, batch):
        self.sizes.append(batch.shape[0])
        if batch.shape[0] > self.limit:
            raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
        return batch.clone()


def test_oom_limit_applies_to_the_rest_of_the_length_at_once():
    # 16 windows at max_batch 8: the first batch of 8 fails once, then every batch is 4 or
    # smaller; the second group of 8 is not tried at 8 again.
    b = _backend(OOMSwitch)
    b.limit = 4
    out = dict(Engine(b, max_batch=8).run(_scenes([4_000] * 16)))
    assert len(out) == 16
    assert b.sizes == [8, 4, 4, 4, 4]


def test_batch_regrows_after_successes_and_backs_off_after_another_oom(monkeypatch):
    monkeypatch.setattr(engine_mod, "REGROW_AFTER_FORWARDS", 2)
    b = _backend(OOMSwitch)
    b.limit = 2
    eng = Engine(b, max_batch=4)
    scenes = _scenes([4_000] * 4)
    list(eng.run(scenes))                          # 4 fails, then 2 + 2 (streak 2 of 2)
    assert b.sizes == [4, 2, 2] and eng.stats.oom_events == 1
    b.limit, b.sizes = 4, []                       # the pressure is gone
    out = dict(eng.run(scenes))
    assert b.sizes == [4] and eng.stats.oom_events == 1   # back to the full batch
    for i, x in enumerate(scenes):
        np.testing.assert_allclose(out[i], x, atol=1e-6)

    b.limit, b.sizes = 2, []                       # pressure again: halve, and wait longer
    list(eng.run(scenes * 2))                      # 4 fails, then 2 x 4 (streak 4 of 4 needed)
    assert b.sizes == [4, 2, 2, 2, 2] and eng.stats.oom_events == 2
    b.sizes = []
    list(eng.run(scenes))                          # regrown to 4, fails again: needed is now 8
    assert b.sizes == [4, 2, 2] and eng.stats.oom_events == 3
    b.sizes = []
    list(eng.run(scenes * 3))                      # 6 batches of 2 < 8: no retry at 4 yet
    assert b.sizes == [2] * 6 and eng.stats.batch_by_length[4_000] == 2


def test_oom_recovery_runs_after_the_traceback_is_released(monkeypatch):
    # The failed forward's tensors (held by the traceback's frames) must be unreachable when
    # the engine empties the CUDA cache, or the cache cannot give their memory back.
    import gc
    import weakref

    held = []

    class Holder(OOMAbove):
        def enhance_windows(self, batch):
            big = torch.empty(batch.shape[0], 1000)
            held.append(weakref.ref(big))
            return super().enhance_windows(batch)

    alive_at_shrink = []
    original = Engine._shrink_after_oom

    def spy(self, batch, error):
        gc.collect()
        alive_at_shrink.append(any(r() is not None for r in held))
        return original(self, batch, error)

    monkeypatch.setattr(Engine, "_shrink_after_oom", spy)
    list(Engine(_backend(Holder), max_batch=4).run(_scenes([4_000] * 4)))
    assert alive_at_shrink == [False]


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_path_stages_pinned_and_reproduces_input(monkeypatch):
    b = PassthroughBackend(sample_rate=16_000, window_seconds=0.25, overlap_seconds=0.05)
    b.load(torch.device("cuda"))
    staged = []
    real_zeros = torch.zeros

    def spy(*args, **kw):
        t = real_zeros(*args, **kw)
        staged.append(t.is_pinned())
        return t

    monkeypatch.setattr(torch, "zeros", spy)
    scenes = _scenes(LENGTHS)
    out = dict(Engine(b).run(scenes))
    assert staged and all(staged)
    for i, x in enumerate(scenes):
        np.testing.assert_allclose(out[i], x, atol=1e-6)
