"""Helpers for the executor tests: tiny scene files, task/unit construction, an event recorder,
the checks every executor test makes (outputs whole and equal to the input, no temporaries, no
live worker processes), running on a named transport, and what the crash table and the interrupt
tests share (every transport must behave alike)."""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

import multiprocess
import numpy as np
import soundfile as sf

from whisperjav_enhance.devices import DeviceSlot
from whisperjav_enhance.events import SceneFinished, WorkerCrashed, WorkerStarted
from whisperjav_enhance.executor import SceneTask, WorkerSpec, execute, make_transport
from whisperjav_enhance.planning import WorkUnit

RATE = 48_000
FAULTY = "fault_injection.backend:FaultyBackend"   # tests/fault_injection/backend.py
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


def executor_on(transport: str, ray_address: str | None = None):
    """``execute`` with ``transport`` ("pool", "inprocess" or "ray"): a fresh transport per call."""
    def run(tasks, units, specs, policy, on_event=None):
        return execute(tasks, units, specs, policy, on_event,
                       make_transport(transport, ray_address=ray_address))
    return run


def run_pool(tasks, units, specs, policy, on_event=None):
    """``execute`` on spawned local processes (the default transport)."""
    return execute(tasks, units, specs, policy, on_event)


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


# -- the crash table (test_crash_table.py) -------------------------------------------------------------
class CrashRun:
    """One run of a crash table, looked up by scene name (the input file's stem)."""

    def __init__(self, tasks, report, rec, folder):
        self.tasks, self.report, self.rec, self.folder = tasks, report, rec, folder
        self.pos = {Path(t.input_path).stem: i for i, t in enumerate(tasks)}

    def outcome(self, name):
        return self.report.outcomes[self.pos[name]]

    def has(self, name) -> bool:
        return name in self.pos

    def crashes_matching(self, text):
        return [e for e in self.rec.of(WorkerCrashed) if text in e.description]


def run_crash_table(folder: Path, scenes, execute, policy, kill_first: bool = True) -> CrashRun:
    """Run ``scenes`` as units of two (a well-behaved scene, then a faulty one) through ``execute``
    (:func:`executor_on`'s signature). Worker 1 is SIGKILLed from outside
    as soon as it is ready, and a stale temporary of ``e1_exit_once`` waits to be removed."""
    tasks = make_tasks(folder, scenes)
    if any(name == "e1_exit_once" for name, _ in scenes):
        # What a writer killed mid-file leaves behind: the crash handling must remove it.
        stale = folder / "out" / ".e1_exit_once.x7y8z9w0.partial"
        stale.parent.mkdir(parents=True, exist_ok=True)
        stale.write_bytes(b"half a file")

    def kill_first_worker(event):
        if kill_first and isinstance(event, WorkerStarted) and event.worker == 1:
            os.kill(event.pid, signal.SIGKILL)  # the worker's process, from outside the executor

    rec = Recorder(kill_first_worker)
    report = execute(tasks, units_of([[2 * u, 2 * u + 1] for u in range(len(scenes) // 2)]),
                     [faulty_spec(**SMALL_WINDOWS)], policy, rec)
    return CrashRun(tasks, report, rec, folder)


def assert_each_scene_ends_once(crash_run: CrashRun, failed: int) -> None:
    """One outcome per task in task order, one SceneFinished each, and ``failed`` of them failed."""
    report = crash_run.report
    assert [o.index for o in report.outcomes] == [t.index for t in crash_run.tasks]
    assert_one_terminal_event_each(crash_run.tasks, crash_run.rec)
    statuses = [o.status for o in report.outcomes]
    assert statuses.count("failed") == failed
    assert statuses.count("enhanced") == len(crash_run.tasks) - failed


def assert_crash_case(crash_run: CrashRun, enhanced, failed: dict, crash_text: str | None) -> None:
    """``enhanced`` scenes whole and equal to their input, ``failed`` ones (name -> reason) without
    an output, and a crash whose description holds ``crash_text`` (None: no crash expected)."""
    for name in enhanced:
        assert_enhanced_equal_input(crash_run.tasks[crash_run.pos[name]], crash_run.outcome(name))
    for name, reason in failed.items():
        o = crash_run.outcome(name)
        assert (o.status, o.reason, o.output_path) == ("failed", reason, None), o
        assert not Path(crash_run.tasks[crash_run.pos[name]].output_path).exists()
    if crash_text is not None:
        assert crash_run.crashes_matching(crash_text), [e.description
                                                        for e in crash_run.rec.of(WorkerCrashed)]


# -- Ctrl-C / SIGTERM in the middle of a run (test_executor.py, test_ray_executor.py) ---------------
INTERRUPT_UNITS = [[0, 1], [2], [3]]  # s2 hangs: the run is still going when s1 finishes


def interrupt_setup(folder: Path, how: str):
    """Tasks s0..s3 (s2 hangs, a stale temporary of it waits) and a recorder that interrupts the
    run (``how``: "ctrl-c" or "sigterm") when s1 finishes."""
    tasks = make_tasks(folder, [("s0", 0.1), ("s1", 0.1), ("s2_hang", 0.1), ("s3", 0.1)])
    stale = Path(tasks[2].output_path).parent / ".s2_hang.a1b2c3d4.partial"
    stale.parent.mkdir(parents=True, exist_ok=True)
    stale.write_bytes(b"what a killed writer leaves")

    def interrupt(event):
        if isinstance(event, SceneFinished) and event.index == tasks[1].index:
            if how == "ctrl-c":
                raise KeyboardInterrupt
            os.kill(os.getpid(), signal.SIGTERM)

    return tasks, Recorder(interrupt)


def assert_interrupted_cleanly(folder: Path, tasks, err, rec: Recorder) -> None:
    """After :func:`interrupt_setup`'s run: s0 and s1 kept, s3 never written, no temporaries and
    no worker left."""
    assert sorted(o.index for o in err.outcomes) == [tasks[0].index, tasks[1].index]
    assert_enhanced_equal_input(tasks[0], err.outcomes[0])
    assert not Path(tasks[3].output_path).exists()
    assert_no_partials(folder)
    assert_workers_gone(rec.pids())
