"""The crash-case table: every way a worker can fail, run through each transport (spawned local
processes, Ray actors, the calling process) with the fault-injecting test backend
(tests/fault_injection/backend.py), from ONE table of cases and expectations.

One run per transport serves the whole table (each crash needs a fresh worker, and a worker start
costs seconds here, so separate runs would multiply the time). Each unit pairs a well-behaved scene
with a faulty one, in this order; the cases then check their own scenes, and the invariants tests
check the run as a whole:

    unit  scenes                      fault                                   worker
    0     k0, k1                      worker 1 SIGKILLed from outside at start  1 (killed)
    1     r0, r1_raise                RuntimeError in the forward             2
    2     m0, m1_oom                  OOM when batched (halved, then fine)    2
    3     e0, e1_exit_once            os._exit(3) once                        2 (dies)
    4     v0, v1_segv_once            segmentation fault once                 3 (dies)
    5     a0, a1_abort_once           abort once                              4 (dies)
    6     q0, q1_killme_once          SIGKILL to itself once                  5 (dies)
    7     h0, h1_hang_once            hangs once: watchdog                    6 (killed)
    8     o0, o1_oomalways            OOM even alone: retire, then fails      7 (retires), 8
    9     p0, p1_segv                 poison: segfaults every time            8 (dies), 9 (dies)

In-process there is no isolation to survive a dead process or a hang, so only the cases that
leave the process alive run there (raise and OOM: units 1, 2 and 8).
"""

from __future__ import annotations

import importlib.util
import os
import re
from dataclasses import dataclass, field

import pytest

from whisperjav_enhance.config import PoolPolicy
from whisperjav_enhance.events import SceneFinished, WorkerCrashed, WorkerRetired, WorkerStarted
from whisperjav_enhance.executor import driver

from _executor_helpers import (SMALL_WINDOWS, Recorder, assert_crash_case, assert_each_scene_ends_once,
                               assert_enhanced_equal_input, assert_no_partials,
                               assert_one_terminal_event_each, assert_workers_gone, executor_on,
                               faulty_spec, make_tasks, run_crash_table, run_pool, units_of)

pytestmark = pytest.mark.skipif(os.name != "posix", reason="signals and /proc are POSIX here")

SCENES = [("k0", 0.1), ("k1", 0.2), ("r0", 0.2), ("r1_raise", 0.15), ("m0", 0.3), ("m1_oom", 0.3),
          ("e0", 0.2), ("e1_exit_once", 0.2), ("v0", 0.2), ("v1_segv_once", 0.2),
          ("a0", 0.2), ("a1_abort_once", 0.2), ("q0", 0.2), ("q1_killme_once", 0.2),
          ("h0", 0.05), ("h1_hang_once", 0.2), ("o0", 0.2), ("o1_oomalways", 0.2),
          ("p0", 0.2), ("p1_segv", 0.2)]
SURVIVABLE_UNITS = (1, 2, 8)   # what the calling process lives through
SCENE_TIMEOUT_S = 5.0
NATIVE_ON_RAY = "actor process died"   # Ray reports a dead actor process, not its signal


@dataclass(frozen=True)
class Case:
    enhanced: list                       # scenes that must end enhanced, equal to their input
    failed: dict                         # scene -> failure reason
    crash: dict = field(default_factory=dict)  # transport -> text in the crash's description
    survivable: bool = False             # also runs in-process


