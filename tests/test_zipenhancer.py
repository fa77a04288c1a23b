"""ZipEnhancer backend: parity with ModelScope's own inference on the same weights, exact output
lengths through the engine, batch independence, silence, strict weight loading and the search
for the model folder. Random-initialised weights in ModelScope's real folder layout, on the CPU,
with 0.5 s windows (the network costs ~1.5 s per audio second on the 2-core machine)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

pytest.importorskip("modelscope")
from modelscope.models.audio.ans.zipenhancer import ZipenhancerDecorator  # noqa: E402

from whisperjav_enhance.backends import create_backend, parse_backend_spec  # noqa: E402
from whisperjav_enhance.backends import zipenhancer as zp  # noqa: E402
from whisperjav_enhance.backends.zipenhancer import ZipEnhancerBackend  # noqa: E402
from whisperjav_enhance.engine import Engine  # noqa: E402
from whisperjav_enhance.errors import ConfigError, WeightsError  # noqa: E402
from whisperjav_enhance.weights import RANDOM_WEIGHTS_MARKER  # noqa: E402

RATE = 16_000
SHORT = {"window_seconds": 0.5, "overlap_seconds": 0.125}  # 8000-sample windows, 1000 quantum
NAME = "speech_zipenhancer_ans_multiloss_16k_base"


def speechlike(n: int, seed: int, level: float = 0.2) -> np.ndarray:
    """Two tones plus noise: enough structure that a wrong normalisation or crop shows."""
    rng = np.random.default_rng(seed)
    t = np.arange(n) / RATE
    x = np.sin(2 * np.pi * 220 * t) + 0.5 * np.sin(2 * np.pi * 1330 * t) + 0.3 * rng.standard_normal(n)
    return (level * x / np.max(np.abs(x))).astype(np.float32)


@pytest.fixture(scope="module", autouse=True)
def one_torch_thread():
    """One intra-op thread: on the shared 2-core machine, two OpenMP threads competing with other
    processes ran these forwards 5-20x slower than one thread did."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory) -> Path:
    return ZipEnhancerBackend.write_random_weights(tmp_path_factory.mktemp("zipenhancer") / NAME)


@pytest.fixture(scope="module")
def backend(model_dir) -> ZipEnhancerBackend:
    b = ZipEnhancerBackend.resolve(model_dir, **SHORT)
    b.load("cpu")
    return b


@pytest.fixture(scope="module")
def reference(model_dir):
    """ModelScope's own model object, loading pytorch_model.bin with its own loader."""
    config = json.loads((model_dir / zp.CONFIG_FILE).read_text())
    return ZipenhancerDecorator(str(model_dir), **config["model"]).eval()


@pytest.fixture
def clean_env(monkeypatch, tmp_path):
    """No weights variable, and an empty ModelScope cache (never the user's real one)."""
    monkeypatch.delenv(zp.ENV_VAR, raising=False)
    cache = tmp_path / "mscache"
    cache.mkdir()
    monkeypatch.setenv("MODELSCOPE_CACHE", str(cache))
    return cache


def copy_model(model_dir: Path, dest: Path) -> Path:
    shutil.copytree(model_dir, dest)
    return dest


def modelscope_forward(reference, x: torch.Tensor) -> torch.Tensor:
    with torch.inference_mode():
        return reference.forward({"noisy": x})["wav_l2"]


# -- parity with ModelScope ----------------------------------------------------------------------
def test_matches_modelscope_inference_on_one_window(backend, reference):
    x = torch.from_numpy(speechlike(4000, seed=1))[None]
    ours = backend.enhance_windows(x)
    theirs = modelscope_forward(reference, x)
    assert ours.shape == theirs.shape == (1, 4000)
    assert theirs.abs().max() > 1e-4  # the comparison is not between two silences
    torch.testing.assert_close(ours, theirs, rtol=1e-5, atol=1e-7)
    assert not torch.allclose(ours, x, atol=1e-3)  # random weights really ran, not a pass-through


def test_odd_length_matches_modelscope_on_zero_padded_input(backend, reference):
    # 4321 samples is not a multiple of the 100-sample hop: ModelScope's ISTFT would return 4300
    # samples; we zero-pad to 4400 as its pipeline pads, then crop.
    x = torch.from_numpy(speechlike(4321, seed=2))[None]
    ours = backend.enhance_windows(x)
    theirs = modelscope_forward(reference, torch.nn.functional.pad(x, (0, 79)))[:, :4321]
    assert ours.shape == (1, 4321)
    torch.testing.assert_close(ours, theirs, rtol=1e-5, atol=1e-7)


