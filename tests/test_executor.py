"""The executor: a worker's per-unit code (in this process, fast), the driver's rules on small
hand-made records, the in-process transport, and the spawned local pool's recycling, warm standby,
several workers, fatal load failures and interruption.

The crash-case table, run on every transport, is in test_crash_table.py; Ray's own behaviour in
test_ray_executor.py. Spawned workers of the test backend import torch (~3 s each on the 2-core
machine), so each spawning test starts as few workers as its point needs."""

from __future__ import annotations

import os
import re
import signal
import time
from pathlib import Path

import numpy as np
import pytest

from whisperjav_enhance.config import PoolPolicy
from whisperjav_enhance.errors import (BackendUnavailable, RunInterrupted, WeightsError)
from whisperjav_enhance.events import SceneFinished, Telemetry, WorkerRetired, WorkerStarted
from whisperjav_enhance.executor import (ExecutorReport, RemoteTraceback, SceneTask, WorkerSpec,
                                         standby, telemetry)
from whisperjav_enhance.atomic import remove_partials
from whisperjav_enhance.executor.driver import Driver
from whisperjav_enhance.executor.failures import describe_exit, hung_message, load_error
from whisperjav_enhance.executor.ledger import validate_units
from whisperjav_enhance.executor.local import LocalTransport
from whisperjav_enhance.executor.messages import (Alive, LoadFailed, SceneDone, UnitAssignment,
                                                  UnitDone)
from whisperjav_enhance.executor.runtime import WorkerRuntime
from whisperjav_enhance.executor.scheduling import Job
from whisperjav_enhance.executor.workers import Lane, State, Worker

from _executor_helpers import (CPU, FAULTY, INTERRUPT_UNITS, SMALL_WINDOWS, Recorder,
                               assert_enhanced_equal_input, assert_interrupted_cleanly,
                               assert_no_partials, assert_one_terminal_event_each,
                               assert_workers_gone, executor_on, faulty_spec, interrupt_setup,
                               make_tasks, run_pool, units_of)
from fault_injection.backend import FaultyBackend

# Generous limits: the machine is shared, and these only stop a test that went wrong.
SAFE = dict(scene_timeout_s=60.0, startup_timeout_s=120.0, workers_per_device=1)


# -- the per-unit worker code, run in this process ------------------------------------------------
def _runtime(policy=None, **options) -> WorkerRuntime:
    rt = WorkerRuntime(7, faulty_spec(**{**SMALL_WINDOWS, **options}), policy or PoolPolicy(), "cpu")
    rt.load(0.0)
    return rt


def _unit(tasks, positions, unit_id=0, oom_final=(), **kw) -> UnitAssignment:
    return UnitAssignment(unit_id, tuple(tasks[p] for p in positions),
                          tuple(tasks[p].index for p in oom_final), **kw)


def _run(rt, unit):
    """Results by position in ``unit``'s task list (the tests' tasks are indexed from 100)."""
    got = []
    retiring = rt.run_unit(unit, got.append)
    results = {m.result.index - 100: m.result for m in got if isinstance(m, SceneDone)}
    done = [m for m in got if isinstance(m, UnitDone)]
    assert len(done) == 1 and isinstance(got[-1], UnitDone), "UnitDone closes every unit"
    return results, done[0], retiring


def test_backend_error_in_a_batch_fails_only_the_culprit(tmp_path):
    tasks = make_tasks(tmp_path, [("a", 0.25), ("b_raise", 0.2), ("c", 0.3)])
    results, done, retiring = _run(_runtime(), _unit(tasks, [0, 1, 2]))
    assert retiring is None
    assert (results[1].status, results[1].reason) == ("failed", "backend_error")
    assert "injected backend failure" in results[1].message
    for p in (0, 2):
        assert_enhanced_equal_input(tasks[p], results[p])
    assert done.scenes_done == 3 and done.memory.allocated_bytes is None  # CPU: no allocator
    assert done.memory.rss_bytes and done.memory.rss_bytes > 10 * 2**20


def test_oom_in_a_batch_halves_it_and_every_scene_finishes(tmp_path):
    tasks = make_tasks(tmp_path, [("a", 0.3), ("b_oom", 0.3)])
    rt = _runtime()
    results, done, retiring = _run(rt, _unit(tasks, [0, 1]))
    assert retiring is None and done.oom_events >= 1
    assert done.batch_sizes[4800] < 4  # the engine halved from the CPU default of 4 windows
    for p in (0, 1):
        assert_enhanced_equal_input(tasks[p], results[p])