CASES = {
    "raise": Case(["r0"], {"r1_raise": "backend_error"}, survivable=True),
    "oom": Case(["m0", "m1_oom", "o0"], {"o1_oomalways": "out_of_memory"}, survivable=True),
    "os_exit": Case(["e0", "e1_exit_once"], {}, {"pool": "exit code 3", "ray": NATIVE_ON_RAY}),
    "sigkill_outside": Case(["k0", "k1"], {}, {"pool": "killed by SIGKILL: killed from outside",
                                               "ray": NATIVE_ON_RAY}),
    "segfault": Case(["v0", "v1_segv_once"], {}, {"pool": "killed by SIGSEGV", "ray": NATIVE_ON_RAY}),
    "abort": Case(["a0", "a1_abort_once"], {}, {"pool": "killed by SIGABRT", "ray": NATIVE_ON_RAY}),
    "sigkill_self": Case(["q0", "q1_killme_once"], {}, {"pool": "killed by SIGKILL",
                                                        "ray": NATIVE_ON_RAY}),
    "hang": Case(["h0", "h1_hang_once"], {},
                 {t: "timeout: no window or scene finished in 5 s" for t in ("pool", "ray")}),
    "poison": Case(["p0"], {"p1_segv": "quarantined"}, {"pool": "killed by SIGSEGV",
                                                        "ray": NATIVE_ON_RAY}),
}
TRANSPORTS = ["pool", pytest.param("ray", marks=[pytest.mark.ray, pytest.mark.skipif(
    importlib.util.find_spec("ray") is None, reason="needs the optional ray extra")]), "inprocess"]


@pytest.fixture(scope="module", params=TRANSPORTS)
def crash_run(request, tmp_path_factory):
    transport = request.param
    policy = PoolPolicy(scene_timeout_s=SCENE_TIMEOUT_S, startup_timeout_s=120.0,
                        workers_per_device=1, max_crashes_per_scene=2)
    scenes = SCENES
    address = request.getfixturevalue("ray_cluster") if transport == "ray" else None
    if transport == "inprocess":
        scenes = [s for u in SURVIVABLE_UNITS for s in SCENES[2 * u:2 * u + 2]]
    run = run_crash_table(tmp_path_factory.mktemp(f"crash_{transport}"), scenes,
                          executor_on(transport, address), policy,
                          kill_first=transport != "inprocess")
    run.transport = transport
    return run


def _applies(crash_run, case: Case) -> bool:
    return crash_run.transport != "inprocess" or case.survivable


@pytest.mark.timeout(600)
@pytest.mark.parametrize("case", list(CASES))
def test_crash_case(crash_run, case):
    c = CASES[case]
    if not _applies(crash_run, c):
        pytest.skip("a dead or hung process takes the caller with it in-process")
    crash_text = c.crash.get(crash_run.transport)
    assert_crash_case(crash_run, c.enhanced, c.failed, crash_text)
    if case in ("os_exit", "segfault", "abort", "sigkill_self", "hang"):
        # The worker that crashed had the faulty scene in flight; a later worker finished it.
        fault = crash_run.outcome(c.enhanced[1])
        crashed = crash_run.crashes_matching(crash_text)
        assert any(e.worker < fault.worker and e.requeued >= 1 for e in crashed)


def test_sigkill_from_outside_is_reported_for_that_worker(crash_run):
    if crash_run.transport == "inprocess":
        pytest.skip("nothing to kill from outside in-process")
    (first,) = [e for e in crash_run.rec.of(WorkerCrashed) if e.worker == 1]
    assert first.requeued == 2
    if crash_run.transport == "pool":
        assert "SIGKILL" in first.description and "out-of-memory killer" in first.description
    assert {crash_run.outcome("k0").worker, crash_run.outcome("k1").worker} == {2}


def test_oom_alone_retires_the_worker_then_fails_in_a_fresh_one(crash_run):
    assert crash_run.report.recycles == {"oom": 1}
    (retired,) = [e for e in crash_run.rec.of(WorkerRetired) if e.reason == "oom"]
    failed = crash_run.outcome("o1_oomalways")
    assert failed.worker > retired.worker and "does not fit" in failed.message


def test_poison_scene_is_quarantined_naming_both_crashes(crash_run):
    if crash_run.transport == "inprocess":
        pytest.skip("a segfault takes the caller with it in-process")
    o = crash_run.outcome("p1_segv")
    assert o.worker is None and "after 2 worker crash(es)" in o.message
    text = CASES["poison"].crash[crash_run.transport]
    assert len(re.findall(r"worker \d+: " + re.escape(text), o.message)) == 2