def test_each_row_is_normalised_on_its_own(backend, reference):
    # ModelScope normalises a whole batch with one factor; we do it per row, so every row equals
    # ModelScope's result for that row alone, whatever its level.
    rows = [speechlike(2000, seed=3, level=0.5), speechlike(2000, seed=4, level=0.002)]
    x = torch.from_numpy(np.stack(rows))
    ours = backend.enhance_windows(x)
    for i in range(2):
        theirs = modelscope_forward(reference, x[i:i + 1])[0]
        scale = float(theirs.abs().max())
        torch.testing.assert_close(ours[i], theirs, rtol=1e-4, atol=1e-5 * scale)


def test_decorator_state_dict_layout_loads_the_same_weights(backend, model_dir, reference, tmp_path):
    # A model trained with ModelScope is saved as {"state_dict": decorator state dict}.
    folder = copy_model(model_dir, tmp_path / "trained")
    torch.save({"state_dict": reference.state_dict()}, str(folder / zp.WEIGHTS_FILE))
    other = ZipEnhancerBackend.resolve(folder, **SHORT)
    other.load("cpu")
    ours, theirs = other.net.state_dict(), backend.net.state_dict()
    assert ours.keys() == theirs.keys()
    assert all(torch.equal(ours[k], theirs[k]) for k in ours)


# -- lengths, batching, silence ------------------------------------------------------------------
@pytest.mark.parametrize("n", [1, 150, 401, 999, 1234])
def test_any_window_length_gives_exactly_that_many_samples(backend, n):
    y = backend.enhance_windows(torch.from_numpy(np.stack([speechlike(n, 5), speechlike(n, 6)])))
    assert y.shape == (2, n) and y.dtype == torch.float32
    assert torch.isfinite(y).all()


def test_engine_output_length_equals_input_length(backend):
    # 0.05 s, an odd length, a short scene and one longer than the 0.5 s window (two windows).
    lengths = [800, 811, 3333, 9001]
    audios = [speechlike(n, seed=10 + i) for i, n in enumerate(lengths)]
    got = dict(Engine(backend).run(audios))
    assert sorted(got) == list(range(len(lengths)))
    for i, n in enumerate(lengths):
        assert got[i].shape == (n,) and got[i].dtype == np.float32
        assert np.isfinite(got[i]).all() and np.abs(got[i]).max() > 0
    # A single-window scene is the backend's result on the zero-padded window, cropped.
    direct = backend.enhance_windows(torch.nn.functional.pad(torch.from_numpy(audios[2])[None],
                                                             (0, 4000 - 3333)))[0, :3333]
    np.testing.assert_allclose(got[2], direct.numpy(), rtol=1e-4, atol=1e-6)


def test_batched_and_one_at_a_time_agree(backend):
    # Three scenes padded to the same 4000 samples: one forward of three rows against three
    # forwards of one. Different levels, so a batch-wide normalisation would fail this.
    audios = [speechlike(3100, 20, 0.8), speechlike(3500, 21, 0.01), speechlike(4000, 22, 0.2)]
    engine = Engine(backend, max_batch=4)
    batched = dict(engine.run(audios))
    assert engine.stats.forwards == 1
    single_engine = Engine(backend, max_batch=1)
    single = dict(single_engine.run(audios))
    assert single_engine.stats.forwards == 3
    for i, a in enumerate(audios):
        scale = float(np.abs(single[i]).max())
        np.testing.assert_allclose(batched[i], single[i], rtol=1e-4, atol=1e-5 * scale)


def test_silent_window_gives_silence_not_nan(backend):
    x = torch.zeros(2, 1000)
    x[1] = torch.from_numpy(speechlike(1000, 30))
    y = backend.enhance_windows(x)
    assert torch.isfinite(y).all()
    assert torch.count_nonzero(y[0]) == 0
    torch.testing.assert_close(y[1], backend.enhance_windows(x[1:])[0], rtol=1e-4, atol=1e-6)
    out = dict(Engine(backend).run([np.zeros(700, dtype=np.float32)]))
    assert out[0].shape == (700,) and np.count_nonzero(out[0]) == 0


# -- strict loading ------------------------------------------------------------------------------
def test_missing_folder_is_a_weights_error(clean_env, tmp_path):
    missing = tmp_path / "no_such_model"
    with pytest.raises(WeightsError, match="does not exist") as info:
        ZipEnhancerBackend.resolve(missing)
    assert str(missing) in str(info.value) and "modelscope download --model" in str(info.value)


