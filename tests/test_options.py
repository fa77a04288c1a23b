import pytest

from whisperjav_enhance import EnhanceOptions, PoolPolicy
from whisperjav_enhance.backends import ALIASES, create_backend, parse_backend_spec, select_backend
from whisperjav_enhance.devices import resolve_devices
from whisperjav_enhance.errors import ConfigError, DeviceError


@pytest.mark.parametrize("spec, name", [
    ("clearvoice", "mossformer2"), ("clearvoice:MossFormer2_SE_48K", "mossformer2"),
    ("zipenhancer:torch", "zipenhancer"), ("none", "passthrough"), ("ZIPENHANCER", "zipenhancer"),
    ("auto", "auto"), ("deepfilternet", "deepfilternet"),
])
def test_backend_spellings(spec, name):
    assert parse_backend_spec(spec) == name


@pytest.mark.parametrize("spec", ["bs-roformer", "ffmpeg-dsp", "mossformer2:SomethingElse", ""])
def test_unknown_backend_lists_accepted_names(spec):
    with pytest.raises(ConfigError) as ei:
        parse_backend_spec(spec)
    assert "mossformer2" in str(ei.value) or "no model variant" in str(ei.value)


def test_every_alias_targets_a_real_backend():
    from whisperjav_enhance.backends import CANONICAL
    assert set(ALIASES.values()) <= set(CANONICAL)


def test_passthrough_needs_no_weights():
    b = create_backend("none")
    assert b.name == "passthrough" and b.weights.random_test_weights is False


@pytest.mark.parametrize("kw", [dict(batch_seconds=0), dict(batch_seconds=float("nan")),
                                dict(output_sample_rate=0), dict(output_sample_rate=16000.5),
                                dict(output_subtype="MP3"), dict(clip="soft"),
                                dict(clip="none"), dict(window_seconds=1, overlap_seconds=1),
                                dict(executor="threads")])
def test_enhance_options_validated(kw):
    with pytest.raises(ConfigError):
        EnhanceOptions(**kw)


@pytest.mark.parametrize("kw", [dict(max_scenes_per_worker=0), dict(max_drift_mb=-1),
                                dict(workers_per_device=1.5), dict(scene_timeout_s=0),
                                dict(vram_budget_gb=True), dict(max_crashes_per_scene=0)])
def test_pool_policy_validated(kw):
    with pytest.raises(ConfigError):
        PoolPolicy(**kw)


def test_options_are_frozen():
    o = EnhanceOptions()
    with pytest.raises(Exception):
        o.backend = "x"


def test_devices_cpu_and_errors(monkeypatch):
    assert resolve_devices("cpu")[0].torch_device == "cpu"
    assert resolve_devices("cpu")[0].visible_devices == ""   # CPU workers never see a GPU
    for bad in ["gpu", "cuda:x", "auto:1"]:
        with pytest.raises(DeviceError):
            resolve_devices(bad)


def test_devices_cuda_mapping_through_visible_devices(monkeypatch):
    from whisperjav_enhance import devices
    monkeypatch.setattr(devices, "gpu_count", lambda: 2)
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "3,5")
    slots = resolve_devices("cuda:1")
    assert [(s.label, s.visible_devices, s.torch_device) for s in slots] == [("cuda:1", "5", "cuda:0")]
    assert [s.visible_devices for s in resolve_devices("auto")] == ["3", "5"]
    with pytest.raises(DeviceError, match="only 2 GPU"):
        resolve_devices("cuda:2")


def test_cuda_without_gpu_is_a_clear_error(monkeypatch):
    from whisperjav_enhance import devices
    monkeypatch.setattr(devices, "gpu_count", lambda: 0)
    with pytest.raises(DeviceError, match="no CUDA GPU"):
        resolve_devices("cuda")
    assert resolve_devices("auto")[0].label == "cpu"


def test_gpus_are_counted_without_torch_in_this_process(monkeypatch):
    """No driver: no GPU, decided without a child process; with the driver's word, torch is asked
    in a child process (this process never imports it for device facts)."""
    from whisperjav_enhance import devices

    real_probe = devices._torch_gpu_count
    monkeypatch.setattr(devices, "_gpu_counts", {})
    monkeypatch.setattr(devices, "_driver_sees_gpus", lambda: False)
    monkeypatch.setattr(devices, "_torch_gpu_count", lambda: pytest.fail("asked torch"))
    assert devices.gpu_count() == 0
    monkeypatch.setattr(devices, "_gpu_counts", {})
    monkeypatch.setattr(devices, "_driver_sees_gpus", lambda: True)
    monkeypatch.setattr(devices, "_torch_gpu_count", real_probe)
    monkeypatch.setattr(devices, "_TORCH_PROBE", "print(3)")  # the child's answer, without a GPU
    assert devices.gpu_count() == 3


def test_backend_options_are_declared_checked_and_reach_the_backend(monkeypatch):
    from whisperjav_enhance.backends.base import OptionText

    # auto on a fresh machine picks DeepFilterNet3; the settings apply to what it picked.
    monkeypatch.setenv("HF_HUB_CACHE", "/nonexistent/hf")
    monkeypatch.setenv("MODELSCOPE_CACHE", "/nonexistent/ms")
    monkeypatch.chdir("/")
    backend, note = select_backend("auto", None, atten_lim_db=OptionText("12.5"))
    assert backend.name == "deepfilternet" and backend.options.atten_lim_db == 12.5
    with pytest.raises(ConfigError, match=r"deepfilternet has no option dither; it takes: "
                                          r"atten_lim_db .*post_filter_beta"):
        select_backend("auto", None, dither=0.0)
    with pytest.raises(ConfigError, match=r"post_filter_beta must be a number in 0\.\.1"):
        select_backend("deepfilternet", None, post_filter_beta=OptionText("2"))
    with pytest.raises(ConfigError, match="prefetch_state must be true or false"):
        select_backend("deepfilternet", None, prefetch_state="yes")  # Python values: strict
    # The older spellings fold into backend_options; the same setting twice must agree.
    opts = EnhanceOptions(window_seconds=2.0, backend_options={"overlap_seconds": 0.5})
    assert opts.backend_settings() == {"window_seconds": 2.0, "overlap_seconds": 0.5}
    with pytest.raises(ConfigError, match="window_seconds is given twice"):
        EnhanceOptions(window_seconds=2.0, backend_options={"window_seconds": 3.0})