def test_window_too_big_alone_fails_in_a_fresh_worker_and_retires_a_used_one(tmp_path):
    tasks = make_tasks(tmp_path, [("a", 0.2), ("b_oomalways", 0.2), ("c", 0.2), ("d_oomalways", 0.2)])
    fresh = _runtime()
    results, _, retiring = _run(fresh, _unit(tasks, [0, 1]))
    assert retiring is None
    assert (results[1].status, results[1].reason) == ("failed", "out_of_memory")
    assert_enhanced_equal_input(tasks[0], results[0])
    # Same worker, second unit: its allocator has history, so it retires and gives the scenes back.
    results, _, retiring = _run(fresh, _unit(tasks, [2, 3], unit_id=1))
    assert retiring is not None and retiring.reason == "oom" and retiring.culprit == tasks[3].index
    assert tasks[3].index in retiring.unfinished and 3 not in results
    # A scene that already ran out of memory elsewhere fails instead of retiring the worker again.
    results, _, retiring = _run(fresh, _unit(tasks, [3], unit_id=1, oom_final=(3,)))
    assert retiring is None and results[3].reason == "out_of_memory"


def test_forwards_send_a_rate_limited_sign_of_life(tmp_path, monkeypatch):
    from whisperjav_enhance.executor import runtime

    tasks = make_tasks(tmp_path, [("long", 0.6)])
    rt = _runtime()
    got = []
    rt.run_unit(_unit(tasks, [0]), got.append)
    assert not [m for m in got if isinstance(m, Alive)]  # fast forwards: nothing but the results
    monkeypatch.setattr(runtime, "HEARTBEAT_S", 0.0)
    got = []
    rt.run_unit(_unit(tasks, [0], unit_id=1), got.append)
    kinds = [type(m).__name__ for m in got]
    assert kinds.count("Alive") >= 2, kinds  # ~8 windows of 0.1 s, 4 per CPU forward: one each
    assert kinds.index("Alive") < kinds.index("SceneDone") and kinds[-1] == "UnitDone"
    assert all(m.worker == 7 for m in got if isinstance(m, Alive))


def _driver(tasks, jobs, policy, lanes=1) -> Driver:
    """A driver over hand-made records: nothing is started (its transport is never opened)."""
    return Driver(tasks, jobs, LocalTransport(), [Lane(i, faulty_spec()) for i in range(lanes)],
                  policy, None)


def test_a_sign_of_life_defers_the_watchdog_of_a_long_scene():
    policy = PoolPolicy(scene_timeout_s=30.0)
    tasks = [SceneTask(0, "/in/0.wav", "/out/0.wav", 1200.0, None)]
    drv = _driver(tasks, [Job(0, (0,))], policy)
    w = Worker(1, drv.lanes[0], state=State.READY)
    drv.sched.assign(w)
    w.state = State.BUSY
    w.progress_at -= 29.0  # 29 s into a scene that takes 20 minutes
    before = drv._deadline(w)
    drv._handle(w, Alive(1))
    assert drv._deadline(w) >= before + 29.0 - 1.0  # a fresh scene_timeout_s from now
    assert "no window or scene finished in 30 s" in hung_message(30.0)


def test_unreadable_input_and_unwritable_output_fail_their_scene_only(tmp_path):
    tasks = make_tasks(tmp_path, [("a", 0.2), ("bad", 0.2), ("c", 0.2)])
    Path(tasks[1].input_path).write_bytes(b"RIFF not really a wave file")
    blocker = tmp_path / "blocker"
    blocker.write_text("a file where a folder should be")
    tasks[2] = SceneTask(tasks[2].index, tasks[2].input_path, str(blocker / "c.wav"), 0.2, None)
    results, _, _ = _run(_runtime(), _unit(tasks, [0, 1, 2]))
    assert (results[1].status, results[1].reason) == ("failed", "unreadable")
    assert (results[2].status, results[2].reason) == ("failed", "write_failed")
    assert_enhanced_equal_input(tasks[0], results[0])


