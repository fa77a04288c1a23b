"""The run around the executor (pipeline.py, runner.py): what it keeps open, how settings are
keyed for resume, and what an interrupted run's summary says."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from whisperjav_enhance import EnhanceOptions, PoolPolicy, enhance_scenes
from whisperjav_enhance.backends.base import OptionText
from whisperjav_enhance.errors import RunInterrupted
from whisperjav_enhance.events import SceneFinished

from conftest import write_tone

FAST = dict(backend="passthrough", device="cpu")
SAFE = PoolPolicy(startup_timeout_s=120.0, workers_per_device=1)


def _scenes(folder: Path, n: int) -> Path:
    for i in range(n):
        write_tone(folder / f"film_scene_{i:04d}.wav", 0.2, seed=i)
    return folder


@pytest.mark.skipif(not Path("/proc/self/fd").exists(), reason="reads /proc/self/fd")
def test_a_run_leaves_none_of_its_files_open(tmp_path):
    enhance_scenes([_scenes(tmp_path / "in", 2)], tmp_path / "out", EnhanceOptions(**FAST), SAFE)
    open_files = {os.readlink(f"/proc/self/fd/{fd}") for fd in os.listdir("/proc/self/fd")
                  if os.path.exists(f"/proc/self/fd/{fd}")}
    assert not [f for f in open_files if str(tmp_path / "out") in f], open_files


@pytest.mark.timeout(240)
def test_one_setting_spelt_three_ways_is_one_resume_key(tmp_path):
    """The default, a number and a number typed on a command line are one setting: a rerun
    redoes nothing; another value redoes everything."""
    src, out = _scenes(tmp_path / "in", 2), tmp_path / "out"
    first = enhance_scenes([src], out, EnhanceOptions(**FAST), SAFE)
    assert first.scenes_enhanced == 2
    for spelling in ({"window_seconds": 4.0}, {"window_seconds": OptionText("4")},
                     {"window_seconds": 4}):
        again = enhance_scenes([src], out, EnhanceOptions(backend_options=spelling, **FAST), SAFE)
        assert (again.scenes_skipped, again.scenes_redone) == (2, 0), spelling
    other = enhance_scenes([src], out, EnhanceOptions(backend_options={"window_seconds": 2.0},
                                                      **FAST), SAFE)
    assert (other.scenes_enhanced, other.scenes_redone) == (2, 2)


@pytest.mark.timeout(240)
def test_an_interrupted_runs_summary_keeps_its_records_and_counters(tmp_path):
    src, out = _scenes(tmp_path / "in", 3), tmp_path / "out"
    finished = []

    def stop_after_the_first(event):
        if isinstance(event, SceneFinished):
            finished.append(event.index)
            raise KeyboardInterrupt

    with pytest.raises(RunInterrupted) as info:
        enhance_scenes([src], out, EnhanceOptions(batch_seconds=0.001, **FAST), SAFE,
                       on_event=stop_after_the_first)
    summary = json.loads((out / "summary.json").read_text())
    assert summary["interrupted"] is True and summary["scenes_enhanced"] == len(finished) == 1
    assert summary["workers_started"] >= 1  # the executor's counters, not zeros
    assert info.value.summary.workers_started == summary["workers_started"]
    lines = [json.loads(line) for line in (out / "manifest.jsonl").read_text().splitlines()]
    assert [line["status"] for line in lines] == ["enhanced"]
