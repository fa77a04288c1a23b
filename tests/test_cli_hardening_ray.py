"""Issue 13's command-line cases that involve the executor, on Ray (the session's cluster, joined by
address, as a multi-node run joins one): the local-pool versions are in test_hardening_cli.py.

    1  disk fills mid-run: scenes refused by the actors before reading, records whole, exit 1
    3  two runs on one OUT_DIR: the second refused naming the first, before touching anything
    6, 8, 11  truncated (a cut FLAC is found by the actor decoding it), special files and a
       sparse 8 GiB header fail alone with their reasons while the other scenes run on Ray
    7  settings records written by a Ray run are honoured by a pool run and the reverse

Not repeated on Ray, because the executor plays no part in them: 2 (the CLI's own output
channels), 4 (links and --summary-json are checked in the parent before any executor exists),
5 (names are the writer's, shared code), 9 (Ctrl-C on Ray: test_ray_executor.py), 10 (options
checked before anything starts).
"""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest

from _cli import (FAST, RUN_TIMEOUT_S, Background, assert_whole_copy, good_scenes,
                  last_run_lines, partials, run_cli)
from _mounts import mounted_tmpfs
from _hostile import BAD_INPUT_REASONS, ROOMY_MIB, fill_mid_run, write_bad_inputs
from whisperjav_enhance.manifest import read_manifest

pytestmark = [
    pytest.mark.ray,
    pytest.mark.slow,
    pytest.mark.skipif(importlib.util.find_spec("ray") is None,
                       reason="needs the optional ray extra (pip install ray)"),
]


@pytest.fixture
def on_ray(ray_cluster):
    """The options that put a CLI run on the session's cluster (its token is in the environment)."""
    return [*FAST, "--executor", "ray", "--ray-address", ray_cluster]


def test_ray_1_disk_fills_mid_run(on_ray, tmp_path):
    with mounted_tmpfs(tmp_path / "fs", ROOMY_MIB) as point:
        src, out = tmp_path / "scenes", point / "out"
        scenes = good_scenes(src, 8, seconds=1.0)
        args = ["enhance", src, "-o", out, *on_ray, "--max-scenes-per-worker", "1"]
        rc, text, filler = fill_mid_run(args, tmp_path, out, point, leave_bytes=256 << 10)
        assert rc == 1, text
        assert "Traceback" not in text, text
        lines = last_run_lines(out)
        assert sorted(l["index"] for l in lines) == list(range(len(scenes)))
        failed = [l for l in lines if l["status"] == "failed"]
        assert failed and all(l["reason"] == "disk_full" and "free on" in l["message"]
                              for l in failed), lines
        assert any("needs about" in l["message"] for l in failed)
        assert not partials(out)
        filler.unlink()
        r = run_cli(*args)
        assert r.returncode == 0, r.stdout + r.stderr
        for p in scenes:
            assert_whole_copy(p, out / p.name)


def test_ray_3_second_run_on_a_busy_out_dir_is_refused(on_ray, tmp_path):
    src, out = tmp_path / "scenes", tmp_path / "out"
    scenes = good_scenes(src, 6)
    args = ["enhance", src, "-o", out, *on_ray, "--max-scenes-per-worker", "1"]
    first = Background(args, tmp_path, "first")
    try:
        first.wait_for(lambda: read_manifest(out / "manifest.jsonl"), RUN_TIMEOUT_S,
                       "the first scene of the first run")
        first.pause()
        r = run_cli(*args)
        assert r.returncode == 2, r.stdout + r.stderr
        assert "in use by another run" in r.stderr and f"pid {first.proc.pid}" in r.stderr
        first.resume()
        assert first.finish() == 0, first.text()
    finally:
        first.close()
    lines = read_manifest(out / "manifest.jsonl")
    assert len(lines) == len(scenes) and all(l["status"] == "enhanced" for l in lines)


def test_ray_6_8_11_bad_inputs_fail_alone(on_ray, tmp_path):
    src, out = tmp_path / "scenes", tmp_path / "out"
    good = good_scenes(src, 2)
    extra = write_bad_inputs(src, tmp_path)
    r = run_cli("enhance", src, *extra, "-o", out, *on_ray)
    assert r.returncode == 1, r.stdout + r.stderr
    assert "Traceback" not in r.stdout + r.stderr
    by_name = {Path(l["input"]).name: l for l in last_run_lines(out)}
    assert {n: by_name[n]["reason"] for n in BAD_INPUT_REASONS} == BAD_INPUT_REASONS
    assert by_name["cut_flac.flac"]["worker"] is not None    # found by the actor decoding it
    for g in good:
        assert by_name[g.name]["status"] == "enhanced"
        assert_whole_copy(g, out / g.name)


def test_ray_7_settings_records_are_shared_with_the_pool(on_ray, tmp_path):
    src, out = tmp_path / "scenes", tmp_path / "out"
    good_scenes(src, 3)
    r = run_cli("enhance", src, "-o", out, *on_ray)
    assert r.returncode == 0, r.stdout + r.stderr
    r = run_cli("enhance", src, "-o", out, *FAST)                 # same settings, on the pool
    assert r.returncode == 0, r.stdout + r.stderr
    s = json.loads((out / "summary.json").read_text())
    assert (s["scenes_skipped"], s["scenes_redone"]) == (3, 0)
    r = run_cli("enhance", src, "-o", out, *on_ray, "--output-sample-rate", "16000")
    assert r.returncode == 0, r.stdout + r.stderr
    s = json.loads((out / "summary.json").read_text())
    assert (s["executor"], s["scenes_enhanced"], s["scenes_redone"]) == ("ray", 3, 3)
    assert "3 existing output(s) will be redone" in r.stdout + r.stderr