def test_retire_decisions_use_scene_count_and_allocator_drift(tmp_path):
    tasks = make_tasks(tmp_path, [(f"s{i}", 0.05) for i in range(3)])
    rt = _runtime(PoolPolicy(max_scenes_per_worker=2, max_drift_mb=100),
                  fake_drift_mib_per_forward=60)
    try:
        _, done, retiring = _run(rt, _unit(tasks, [0]))
        assert retiring is None and done.memory.drift_bytes == 60 * 2**20
        _, done, retiring = _run(rt, _unit(tasks, [1], unit_id=1))
        # Both limits are reached; the scene count is checked first.
        assert retiring.reason == "max_scenes" and done.retiring == "max_scenes"
    finally:
        rt.close()
    rt = _runtime(PoolPolicy(max_scenes_per_worker=50, max_drift_mb=100),
                  fake_drift_mib_per_forward=60)
    try:
        _run(rt, _unit(tasks, [0]))
        _, done, retiring = _run(rt, _unit(tasks, [1], unit_id=1))
        assert retiring.reason == "drift" and "120 MiB" in retiring.message
    finally:
        rt.close()
    # Without injected drift the backend reports what torch's allocator says: nothing on a CPU.
    assert FaultyBackend().allocator_stats("cpu") is None


# -- small parts ---------------------------------------------------------------------------------
@pytest.mark.parametrize("code, expect", [
    (-signal.SIGKILL, "SIGKILL: killed from outside"),
    (-signal.SIGSEGV, "SIGSEGV: native crash"),
    (-signal.SIGABRT, "SIGABRT: native abort"),
    (3, "exit code 3"),
    (0xC0000005, "access violation"),
])
def test_exit_descriptions_name_signal_and_cause(code, expect):
    assert expect in describe_exit(code)


def test_telemetry_reads_rss_and_the_allocator_counters_it_is_given():
    snap = telemetry.snapshot(None)
    assert snap.allocated_bytes is None and snap.drift_bytes is None
    assert snap.rss_bytes > 10 * 2**20
    fake = {"allocated_bytes.all.current": 5, "reserved_bytes.all.current": 12,
            "inactive_split_bytes.all.current": 3, "reserved_bytes.all.peak": 20,
            "allocated_bytes.all.peak": 2 * 2**20, "num_alloc_retries": 1, "num_ooms": 0}
    snap = telemetry.snapshot(fake)
    assert (snap.drift_bytes, snap.inactive_split_bytes, snap.peak_reserved_bytes) == (7, 3, 20)
    event = snap.to_event(worker=1, scenes_done=4)
    assert isinstance(event, Telemetry) and event.alloc_retries == 1
    assert snap.peak_allocated_bytes == 2 * 2**20 and event.peak_allocated_mib == 2.0


def test_remove_partials_touches_only_the_named_outputs_temporaries(tmp_path):
    mine = tmp_path / ".a.k3j_x9q1.partial"
    other = tmp_path / ".a.b.zz81k2aa.partial"   # the temporary of "a.b.wav", not of "a.wav"
    for p in (mine, other):
        p.write_bytes(b"x")
    assert remove_partials([str(tmp_path / "a.wav")]) == [mine]
    assert other.exists()


def test_units_must_cover_every_task_once():
    assert validate_units(3, units_of([[0, 2], [1]])) == [(0, 2), (1,)]
    with pytest.raises(ValueError, match="missing"):
        validate_units(3, units_of([[0, 1]]))
    with pytest.raises(ValueError, match="repeated"):
        validate_units(2, units_of([[0, 1], [1]]))


def test_load_failures_become_the_same_error_class_in_the_parent():
    spec = faulty_spec()
    err = load_error(LoadFailed(1, "WeightsError", "no weights\nSearched:\n  - /x", "tb", ("/x",)), spec)
    assert isinstance(err, WeightsError) and err.searched == ("/x",)
    err = load_error(LoadFailed(1, "ModuleNotFoundError", "No module named 'einops'", "tb"), spec)
    assert isinstance(err, BackendUnavailable) and "einops" in str(err)