def test_missing_configuration_json_is_named(model_dir, clean_env, tmp_path):
    folder = copy_model(model_dir, tmp_path / "m")
    (folder / zp.CONFIG_FILE).unlink()
    for given in (folder, folder / zp.WEIGHTS_FILE):
        with pytest.raises(WeightsError) as info:
            ZipEnhancerBackend.resolve(given)
        assert str(folder / zp.CONFIG_FILE) in str(info.value)
    # Removed between resolving (parent) and loading (worker): load names it too.
    backend = ZipEnhancerBackend(zp.WeightsInfo(str(folder), "explicit", True), folder)
    with pytest.raises(WeightsError) as info:
        backend.load("cpu")
    assert str(folder / zp.CONFIG_FILE) in str(info.value)


def test_missing_weight_file_is_named(model_dir, clean_env, tmp_path):
    folder = copy_model(model_dir, tmp_path / "m")
    (folder / zp.WEIGHTS_FILE).unlink()
    with pytest.raises(WeightsError) as info:
        ZipEnhancerBackend.resolve(folder)
    assert str(folder / zp.WEIGHTS_FILE) in str(info.value)


def test_truncated_weight_file_is_named(model_dir, clean_env, tmp_path):
    folder = copy_model(model_dir, tmp_path / "m")
    path = folder / zp.WEIGHTS_FILE
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    backend = ZipEnhancerBackend.resolve(folder)  # both files exist: found, but not loadable
    with pytest.raises(WeightsError, match="cannot load") as info:
        backend.load("cpu")
    assert str(path) in str(info.value)
    assert backend.net is None


def _drop_key(sd):
    sd.pop(sorted(sd)[0])


def _extra_key(sd):
    sd["mask_decoder.extra.weight"] = torch.zeros(3)


def _wrong_shape(sd):
    key = next(k for k, v in sd.items() if v.dim() == 2)
    sd[key] = torch.zeros(sd[key].shape[0] + 1, sd[key].shape[1])


@pytest.mark.parametrize("mutate, message", [
    (_drop_key, "Missing key"),
    (_extra_key, "Unexpected key"),
    (_wrong_shape, "size mismatch"),
])
def test_mismatched_state_dict_is_named(model_dir, clean_env, tmp_path, mutate, message):
    folder = copy_model(model_dir, tmp_path / "m")
    path = folder / zp.WEIGHTS_FILE
    ckpt = torch.load(str(path), map_location="cpu", weights_only=True)
    mutate(ckpt["generator"])
    torch.save(ckpt, str(path))
    with pytest.raises(WeightsError, match=message) as info:
        ZipEnhancerBackend.resolve(folder).load("cpu")
    assert str(path) in str(info.value)


@pytest.mark.parametrize("ckpt, message", [
    ({"weights": {}}, "neither"),
    ({"state_dict": {"encoder.w": torch.zeros(1)}}, "model\\.\\* keys"),
    ([1, 2, 3], "not a checkpoint dictionary"),
    ({"generator": {"w": [1.0]}}, "non-tensor"),
])
def test_foreign_checkpoint_layouts_are_named(model_dir, clean_env, tmp_path, ckpt, message):
    folder = copy_model(model_dir, tmp_path / "m")
    torch.save(ckpt, str(folder / zp.WEIGHTS_FILE))
    with pytest.raises(WeightsError, match=message) as info:
        ZipEnhancerBackend.resolve(folder).load("cpu")
    assert str(folder / zp.WEIGHTS_FILE) in str(info.value)


def _config_not_json(cfg_path, cfg):
    cfg_path.write_text("{ not json")


def _config_no_model(cfg_path, cfg):
    cfg.pop("model")
    cfg_path.write_text(json.dumps(cfg))


def _config_missing_key(cfg_path, cfg):
    cfg["model"].pop("dense_channel")
    cfg_path.write_text(json.dumps(cfg))


def _config_bad_former(cfg_path, cfg):
    cfg["model"]["former_conf"]["no_such_option"] = 1
    cfg_path.write_text(json.dumps(cfg))


@pytest.mark.parametrize("damage, message", [
    (_config_not_json, "not valid JSON"),
    (_config_no_model, "no \"model\" object"),
    (_config_missing_key, "lacks dense_channel"),
    (_config_bad_former, "do not build the network"),
])
def test_bad_configuration_json_is_named(model_dir, clean_env, tmp_path, damage, message):
    folder = copy_model(model_dir, tmp_path / "m")
    cfg_path = folder / zp.CONFIG_FILE
    damage(cfg_path, json.loads(cfg_path.read_text()))
    with pytest.raises(WeightsError, match=message) as info:
        ZipEnhancerBackend.resolve(folder).load("cpu")
    assert str(cfg_path) in str(info.value)


