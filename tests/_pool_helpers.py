"""Helpers for the pool tests: tiny scene files, task/unit construction, an event recorder and the
checks every pool test makes (outputs whole and equal to the input, no temporaries, no live
worker processes)."""

from __future__ import annotations

import os
import time
from pathlib import Path

import multiprocess
import numpy as np
import soundfile as sf

from whisperjav_enhance.devices import DeviceSlot
from whisperjav_enhance.events import SceneFinished, WorkerStarted
from whisperjav_enhance.planning import WorkUnit
from whisperjav_enhance.pool import SceneTask, WorkerSpec

RATE = 48_000
FAULTY = "whisperjav_enhance.testing:FaultyBackend"
CPU = DeviceSlot("cpu", "", "cpu")
SMALL_WINDOWS = {"window_seconds": 0.1, "overlap_seconds": 0.025}  # several windows per scene


def write_scene(path: Path, seconds: float, seed: int) -> np.ndarray:
    """Noise written as PCM_16; returns the int16 samples the file holds."""
    n = int(round(seconds * RATE))
    x = np.clip(0.2 * np.random.default_rng(seed).standard_normal(n), -1, 1).astype(np.float32)
    path.parent.mkdir(parents=True, exist_ok=True)
    sf.write(str(path), x, RATE, subtype="PCM_16")
    return sf.read(str(path), dtype="int16")[0]


def make_tasks(folder: Path, scenes: list[tuple[str, float]]) -> list[SceneTask]:
    """One task per ``(name, seconds)``; inputs in ``folder/in``, outputs in ``folder/out``."""
    tasks = []
    for i, (name, seconds) in enumerate(scenes):
        src = folder / "in" / f"{name}.wav"
        write_scene(src, seconds, seed=i)
        tasks.append(SceneTask(index=100 + i, input_path=str(src),
                               output_path=str(folder / "out" / f"{name}.wav"),
                               duration_s=seconds, output_sample_rate=None))
    return tasks


def units_of(groups: list[list[int]]) -> list[WorkUnit]:
    return [WorkUnit(i, tuple(g), 0.0) for i, g in enumerate(groups)]


def faulty_spec(**options) -> WorkerSpec:
    return WorkerSpec(backend=FAULTY, weights_path=None, backend_options=options, slot=CPU)


class Recorder:
    """on_event callback that keeps every event (and can run a hook per event)."""

    def __init__(self, hook=None):
        self.events = []
        self.hook = hook

    def __call__(self, event):
        self.events.append(event)
        if self.hook is not None:
            self.hook(event)

    def of(self, cls):
        return [e for e in self.events if isinstance(e, cls)]

    def pids(self) -> list[int]:
        return [e.pid for e in self.of(WorkerStarted)]


def assert_enhanced_equal_input(task: SceneTask, outcome) -> None:
    assert outcome.status == "enhanced", outcome
    assert outcome.output_path == task.output_path
    got, rate = sf.read(task.output_path, dtype="int16")
    want, _ = sf.read(task.input_path, dtype="int16")
    assert rate == RATE and got.shape == want.shape  # whole
    # Passthrough, sample for sample; overlap-add divides by the weight sum in float32, which can
    # move a sample by one rounding step of the 16-bit output.
    np.testing.assert_allclose(got.astype(np.int32), want.astype(np.int32), rtol=0, atol=1)


def assert_one_terminal_event_each(tasks, recorder: Recorder) -> None:
    finished = [e.index for e in recorder.of(SceneFinished)]
    assert sorted(finished) == sorted(t.index for t in tasks), "each scene exactly one SceneFinished"


def assert_no_partials(folder: Path) -> None:
    left = [p for p in folder.rglob("*.partial")]
    assert not left, f"temporary files left behind: {left}"


def assert_workers_gone(pids, timeout_s: float = 10.0) -> None:
    deadline = time.monotonic() + timeout_s
    alive = list(pids)
    while alive and time.monotonic() < deadline:
        alive = [p for p in alive if _alive(p)]
        if alive:
            time.sleep(0.05)
    assert not alive, f"worker processes still alive: {alive}"
    assert not multiprocess.active_children()


def _alive(pid: int) -> bool:
    stat = Path(f"/proc/{pid}/stat")
    if stat.exists():  # a zombie is dead for our purposes (its parent reaps it)
        try:
            return stat.read_text().rsplit(")", 1)[1].split()[0] != "Z"
        except OSError:
            return False
    try:
        os.kill(pid, 0)
    except OSError:
        return False
    return True