@pytest.mark.parametrize("queued, max_standbys, done, busy_s, expect", [
    (200, 4, 5, 0.5, 3),    # 0.1 s/scene: retires in 2 s, lives 2.5 s, starts take 6 s: 3 loading
    (200, 1, 5, 0.5, 1),    # ... capped by policy.max_standby_workers
    (10, 4, 5, 0.5, 0),     # the run ends before this worker retires
    (200, 4, 5, 50.0, 0),   # 10 s/scene: retirement is 200 s away, nothing to start yet
    (200, 4, 0, 0.0, 0),    # no measurement yet and no retirement in sight
])
def test_standby_depth_follows_worker_life_and_start_time(queued, max_standbys, done, busy_s, expect):
    policy = PoolPolicy(max_scenes_per_worker=25, max_standby_workers=max_standbys)
    lane = Lane(0, faulty_spec())
    lane.active = Worker(1, lane, state=State.READY, scenes_done=done, busy_s=busy_s)
    assert standby.standbys_wanted(lane, policy, 1, queued, [6.0]) == expect


@pytest.mark.parametrize("queued_jobs, expect", [(1, [0]), (2, [0, 1]), (0, [])])
def test_lanes_near_retirement_start_no_more_standbys_than_queued_jobs(queued_jobs, expect):
    # Two lanes, each active worker on the last unit of its life: each lane alone wants a
    # successor, but a standby beyond the queued jobs would only load and be stopped unused.
    policy = PoolPolicy(max_scenes_per_worker=3, workers_per_device=2)
    tasks = [SceneTask(i, f"/in/{i}.wav", f"/out/{i}.wav", 1.0, None) for i in range(2 + queued_jobs)]
    drv = _driver(tasks, [Job(i, (i,)) for i in range(len(tasks))], policy, lanes=2)
    for i, lane in enumerate(drv.lanes):
        w = Worker(i + 1, lane, state=State.READY, scenes_done=2, busy_s=1.0)
        drv.sched.assign(w)  # its third scene: it retires after this unit
        w.state, lane.active = State.BUSY, w
    drv.sched.startup_seconds = [6.0]
    started = []

    def start(lane, role, why):  # records the decision instead of starting a process
        started.append(lane.index)
        lane.standbys.append(object())
        return True

    drv._start = start
    drv._start_standbys()
    assert started == expect


# -- the in-process transport ---------------------------------------------------------------------
def test_inprocess_runs_the_same_per_unit_code(tmp_path):
    tasks = make_tasks(tmp_path, [("a", 0.25), ("b_raise", 0.1), ("c", 0.3), ("d", 0.05)])
    rec = Recorder()
    report = executor_on("inprocess")(tasks, units_of([[0, 1], [2, 3]]),
                                      [faulty_spec(**SMALL_WINDOWS)], PoolPolicy(), on_event=rec)
    assert isinstance(report, ExecutorReport) and report.workers_started == 1
    assert [o.index for o in report.outcomes] == [t.index for t in tasks]
    assert report.outcomes[1].reason == "backend_error"
    for p in (0, 2, 3):
        assert_enhanced_equal_input(tasks[p], report.outcomes[p])
    assert_one_terminal_event_each(tasks, rec)
    assert len(rec.of(Telemetry)) == 2 and report.batch_sizes


def test_inprocess_ctrl_c_keeps_finished_scenes_and_removes_temporaries(tmp_path):
    tasks = make_tasks(tmp_path, [("a", 0.1), ("b", 0.1), ("c", 0.1)])
    stale = Path(tasks[2].output_path).parent / ".c.q1w2e3r4.partial"
    stale.parent.mkdir(parents=True, exist_ok=True)
    stale.write_bytes(b"half a file")

    def interrupt(event):
        if isinstance(event, SceneFinished):
            raise KeyboardInterrupt

    with pytest.raises(RunInterrupted) as info:
        executor_on("inprocess")(tasks, units_of([[0], [1], [2]]), [faulty_spec(**SMALL_WINDOWS)],
                                 PoolPolicy(), on_event=Recorder(interrupt))
    assert [o.index for o in info.value.outcomes] == [tasks[0].index]
    assert Path(tasks[0].output_path).exists() and not Path(tasks[2].output_path).exists()
    assert_no_partials(tmp_path)


