"""Scene discovery, output paths, the manifest and the parent-side checks of a run (no workers)."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from conftest import write_tone
from whisperjav_enhance.config import EnhanceOptions
from whisperjav_enhance.errors import ConfigError, OutputError
from whisperjav_enhance.manifest import Manifest, read_manifest, write_json_atomic
from whisperjav_enhance.atomic import remove_partials
from whisperjav_enhance.preflight import check_disk_space, check_output_writable, output_is_complete
from whisperjav_enhance.scenes import (discover_scenes, natural_key, output_path_for,
                                       scenes_from_pairs)


def _wav(path: Path, seconds: float = 0.05) -> Path:
    write_tone(path, seconds, rate=16_000)
    return path


def test_natural_sort_orders_numbers_by_value():
    names = ["scene_10.wav", "scene_2.wav", "Scene_1.wav", "scene_100.wav", "scene_9b.wav"]
    assert sorted(names, key=natural_key) == ["Scene_1.wav", "scene_2.wav", "scene_9b.wav",
                                              "scene_10.wav", "scene_100.wav"]


def test_discovery_is_recursive_natural_and_maps_outputs(tmp_path):
    src = tmp_path / "in"
    for n in (10, 2, 1):
        _wav(src / f"movie_scene_{n}.wav")
    _wav(src / "sub" / "b_scene_3.FLAC")
    (src / "notes.txt").write_text("not a scene")
    _wav(src / ".hidden.wav")
    (src / ".movie_scene_1.abc123.partial").write_bytes(b"half")
    out = tmp_path / "out"
    scenes = discover_scenes([src], out)
    assert [s.relative for s in scenes] == ["movie_scene_1.wav", "movie_scene_2.wav",
                                            "movie_scene_10.wav", "sub/b_scene_3.wav"]
    assert [s.index for s in scenes] == [0, 1, 2, 3]
    assert scenes[3].input_path == src / "sub" / "b_scene_3.FLAC"
    assert scenes[3].output_path == out.absolute() / "sub" / "b_scene_3.wav"
    assert all(s.output_path.is_absolute() and s.input_path.is_absolute() for s in scenes)


def test_explicit_file_is_taken_whatever_its_suffix_and_once_only(tmp_path):
    src = tmp_path / "in"
    a = _wav(src / "a.wav")
    odd = src / "clip.audio"
    odd.write_bytes(a.read_bytes())
    scenes = discover_scenes([src, a, str(odd)], tmp_path / "out")
    assert [s.relative for s in scenes] == ["a.wav", "clip.wav"]  # a.wav once, first mapping


def test_missing_input_and_empty_folder_are_config_errors(tmp_path):
    with pytest.raises(ConfigError, match="does not exist"):
        discover_scenes([tmp_path / "nope"], tmp_path / "out")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ConfigError, match="no .wav or .flac"):
        discover_scenes([tmp_path / "empty"], tmp_path / "out")


def test_two_inputs_for_one_output_is_an_error_naming_both(tmp_path):
    src = tmp_path / "in"
    _wav(src / "x.wav")
    _wav(src / "x.flac")
    with pytest.raises(ConfigError) as info:
        discover_scenes([src], tmp_path / "out")
    assert "x.wav" in str(info.value) and "x.flac" in str(info.value)
    other = tmp_path / "other"
    _wav(other / "x.wav")
    with pytest.raises(ConfigError, match="both be written"):
        discover_scenes([src / "x.wav", other / "x.wav"], tmp_path / "out")


def test_output_may_not_overwrite_input_and_outputs_are_not_rediscovered(tmp_path):
    src = tmp_path / "in"
    _wav(src / "s1.wav")
    with pytest.raises(ConfigError, match="overwrite the input"):
        discover_scenes([src], src)
    nested_out = src / "enhanced"
    _wav(nested_out / "s1.wav")  # a previous run's output inside the input folder
    scenes = discover_scenes([src], nested_out)
    assert [s.relative for s in scenes] == ["s1.wav"]
    assert scenes[0].input_path == src / "s1.wav"


def test_output_paths_cannot_escape_out_dir(tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    assert output_path_for("a/b.flac", out) == out / "a" / "b.wav"
    for bad in ("../evil.wav", "a/../../evil.wav", str(tmp_path / "abs.wav")):
        with pytest.raises(ConfigError, match="outside"):
            output_path_for(bad, out)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    os.symlink(elsewhere, out / "link")
    with pytest.raises(ConfigError, match="outside"):
        output_path_for("link/x.wav", out)
    with pytest.raises(ConfigError, match="outside"):
        scenes_from_pairs([(tmp_path / "x.wav", "../x.wav")], out)


def test_stale_partials_of_these_outputs_are_removed_and_nothing_else(tmp_path):
    src = tmp_path / "in"
    _wav(src / "s1.wav")
    out = tmp_path / "out"
    scenes = discover_scenes([src], out)
    out.mkdir()
    stale = out / ".s1.k2j4_x9a.partial"    # an older version's (tempfile.mkstemp's) name
    other = out / ".unrelated.abc.partial"
    keep = out / "s1.txt"
    for p in (stale, other, keep):
        p.write_bytes(b"x")
    assert remove_partials(str(s.output_path) for s in scenes) == [stale]
    assert not stale.exists() and other.exists() and keep.exists()


def test_manifest_appends_flushed_lines_and_survives_a_cut_line(tmp_path):
    path = tmp_path / "manifest.jsonl"
    m = Manifest(path, "run1")
    m.write({"index": 0, "status": "enhanced"})
    # flushed per line: another reader sees it before close
    assert [r["index"] for r in read_manifest(path)] == [0]
    m.close()
    with open(path, "ab") as fh:
        fh.write(b'{"run": "run1", "index": 1, "sta')   # what a kill mid-write could leave
    with Manifest(path, "run2") as m2:
        m2.write({"index": 1, "status": "skipped"})
    records = read_manifest(path)
    assert [(r["run"], r["index"], r["status"]) for r in records] == [
        ("run1", 0, "enhanced"), ("run2", 1, "skipped")]
    assert all("time" in r for r in records)
    assert read_manifest(tmp_path / "missing.jsonl") == []


def test_json_summary_is_written_atomically(tmp_path):
    target = tmp_path / "deep" / "summary.json"
    write_json_atomic(target, {"a": 1, "p": Path("/x")})
    assert json.loads(target.read_text()) == {"a": 1, "p": "/x"}
    assert [p.name for p in target.parent.iterdir()] == ["summary.json"]


def test_output_checks_in_the_parent(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("in the way")
    with pytest.raises(OutputError, match="not a folder"):
        check_output_writable(blocker)
    with pytest.raises(OutputError, match="cannot write"):
        check_output_writable(blocker / "sub")
    check_output_writable(tmp_path / "new" / "out")
    assert list((tmp_path / "new" / "out").iterdir()) == []  # the probe file is gone
    with pytest.raises(OutputError, match=r"has \S+ [KMGT]iB free but the outputs need about "
                                          r"4096 TiB; free some space or choose another"):
        check_disk_space(tmp_path, 1 << 52)
    check_disk_space(tmp_path, 1)
    check_disk_space(tmp_path / "not" / "made" / "yet", 1)   # a dry run: OUT_DIR not made


def test_output_is_complete_only_for_readable_audio(tmp_path):
    good = _wav(tmp_path / "good.wav")
    empty = tmp_path / "empty.wav"
    empty.write_bytes(b"")
    junk = tmp_path / "junk.wav"
    junk.write_bytes(b"not audio at all")
    assert output_is_complete(good)
    assert not output_is_complete(empty)
    assert not output_is_complete(junk)
    assert not output_is_complete(tmp_path / "missing.wav")


def test_max_scene_seconds_is_validated():
    assert EnhanceOptions(max_scene_seconds=2.5).max_scene_seconds == 2.5
    for bad in (0, -1, float("nan"), 10 * 3600.0):
        with pytest.raises(ConfigError):
            EnhanceOptions(max_scene_seconds=bad)