def test_every_scene_has_one_terminal_state_and_nothing_is_left_behind(crash_run):
    report, rec = crash_run.report, crash_run.rec
    if crash_run.transport == "inprocess":
        assert_each_scene_ends_once(crash_run, failed=2)  # r1_raise, o1_oomalways
        assert report.worker_crashes == 0 and report.workers_started == 2  # one oom reload
    else:
        assert_each_scene_ends_once(crash_run, failed=3)
        # 1 killed from outside, exit, segv, abort, killme, hang, poison twice.
        assert report.worker_crashes == 8 and len(report.crashes) == 8
        assert report.workers_started == len(rec.of(WorkerStarted)) == 9
        assert_workers_gone(rec.pids())
    assert report.peak_vram_mib is None
    assert_no_partials(crash_run.folder)


def test_scenes_finished_before_a_crash_are_not_redone(crash_run):
    if crash_run.transport == "inprocess":
        pytest.skip("no crash in-process")
    # Worker 2 finished r0, r1_raise, m0 and m1_oom, then died on e1_exit_once: those four keep
    # worker 2's result. Of unit 3 (e0, e1_exit_once), only what worker 2 had not reported went to
    # worker 3 (after m1_oom's halving, worker 2 runs one window per forward, so e0 may finish
    # before e1's first window kills it).
    w = crash_run.outcome("r0").worker
    (exit_crash,) = [e for e in crash_run.rec.of(WorkerCrashed) if e.worker == w]
    assert CASES["os_exit"].crash[crash_run.transport] in exit_crash.description
    assert [crash_run.outcome(n).worker for n in ("r0", "r1_raise", "m0", "m1_oom")] == [w] * 4
    unit3 = {n: crash_run.outcome(n).worker for n in ("e0", "e1_exit_once")}
    assert unit3["e1_exit_once"] == w + 1
    assert exit_crash.requeued == sum(1 for worker in unit3.values() if worker != w)
    assert set(unit3.values()) <= {w, w + 1}


# -- runaway guards (the driver's, shown on the local pool) ------------------------------------------
@pytest.mark.timeout(120)
def test_workers_that_die_while_starting_end_the_run_with_every_scene_failed(tmp_path, monkeypatch):
    monkeypatch.setattr(driver, "MAX_FUTILE_CRASHES", 1)
    tasks = make_tasks(tmp_path, [("s0", 0.1), ("s1", 0.1)])
    rec = Recorder()
    report = run_pool(tasks, units_of([[0], [1]]), [faulty_spec(exit_on_load=True)],
                      PoolPolicy(startup_timeout_s=120.0, workers_per_device=1), on_event=rec)
    assert [(o.status, o.reason) for o in report.outcomes] == [("failed", "worker_crash")] * 2
    assert "exit code 5" in report.outcomes[0].message
    assert "before it could load the model" in report.outcomes[0].message
    assert report.worker_crashes == 1 and report.workers_started == 1
    assert_one_terminal_event_each(tasks, rec)
    assert not rec.of(SceneFinished)[0].output_path
    assert_workers_gone([])


@pytest.mark.timeout(120)
def test_worker_start_limit_fails_what_is_left_after_the_last_allowed_worker(tmp_path):
    tasks = make_tasks(tmp_path, [("s0", 0.1), ("s1_exit", 0.1), ("s2", 0.1)])
    rec = Recorder()
    report = run_pool(tasks, units_of([[0], [1], [2]]), [faulty_spec(**SMALL_WINDOWS)],
                      PoolPolicy(startup_timeout_s=120.0, workers_per_device=1,
                                 max_worker_starts=1), on_event=rec)
    assert_enhanced_equal_input(tasks[0], report.outcomes[0])
    for o in report.outcomes[1:]:
        assert (o.status, o.reason) == ("failed", "worker_crash")
        assert "limit of 1 worker starts" in o.message
    assert report.workers_started == 1 and report.worker_crashes == 1
    assert_one_terminal_event_each(tasks, rec)
    assert_workers_gone(rec.pids())