# -- the spawned local pool ------------------------------------------------------------------------
@pytest.mark.timeout(240)
def test_recycles_after_n_scenes_with_a_warm_standby(tmp_path):
    # Worker 1 takes scene 0, then scene 1, after which it has done max_scenes_per_worker=2 scenes:
    # the driver starts worker 2 as a standby the moment it hands out scene 1. Scene 1 blocks
    # until the test sees worker 2 ready, so the order of events is the proof, not a clock.
    tasks = make_tasks(tmp_path, [("s0", 0.2), ("s1_wait", 0.2), ("s2", 0.25), ("s3", 0.1)])
    go = Path(tasks[1].input_path + ".go")

    def release_when_standby_ready(event):
        if isinstance(event, WorkerStarted) and event.worker == 2:
            go.touch()

    rec = Recorder(release_when_standby_ready)
    policy = PoolPolicy(max_scenes_per_worker=2, **SAFE)
    report = run_pool(tasks, units_of([[0], [1], [2], [3]]), [faulty_spec(**SMALL_WINDOWS)],
                      policy, on_event=rec)
    for task, outcome in zip(tasks, report.outcomes):
        assert_enhanced_equal_input(task, outcome)
    assert [o.worker for o in report.outcomes] == [1, 1, 2, 2]
    order = [(type(e).__name__, e.worker) for e in rec.events
             if isinstance(e, (WorkerStarted, WorkerRetired))]
    assert order.index(("WorkerStarted", 2)) < order.index(("WorkerRetired", 1))
    assert [e.reason for e in rec.of(WorkerRetired)] == ["max_scenes", "max_scenes"]
    assert report.recycles == {"max_scenes": 2} and report.workers_started == 2
    assert report.worker_crashes == 0 and len(report.startup_seconds) == 2
    # The second start overlapped worker 1's work, so the run never waited for it.
    assert report.recycle_wait_seconds < 0.5 * report.startup_seconds[1]
    assert_one_terminal_event_each(tasks, rec)
    assert_no_partials(tmp_path)
    assert_workers_gone(rec.pids())


def test_a_standby_that_fails_to_load_is_a_crash_not_the_end_of_the_run(tmp_path):
    # The first worker loads, so the setup is sound; the second (a standby) raises while loading,
    # as a CUDA context that does not fit beside the active batch would. That worker is replaced
    # and every scene is still enhanced; only a failure before any worker loaded stops the run.
    from whisperjav_enhance.events import WorkerCrashed

    tasks = make_tasks(tmp_path, [("s0", 0.1), ("s1", 0.1), ("s2", 0.1), ("s3", 0.1)])
    rec = Recorder()
    spec = faulty_spec(fail_second_load=str(tmp_path / "loads"), **SMALL_WINDOWS)
    report = run_pool(tasks, units_of([[0], [1], [2], [3]]), [spec],
                      PoolPolicy(max_scenes_per_worker=2, **SAFE), on_event=rec)
    for task, outcome in zip(tasks, report.outcomes):
        assert_enhanced_equal_input(task, outcome)
    crashes = rec.of(WorkerCrashed)
    assert len(crashes) == 1 and "failed to load: RuntimeError" in crashes[0].description
    assert report.worker_crashes == 1 and report.workers_started >= 3
    assert_one_terminal_event_each(tasks, rec)
    assert_workers_gone(rec.pids())


def test_a_load_failure_before_any_worker_loaded_stops_the_run(tmp_path):
    (tmp_path / "loads").write_text("1")   # the first load of this run is "the second": it fails
    tasks = make_tasks(tmp_path, [("s0", 0.1)])
    spec = faulty_spec(fail_second_load=str(tmp_path / "loads"), **SMALL_WINDOWS)
    with pytest.raises(BackendUnavailable, match="RuntimeError: CUDA out of memory"):
        run_pool(tasks, units_of([[0]]), [spec], PoolPolicy(**SAFE))


@pytest.mark.timeout(240)
def test_drift_recycling_from_injected_allocator_telemetry(tmp_path):
    # The test backend reports reserved - allocated growing by 60 MiB per forward; one forward per
    # unit here, so worker 1 measures 60 then 120 MiB and retires on the 100 MiB limit. A drift
    # jump is not predictable, so this replacement is a cold start (the contrast to the standby).
    tasks = make_tasks(tmp_path, [("s0", 0.05), ("s1", 0.08), ("s2", 0.1)])
    rec = Recorder()
    policy = PoolPolicy(max_drift_mb=100, **SAFE)
    report = run_pool(tasks, units_of([[0], [1], [2]]),
                      [faulty_spec(fake_drift_mib_per_forward=60, **SMALL_WINDOWS)], policy,
                      on_event=rec)
    for task, outcome in zip(tasks, report.outcomes):
        assert_enhanced_equal_input(task, outcome)
    assert [o.worker for o in report.outcomes] == [1, 1, 2]
    assert report.recycles == {"drift": 1}
    drift = [(t.worker, t.reserved_mib - t.allocated_mib) for t in rec.of(Telemetry)]
    assert drift == [(1, 60.0), (1, 120.0), (2, 60.0)]
    order = [(type(e).__name__, e.worker) for e in rec.events
             if isinstance(e, (WorkerStarted, WorkerRetired))]
    assert order.index(("WorkerRetired", 1)) < order.index(("WorkerStarted", 2))
    assert report.recycle_wait_seconds > 0
    assert report.peak_vram_mib == pytest.approx(100 + 120)
    assert_workers_gone(rec.pids())


