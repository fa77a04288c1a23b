import numpy as np
import pytest
import soundfile as sf

from whisperjav_enhance import audio
from whisperjav_enhance.errors import AudioError, OutputError


def test_read_downmixes_and_resamples(tone):
    p = tone("stereo.wav", 0.5, rate=44_100, channels=2)
    x, info = audio.read_audio(p, target_rate=16_000)
    assert info.channels == 2 and info.sample_rate == 44_100
    assert x.dtype == np.float32 and x.ndim == 1
    assert abs(len(x) - 8_000) <= 1


@pytest.mark.parametrize("subtype", ["PCM_16", "PCM_24", "FLOAT", "PCM_U8"])
def test_read_common_subtypes(tone, subtype):
    name = "a.wav"
    p = tone(name, 0.2, subtype=subtype)
    x, info = audio.read_audio(p)
    assert info.subtype == subtype and len(x) == 9_600


def test_read_flac(tone):
    p = tone("a.flac", 0.2)
    x, info = audio.read_audio(p)
    assert info.format == "FLAC" and len(x) == 9_600


@pytest.mark.parametrize("make, reason", [
    (lambda p: p.write_bytes(b""), "empty"),
    (lambda p: p.write_bytes(b"RIFF\x00\x00garbage" * 10), "unreadable"),
    (lambda p: p.write_text("not audio at all\n" * 50), "unreadable"),
    (lambda p: sf.write(str(p), np.zeros(0, np.float32), 48_000), "empty"),
    (lambda p: sf.write(str(p), np.array([0.1, np.nan, 0.2] * 1000, np.float32), 48_000,
                        subtype="FLOAT"), "non_finite"),
    (lambda p: sf.write(str(p), np.array([np.inf] * 3000, np.float32), 48_000,
                        subtype="FLOAT"), "non_finite"),
    (lambda p: sf.write(str(p), np.zeros(3000, np.float32), 1_000), "bad_sample_rate"),
])
def test_bad_files_have_specific_reasons(tmp_path, make, reason):
    p = tmp_path / "bad.wav"
    make(p)
    with pytest.raises(AudioError) as ei:
        audio.read_audio(p)
    assert ei.value.reason == reason
    assert str(p) in str(ei.value)


def test_missing_file(tmp_path):
    with pytest.raises(AudioError) as ei:
        audio.probe(tmp_path / "nope.wav")
    assert ei.value.reason == "missing"


def test_too_long_is_rejected_from_the_header(tone, monkeypatch):
    p = tone("long.wav", 1.0)
    monkeypatch.setattr(audio, "MAX_DURATION_S", 0.5)
    with pytest.raises(AudioError) as ei:
        audio.probe(p)
    assert ei.value.reason == "too_long"


def test_truncated_wav_fails_as_truncated(tone):
    p = tone("t.wav", 1.0)
    data = p.read_bytes()
    p.write_bytes(data[: len(data) // 2])
    with pytest.raises(AudioError) as ei:
        audio.read_audio(p)
    assert ei.value.reason == "truncated" and "declares 1.00 s" in str(ei.value)


def test_atomic_write_roundtrip_and_no_temp_left(tmp_path):
    x = (0.5 * np.sin(np.arange(4800) / 10)).astype(np.float32)
    out = audio.write_audio_atomic(tmp_path / "sub" / "o.wav", x, 48_000)
    y, sr = sf.read(str(out), dtype="float32")
    assert sr == 48_000 and np.allclose(x, y, atol=1 / 32768)
    assert [p.name for p in (tmp_path / "sub").iterdir()] == ["o.wav"]
    import os
    mask = os.umask(0)
    os.umask(mask)
    assert out.stat().st_mode & 0o777 == 0o666 & ~mask   # not mkstemp's private 0600


def test_atomic_write_failure_leaves_nothing(tmp_path, monkeypatch):
    x = np.zeros(100, np.float32)
    target = tmp_path / "o.wav"
    target.write_bytes(b"old")

    def boom(*a, **k):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(audio.sf, "write", boom)
    with pytest.raises(OutputError, match="No space left"):
        audio.write_audio_atomic(target, x, 48_000)
    assert target.read_bytes() == b"old"
    assert [p.name for p in tmp_path.iterdir()] == ["o.wav"]


def test_unwritable_directory(tmp_path):
    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(0o500)
    try:
        import os
        if os.access(ro, os.W_OK):  # running as root: permissions do not bind
            pytest.skip("permissions are not enforced for this user")
        with pytest.raises(OutputError, match=str(ro)):
            audio.write_audio_atomic(ro / "o.wav", np.zeros(10, np.float32), 48_000)
    finally:
        ro.chmod(0o700)


def test_output_under_a_file_is_a_clear_error(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(OutputError):
        audio.write_audio_atomic(blocker / "o.wav", np.zeros(10, np.float32), 48_000)


@pytest.mark.parametrize("policy, peak", [("clip", 1.0), ("normalize", 1.0)])
def test_clip_policies(policy, peak):
    x = np.array([0.5, 2.0, -1.5], np.float32)
    y = audio.apply_clip_policy(x, policy)
    assert np.max(np.abs(y)) == pytest.approx(peak)
    if policy == "normalize":
        assert np.allclose(y, x / 2.0)


def test_clip_none_needs_float(tmp_path):
    with pytest.raises(ValueError):
        audio.write_audio_atomic(tmp_path / "o.wav", np.zeros(4), 48_000, subtype="PCM_16", clip="none")
    out = audio.write_audio_atomic(tmp_path / "o.wav", np.array([1.5, -2.0], np.float32), 48_000,
                                   subtype="FLOAT", clip="none")
    y, _ = sf.read(str(out), dtype="float32")
    assert y.tolist() == [1.5, -2.0]