def test_network_is_built_from_configuration_json(model_dir, clean_env, tmp_path):
    # Other hyper-parameters in configuration.json build another network, so the released
    # weights no longer fit: proof that load() reads the file rather than fixed values.
    folder = copy_model(model_dir, tmp_path / "m")
    cfg_path = folder / zp.CONFIG_FILE
    cfg = json.loads(cfg_path.read_text())
    cfg["model"]["dense_channel"] = 32
    cfg_path.write_text(json.dumps(cfg))
    with pytest.raises(WeightsError, match="size mismatch") as info:
        ZipEnhancerBackend.resolve(folder).load("cpu")
    assert str(folder / zp.WEIGHTS_FILE) in str(info.value)


# -- finding the model folder --------------------------------------------------------------------
def test_resolve_explicit_folder_or_weight_file(model_dir, clean_env):
    for given in (model_dir, model_dir / zp.WEIGHTS_FILE, str(model_dir)):
        b = ZipEnhancerBackend.resolve(given, **SHORT)
        assert b.weights.origin == "explicit"
        assert b.weights.path == str(model_dir)
        assert b.weights.random_test_weights is True
        assert b.model_dir == model_dir and b.weights_file == model_dir / zp.WEIGHTS_FILE
        assert (b.window_seconds, b.overlap_seconds) == (0.5, 0.125)


def test_resolve_env_var_and_precedence(model_dir, clean_env, monkeypatch, tmp_path):
    monkeypatch.setenv(zp.ENV_VAR, str(model_dir))
    b = ZipEnhancerBackend.resolve()
    assert b.weights.origin == f"env:{zp.ENV_VAR}" and b.model_dir == model_dir
    other = copy_model(model_dir, tmp_path / "other")
    assert ZipEnhancerBackend.resolve(other).model_dir == other  # explicit beats the variable
    monkeypatch.setenv(zp.ENV_VAR, str(tmp_path / "gone"))
    with pytest.raises(WeightsError, match=zp.ENV_VAR) as info:
        ZipEnhancerBackend.resolve()
    assert str(tmp_path / "gone") in str(info.value)


@pytest.mark.parametrize("layout", [
    ("hub", "models", "iic", NAME),            # ModelScope SDK default
    ("models", "iic", NAME),                   # SDK with MODELSCOPE_CACHE set
    ("hub", "iic", NAME),                      # older SDK, before models/
    ("models", "iic--" + NAME, "snapshots", "abc123"),  # newer hub client
])
def test_resolve_finds_the_modelscope_cache(model_dir, clean_env, layout):
    target = clean_env.joinpath(*layout)
    copy_model(model_dir, target)
    b = ZipEnhancerBackend.resolve()
    assert b.weights.origin == "modelscope-cache" and b.model_dir == target


def test_resolve_miss_says_where_it_looked_and_how_to_get_it(clean_env):
    with pytest.raises(WeightsError) as info:
        ZipEnhancerBackend.resolve()
    text = str(info.value)
    assert "modelscope download --model iic/speech_zipenhancer_ans_multiloss_16k_base" in text
    assert str(clean_env / "hub" / "models" / "iic" / NAME) in info.value.searched
    assert str(clean_env / "hub" / "iic" / NAME) in info.value.searched
    assert f"${zp.ENV_VAR} (not set)" in info.value.searched


def test_cache_folder_missing_a_file_is_skipped(model_dir, clean_env):
    # A half-finished download in the first place does not hide a complete one further on.
    partial = copy_model(model_dir, clean_env / "hub" / "models" / "iic" / NAME)
    (partial / zp.WEIGHTS_FILE).unlink()
    complete = copy_model(model_dir, clean_env / "hub" / "iic" / NAME)
    assert ZipEnhancerBackend.resolve().model_dir == complete