@pytest.mark.timeout(240)
def test_two_workers_per_device_share_the_units(tmp_path):
    names = ["s0_wait", "s1_wait"] + [f"s{i}" for i in range(2, 6)]
    tasks = make_tasks(tmp_path, [(n, 0.05 + 0.03 * i) for i, n in enumerate(names)])
    go = [Path(t.input_path + ".go") for t in tasks[0:2]]
    started = set()

    def both_ready(event):
        # Each worker's first unit blocks until both workers are up: so both must take part.
        if isinstance(event, WorkerStarted):
            started.add(event.worker)
            if len(started) == 2:
                for g in go:
                    g.touch()

    rec = Recorder(both_ready)
    policy = PoolPolicy(**{**SAFE, "workers_per_device": 2})
    report = run_pool(tasks, units_of([[0], [1], [2, 3], [4, 5]]), [faulty_spec(**SMALL_WINDOWS)],
                      policy, on_event=rec)
    for task, outcome in zip(tasks, report.outcomes):
        assert_enhanced_equal_input(task, outcome)
    assert {o.worker for o in report.outcomes[:2]} == {1, 2}
    assert report.workers_started == 2 and report.worker_crashes == 0
    assert_workers_gone(rec.pids())


@pytest.mark.timeout(120)
def test_missing_weights_stop_the_run_with_weights_error(tmp_path):
    tasks = make_tasks(tmp_path, [("s0", 0.1), ("s1", 0.1)])
    spec = WorkerSpec(backend=FAULTY,
                      weights_path=str(tmp_path / "no-such-checkpoint.pt"), backend_options={},
                      slot=CPU)
    rec = Recorder()
    with pytest.raises(WeightsError) as info:
        run_pool(tasks, units_of([[0], [1]]), [spec], PoolPolicy(**SAFE), on_event=rec)
    assert "no-such-checkpoint.pt" in str(info.value)
    assert info.value.searched == (str(tmp_path / "no-such-checkpoint.pt"),)
    cause = info.value.__cause__
    assert isinstance(cause, RemoteTraceback) and "Traceback" in cause.text
    assert "resolve" in cause.text  # the child's own frames
    assert [e.reason for e in rec.of(WorkerRetired)] == ["load_failed"]
    assert not rec.of(SceneFinished)
    assert_workers_gone([])


@pytest.mark.timeout(120)
def test_unknown_backend_class_fails_before_any_worker_starts(tmp_path):
    tasks = make_tasks(tmp_path, [("s0", 0.1)])
    spec = WorkerSpec(backend="whisperjav_enhance.no_such_module:Nothing", weights_path=None,
                      backend_options={}, slot=CPU)
    with pytest.raises(BackendUnavailable, match="no_such_module"):
        run_pool(tasks, units_of([[0]]), [spec], PoolPolicy(**SAFE))


@pytest.mark.timeout(180)
@pytest.mark.parametrize("how", ["ctrl-c", "sigterm"])
def test_interrupt_stops_workers_and_removes_temporaries(tmp_path, how):
    tasks, rec = interrupt_setup(tmp_path, how)
    before = signal.getsignal(signal.SIGTERM)
    with pytest.raises(RunInterrupted, match="SIGTERM" if how == "sigterm" else "Ctrl-C") as info:
        run_pool(tasks, units_of(INTERRUPT_UNITS), [faulty_spec(**SMALL_WINDOWS)],
                 PoolPolicy(**SAFE), on_event=rec)
    assert signal.getsignal(signal.SIGTERM) is before  # the handler is put back
    assert_interrupted_cleanly(tmp_path, tasks, info.value, rec)


@pytest.mark.gpu
@pytest.mark.timeout(300)
def test_gpu_worker_reports_allocator_telemetry_within_its_budget(tmp_path):
    import torch

    if not torch.cuda.is_available():
        pytest.skip("needs a CUDA device")
    from whisperjav_enhance.devices import resolve_devices

    tasks = make_tasks(tmp_path, [(f"s{i}", 0.3) for i in range(4)])
    spec = WorkerSpec("passthrough", None, dict(SMALL_WINDOWS), resolve_devices("cuda:0")[0])
    rec = Recorder()
    report = run_pool(tasks, units_of([[0, 1], [2, 3]]), [spec],
                      PoolPolicy(vram_budget_gb=1.0, **SAFE), on_event=rec)
    for task, outcome in zip(tasks, report.outcomes):
        assert_enhanced_equal_input(task, outcome)
    for t in rec.of(Telemetry):
        assert t.allocated_mib is not None and t.reserved_mib >= t.allocated_mib
        assert t.inactive_split_mib is not None and t.alloc_retries == 0 and t.oom_count == 0
        assert t.allocated_mib <= t.peak_allocated_mib <= t.peak_reserved_mib  # the unit's peak
    assert report.peak_vram_mib is not None and 0 < report.peak_vram_mib <= 1024
    assert not torch.cuda.is_initialized()  # the parent never touched CUDA
    assert_workers_gone(rec.pids())


def test_empty_run_starts_nothing():
    report = run_pool([], [], [faulty_spec()], PoolPolicy())
    assert report.outcomes == () and report.workers_started == 0
    assert np.isclose(report.startup_wait_seconds, 0.0)


_ORPHAN_SCRIPT = r'''
import sys
from pathlib import Path
sys.path.insert(0, {tests!r})
from _executor_helpers import make_tasks, units_of, faulty_spec, run_pool
from whisperjav_enhance.config import PoolPolicy
from whisperjav_enhance.events import WorkerStarted

def on_event(e):
    if isinstance(e, WorkerStarted):
        print("PID", e.pid, flush=True)

if __name__ == "__main__":
    tasks = make_tasks(Path({folder!r}), [("stuck_hang", 0.1)])
    run_pool(tasks, units_of([[0]]), [faulty_spec()],
             PoolPolicy(workers_per_device=1, scene_timeout_s=600, warm_standby=False),
             on_event=on_event)
'''


def test_a_hung_worker_exits_when_its_parent_is_killed(tmp_path):
    """SIGKILL of the parent mid-hang: nothing reads the worker's pipe any more, so only the
    worker's parent watch can end it; it must not hold its (GPU) memory forever."""
    import signal
    import subprocess
    import sys

    script = tmp_path / "run.py"
    script.write_text(_ORPHAN_SCRIPT.format(tests=str(Path(__file__).parent), folder=str(tmp_path)))
    proc = subprocess.Popen([sys.executable, str(script)], stdout=subprocess.PIPE, text=True)
    try:
        line = ""
        deadline = time.monotonic() + 120
        while not line.startswith("PID") and time.monotonic() < deadline:
            line = proc.stdout.readline()
            if not line and proc.poll() is not None:
                break
        assert line.startswith("PID"), "worker never started"
        worker_pid = int(line.split()[1])
        time.sleep(1.0)  # let the worker enter the hanging scene
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
        assert_workers_gone([worker_pid], timeout_s=20.0)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=30)
        proc.stdout.close()


# -- lean processes (issue 14): torch only where a backend needs it ---------------------------------
_LEAN_SCRIPT = r'''
import sys
from pathlib import Path
sys.path.insert(0, {tests!r})
from conftest import write_tone
from whisperjav_enhance import EnhanceOptions, enhance_scenes
from whisperjav_enhance.backends import select_backend
from whisperjav_enhance.events import WorkerStarted

folder = Path({folder!r})
write_tone(folder / "in" / "a.wav", 0.3)
seen = []

def on_event(e):
    if isinstance(e, WorkerStarted):  # the worker is alive now: look at what it has mapped
        seen.append("libtorch" in Path(f"/proc/{{e.pid}}/maps").read_text())

for backend in ("passthrough", "deepfilternet"):
    s = enhance_scenes([folder / "in"], folder / backend, EnhanceOptions(backend=backend),
                       on_event=on_event)
    assert s.scenes_enhanced == 1, s
select_backend("mossformer2", {weights!r})   # weights found and checked, no network built
print("workers with torch:", seen.count(True), "of", len(seen))
print("parent has torch:", "torch" in sys.modules)
'''