def test_unmarked_folder_is_not_reported_as_random(model_dir, clean_env, tmp_path):
    folder = copy_model(model_dir, tmp_path / "real")
    cfg_path = folder / zp.CONFIG_FILE
    cfg = json.loads(cfg_path.read_text())
    cfg.pop(zp.OWN_CONFIG_KEY)
    cfg_path.write_text(json.dumps(cfg))
    path = folder / zp.WEIGHTS_FILE
    ckpt = torch.load(str(path), map_location="cpu", weights_only=True)
    del ckpt[RANDOM_WEIGHTS_MARKER]
    torch.save(ckpt, str(path))
    b = ZipEnhancerBackend.resolve(folder)
    assert b.weights.random_test_weights is False
    b.load("cpu")
    assert b.weights.random_test_weights is False
    # The marker in the weight file alone is still reported once loaded.
    torch.save({**ckpt, RANDOM_WEIGHTS_MARKER: True}, str(path))
    b = ZipEnhancerBackend.resolve(folder)
    b.load("cpu")
    assert b.weights.random_test_weights is True


def test_written_folder_is_modelscope_layout(model_dir):
    cfg = json.loads((model_dir / zp.CONFIG_FILE).read_text())
    assert cfg["model"]["type"] == NAME and cfg[zp.OWN_CONFIG_KEY] == {RANDOM_WEIGHTS_MARKER: True}
    ckpt = torch.load(str(model_dir / zp.WEIGHTS_FILE), map_location="cpu", weights_only=True)
    net = zp.build_network(model_dir)
    assert sum(p.numel() for p in net.parameters()) == 2_044_436  # the published size
    assert ckpt["generator"].keys() == net.state_dict().keys()
    assert ckpt[RANDOM_WEIGHTS_MARKER] is True


# -- registry, options, memory model -------------------------------------------------------------
def test_registry_creates_the_backend(model_dir, clean_env):
    assert parse_backend_spec("zipenhancer:modelscope") == "zipenhancer"
    b = create_backend("zipenhancer", str(model_dir), **SHORT)
    assert isinstance(b, ZipEnhancerBackend) and b.sample_rate == 16_000
    assert b.describe()["window_seconds"] == 0.5


def test_defaults_are_modelscopes_windows(model_dir, clean_env):
    b = ZipEnhancerBackend.resolve(model_dir)
    assert (b.window_seconds, b.overlap_seconds) == (2.0, 0.5)  # 2 s windows at a 1.5 s stride


@pytest.mark.parametrize("opts", [{"window_seconds": 0.5, "overlap_seconds": 0.5},
                                  {"window_seconds": 0.0},
                                  {"window_seconds": 1.0, "overlap_seconds": -0.1}])
def test_bad_window_options_are_config_errors(model_dir, clean_env, opts):
    with pytest.raises(ConfigError):
        ZipEnhancerBackend.resolve(model_dir, **opts)


# (batch, window seconds, measured peak MiB) from docs/measurements.md, H100, inference mode.
MEASURED = [(1, 2, 1091), (1, 4, 4034), (1, 10, 24216), (16, 2, 16803), (8, 1, 2343),
            (32, 1, 9233), (8, 2, 8422), (32, 2, 33565)]


def test_vram_model_over_estimates_every_measurement(model_dir, clean_env):
    b = ZipEnhancerBackend.resolve(model_dir)
    for batch, sec, mib in MEASURED:
        est = b.vram_bytes(batch, sec * RATE) / (1 << 20)
        assert mib <= est <= 1.6 * mib + 100, (batch, sec, mib, est)
    # Quadratic in the window, linear in the batch.
    def per_window(samples):
        return b.vram_bytes(2, samples) - b.vram_bytes(1, samples)

    assert per_window(8 * RATE) > 3.5 * per_window(4 * RATE)
    assert abs(b.vram_bytes(8, 32000) - b.vram_bytes(4, 32000) - 4 * per_window(32000)) <= 8


@pytest.mark.gpu
def test_cuda_matches_cpu_and_stays_within_the_memory_model(model_dir, backend):
    if not torch.cuda.is_available():
        pytest.skip("needs CUDA")
    gpu = ZipEnhancerBackend.resolve(model_dir)  # default 2 s windows
    gpu.load("cuda")
    x = torch.from_numpy(np.stack([speechlike(32000, 40 + i) for i in range(4)]))
    torch.cuda.synchronize()
    torch.cuda.reset_peak_memory_stats()
    base = torch.cuda.memory_allocated()
    y = gpu.enhance_windows(x.cuda())
    torch.cuda.synchronize()
    peak = torch.cuda.max_memory_allocated() - base
    assert peak <= gpu.vram_bytes(4, 32000)
    ref = backend.enhance_windows(x[:1, :8000])
    got = gpu.enhance_windows(x[:1, :8000].cuda()).cpu()
    torch.testing.assert_close(got, ref, rtol=1e-3, atol=1e-4 * float(ref.abs().max()))
    assert y.shape == x.shape and torch.isfinite(y).all()