@pytest.mark.timeout(180)
@pytest.mark.skipif(not Path("/proc/self/maps").exists(), reason="reads /proc/<pid>/maps")
def test_backends_without_torch_run_in_workers_without_torch_and_the_parent_never_imports_it(tmp_path):
    import subprocess
    import sys

    from whisperjav_enhance.backends.mossformer2 import MossFormer2Backend

    weights = MossFormer2Backend.write_random_weights(tmp_path / "mf2")
    script = tmp_path / "lean.py"
    script.write_text(_LEAN_SCRIPT.format(tests=str(Path(__file__).parent), folder=str(tmp_path),
                                          weights=str(weights)))
    done = subprocess.run([sys.executable, str(script)], capture_output=True, text=True,
                          timeout=170)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "workers with torch: 0 of 2" in done.stdout
    assert "parent has torch: False" in done.stdout


# -- diagnosis (issue 11): decisions and a dead worker's own words in the debug log -----------------
@pytest.mark.timeout(180)
def test_debug_log_keeps_decisions_remote_tracebacks_and_a_crashed_workers_fault_dump(tmp_path,
                                                                                      caplog):
    import logging

    tasks = make_tasks(tmp_path, [("a_raise", 0.1), ("b_segv_once", 0.1)])
    with caplog.at_level(logging.DEBUG, logger="whisperjav_enhance"):
        report = run_pool(tasks, units_of([[0], [1]]), [faulty_spec(**SMALL_WINDOWS)],
                          PoolPolicy(**SAFE))
    assert [o.status for o in report.outcomes] == ["failed", "enhanced"]
    log = caplog.text
    assert "start worker 1 (active)" in log and "worker 1: unit 0, scenes [100]" in log
    # The failed scene's whole remote traceback, not only its first line.
    assert "injected backend failure" in log and "Traceback (most recent call last)" in log
    assert "in enhance_windows" in log
    # The crashed worker's faulthandler dump, from its own error log.
    assert "Fatal Python error: Segmentation fault" in log
    assert re.search(r"worker \d+ crashed: killed by SIGSEGV", log)
    assert "requeue scenes [101] one per unit" in log


def test_an_output_is_exactly_as_long_as_its_scene_when_the_backend_runs_at_another_rate(tmp_path):
    # 48 kHz scenes through a 16 kHz backend and back: soxr's rounding either way may land a
    # sample or two off, but a subtitle pipeline's scene times must stay true.
    tasks = make_tasks(tmp_path, [("odd_a", 0.30001), ("odd_b", 0.2093), ("odd_c", 0.4127)])
    rt = WorkerRuntime(7, WorkerSpec("passthrough", None, {"sample_rate": 16_000}, CPU),
                       PoolPolicy(), "cpu")
    rt.load(0.0)
    results, _, _ = _run(rt, _unit(tasks, [0, 1, 2]))
    for p, task in enumerate(tasks):
        assert results[p].status == "enhanced"
        import soundfile as sf

        assert sf.info(task.output_path).frames == sf.info(task.input_path).frames


@pytest.mark.timeout(120)
def test_ctrl_c_while_a_worker_is_being_started_stops_the_run_cleanly(tmp_path, monkeypatch):
    # Review find: a Ctrl-C held during a worker's start fired before the transport had recorded
    # the process, and stopping the workers then failed with AttributeError (no summary).
    import multiprocess.process as mpp

    real_start = mpp.BaseProcess.start
    pids = []

    def start_then_ctrl_c(self):
        real_start(self)
        pids.append(self.pid)
        os.kill(os.getpid(), signal.SIGINT)   # held until the worker is recorded

    monkeypatch.setattr(mpp.BaseProcess, "start", start_then_ctrl_c)
    tasks = make_tasks(tmp_path, [("s0", 0.1), ("s1", 0.1)])
    with pytest.raises(RunInterrupted, match="Ctrl-C"):
        run_pool(tasks, units_of([[0], [1]]), [faulty_spec(**SMALL_WINDOWS)], PoolPolicy(**SAFE))
    assert pids and not any(Path(t.output_path).exists() for t in tasks)
    assert_workers_gone(pids)
