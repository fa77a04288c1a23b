"""The Ray executor (whisperjav_enhance.ray_executor) on this CPU machine: the crash-case table's
main cases on a real two-CPU Ray cluster, recycling, Ctrl-C/SIGTERM, load failures, and one CLI
run compared with the local pool.

The cluster is started once per module with ``ray start --head`` (its own temp dir, a random port,
a token of its own) and joined through ``address=``, the path a multi-node run takes. Started that
way its daemons are not children of the test process, so the conftest guard against leftover
children applies unchanged; the fixture's teardown ends exactly the processes of that cluster
(found by its temp dir) and waits for them. The local-instance path (``address=None``: start, use,
stop) runs in the CLI test's subprocess, which must leave no Ray process behind.

Crash table (one run; each unit pairs a well-behaved scene with a faulty one)::

    unit  scenes               fault                                        worker
    0     k0, k1               actor SIGKILLed from outside when ready       1 (killed)
    1     e0, e1_exit_once     os._exit(3) once                              2 (dies)
    2     r0, r1_raise         RuntimeError in the forward: r1 fails alone   3
    3     h0, h1_hang_once     hangs once: the watchdog ray.kills the actor  3 (killed)
    4     p0, p1_segv          poison: segfaults every time -> quarantined   4 (dies), 5 (dies)
"""

from __future__ import annotations

import functools
import importlib.util
import json
import os
import re
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from types import SimpleNamespace

import pytest

from whisperjav_enhance.config import EnhanceOptions, PoolPolicy
from whisperjav_enhance.errors import (BackendUnavailable, ConfigError, DeviceError,
                                       RunInterrupted, WeightsError)
from whisperjav_enhance.events import (Log, SceneFinished, Telemetry, WorkerCrashed, WorkerRetired,
                                       WorkerStarted)
from whisperjav_enhance.manifest import read_manifest
from whisperjav_enhance.pool import WorkerSpec

from _pool_helpers import (CPU, INTERRUPT_UNITS, SMALL_WINDOWS, Recorder, assert_crash_case,
                           assert_each_scene_ends_once, assert_enhanced_equal_input, assert_interrupted_cleanly,
                           assert_no_partials, assert_one_terminal_event_each, assert_workers_gone,
                           faulty_spec, interrupt_setup, make_tasks, run_crash_table, units_of,
                           write_scene)

pytestmark = [
    pytest.mark.ray,
    pytest.mark.skipif(importlib.util.find_spec("ray") is None,
                       reason="needs the optional ray extra (pip install 'whisperjav-enhance[ray]')"),
    pytest.mark.skipif(not Path("/proc/self").exists(), reason="process checks read /proc"),
]

RAY_START_TIMEOUT_S = 180     # `ray start --head` on a loaded 2-core machine
RAY_STOP_TIMEOUT_S = 30       # the cluster's processes must be gone within this after teardown
CLI_TIMEOUT_S = 240
SCENE_TIMEOUT_S = 5.0         # the watchdog in the crash table
SAFE = dict(startup_timeout_s=120.0, workers_per_device=1)  # one actor: a deterministic order


def _run_ray(*args, **kwargs):
    from whisperjav_enhance.ray_executor import run_ray

    return run_ray(*args, **kwargs)


# -- processes of one Ray cluster, found by its temp dir ----------------------------------------------
def _processes() -> dict[int, tuple[int, str, bytes]]:
    """pid -> (parent pid, state, command line) of every process /proc shows."""
    out = {}
    for d in Path("/proc").iterdir():
        if not d.name.isdigit():
            continue
        try:
            fields = (d / "stat").read_text().rsplit(")", 1)[1].split()
            cmd = (d / "cmdline").read_bytes()
        except OSError:
            continue
        out[int(d.name)] = (int(fields[1]), fields[0], cmd)
    return out


def _cluster_processes(temp_dir: Path) -> list[int]:
    """Live processes started for the cluster under ``temp_dir``: those naming it on their command
    line (gcs_server, raylet, monitors) and everything below them (agents, workers, actors)."""
    procs = _processes()
    key = str(temp_dir).encode()
    tree = {p for p, (_, _, cmd) in procs.items() if key in cmd and p != os.getpid()}
    grew = True
    while grew:
        below = {p for p, (ppid, _, _) in procs.items() if ppid in tree} - tree
        tree |= below
        grew = bool(below)
    return sorted(p for p in tree if procs[p][1] != "Z")


def _stop_cluster(temp_dir: Path) -> list[int]:
    """End this cluster's processes (by pid: TERM, then KILL); returns any still alive."""
    deadline = time.monotonic() + RAY_STOP_TIMEOUT_S
    sig = signal.SIGTERM
    while True:
        alive = _cluster_processes(temp_dir)
        if not alive or time.monotonic() > deadline:
            return alive
        for pid in alive:
            try:
                os.kill(pid, sig)
            except ProcessLookupError:
                pass
        time.sleep(2.0 if sig == signal.SIGTERM else 0.2)
        sig = signal.SIGKILL  # gcs_server and raylet can linger after TERM: they are test daemons


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("", 0))
        return s.getsockname()[1]


def _ray_env(token: str, **extra) -> dict:
    # A token of our own: nothing is written to ~/.ray, and joining by address needs it.
    return {"RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": token, "RAY_USAGE_STATS_ENABLED": "0",
            **extra}


@pytest.fixture(scope="module", autouse=True)
def ray_auth_env():
    """This module's Ray settings, in place before anything here imports ray: ray reads its
    authentication mode once per process, and joining a token cluster by address needs them."""
    with pytest.MonkeyPatch.context() as mp:
        for key, value in _ray_env(secrets.token_hex(32)).items():
            mp.setenv(key, value)
        mp.delenv("RAY_ADDRESS", raising=False)
        yield


@pytest.fixture(scope="module")
def ray_cluster(ray_auth_env):
    # Short and unique: Ray's unix sockets live under it (paths must stay under 108 bytes).
    temp_dir = Path(tempfile.mkdtemp(prefix="wje-ray-", dir="/tmp"))
    ray_cli = Path(sys.executable).parent / "ray"
    try:
        done = subprocess.run(
            [str(ray_cli), "start", "--head", f"--port={_free_port()}", "--num-cpus=2",
             "--num-gpus=0", "--include-dashboard=false", "--disable-usage-stats",
             f"--temp-dir={temp_dir}", "--object-store-memory=100000000"],
            capture_output=True, text=True, timeout=RAY_START_TIMEOUT_S)
        found = re.search(r"--address='([^']+)'", done.stdout + done.stderr)
        assert done.returncode == 0 and found, f"ray start failed:\n{done.stdout}\n{done.stderr}"
        yield found.group(1)
    finally:
        import ray

        if ray.is_initialized():
            ray.shutdown()
        left = _stop_cluster(temp_dir)
        shutil.rmtree(temp_dir, ignore_errors=True)
        assert not left, f"Ray processes still running after teardown: {left}"


def _assert_disconnected():
    import ray

    assert not ray.is_initialized(), "run_ray must drop the connection it opened"


# -- without a cluster ----------------------------------------------------------------------------------
def test_missing_ray_package_is_backend_unavailable_naming_the_extra(tmp_path, monkeypatch):
    tasks = make_tasks(tmp_path, [("s0", 0.05)])
    monkeypatch.setitem(sys.modules, "ray", None)  # `import ray` now fails as if not installed
    with pytest.raises(BackendUnavailable, match=r"whisperjav-enhance\[ray\]"):
        _run_ray(tasks, units_of([[0]]), [faulty_spec()], PoolPolicy(**SAFE))


@pytest.mark.timeout(60)
def test_an_address_nobody_answers_at_is_a_config_error_at_once(tmp_path):
    import ray

    tasks = make_tasks(tmp_path, [("s0", 0.05)])
    address = f"127.0.0.1:{_free_port()}"  # closed again: connection refused
    with pytest.raises(ConfigError, match=re.escape(f"cannot join the Ray cluster at {address}")):
        _run_ray(tasks, units_of([[0]]), [faulty_spec()], PoolPolicy(**SAFE), address=address)
    assert not ray.is_initialized()


# -- devices: decided by the cluster's resources, not by the driver's machine ---------------------------
WHERE = "the Ray cluster at 10.0.0.5:6379"


@pytest.mark.parametrize("device, resources, labels", [
    ("auto", {"CPU": 16.0, "GPU": 2.0}, ["cuda:0", "cuda:1"]),
    ("cuda", {"CPU": 16.0, "GPU": 3.0}, ["cuda:0", "cuda:1", "cuda:2"]),
    (" CUDA ", {"GPU": 1.0}, ["cuda:0"]),
    ("auto", {"CPU": 16.0}, ["cpu"]),
    ("auto", {"CPU": 16.0, "GPU": 0.5}, ["cpu"]),  # part of a GPU is no GPU to give an actor
    ("cpu", {"CPU": 16.0, "GPU": 8.0}, ["cpu"]),
])
def test_cluster_slots_follow_the_cluster_resources(device, resources, labels):
    from whisperjav_enhance.ray_executor import cluster_slots

    slots = cluster_slots(device, resources, WHERE)
    assert [s.label for s in slots] == labels
    for s in slots:  # GPU actors get their GPU from Ray, so a slot sets no CUDA_VISIBLE_DEVICES
        want = (None, "cuda:0") if s.label.startswith("cuda") else ("", "cpu")
        assert (s.visible_devices, s.torch_device) == want


@pytest.mark.parametrize("device, resources, match", [
    ("cuda", {"CPU": 16.0}, re.escape(WHERE) + r" has no GPUs.*--num-gpus"),
    ("cuda", {"CPU": 16.0, "GPU": 0.0}, r"has no GPUs"),
    ("cuda:1", {"GPU": 4.0}, r"names one GPU of one machine.*--device cuda"),
    ("gpu", {"GPU": 4.0}, r"unknown device 'gpu'"),
    ("auto:1", {"GPU": 4.0}, r"unknown device 'auto:1'"),
])
def test_cluster_slots_refuse_what_the_cluster_cannot_give(device, resources, match):
    from whisperjav_enhance.ray_executor import cluster_slots

    with pytest.raises(DeviceError, match=match):
        cluster_slots(device, resources, WHERE)


@pytest.mark.timeout(CLI_TIMEOUT_S * 2)
def test_cli_with_a_local_ray_instance_matches_the_local_pool(tmp_path):
    from whisperjav_enhance.pipeline import enhance_scenes

    scenes = tmp_path / "scenes"
    for i in range(3):
        write_scene(scenes / f"film_scene_{i:04d}.wav", 0.2 + 0.05 * i, seed=i)
    ray_tmp = Path(tempfile.mkdtemp(prefix="wje-cli-", dir="/tmp"))
    env = {**os.environ, "RAY_TMPDIR": str(ray_tmp)}  # the module's token, a temp dir of its own
    try:
        done = subprocess.run(
            [sys.executable, "-m", "whisperjav_enhance", "enhance", str(scenes), "-o",
             str(tmp_path / "ray_out"), "--backend", "passthrough", "--device", "cpu",
             "--executor", "ray"],
            capture_output=True, text=True, timeout=CLI_TIMEOUT_S, env=env)
        assert done.returncode == 0, done.stdout + done.stderr
        # The local instance was stopped with the run: none of its processes is left.
        deadline = time.monotonic() + RAY_STOP_TIMEOUT_S
        while _cluster_processes(ray_tmp) and time.monotonic() < deadline:
            time.sleep(0.2)
        assert not _cluster_processes(ray_tmp)
    finally:
        _stop_cluster(ray_tmp)
        shutil.rmtree(ray_tmp, ignore_errors=True)
    enhance_scenes([scenes], tmp_path / "pool_out", EnhanceOptions(backend="passthrough", device="cpu"))

    on_ray = json.loads((tmp_path / "ray_out" / "summary.json").read_text())
    on_pool = json.loads((tmp_path / "pool_out" / "summary.json").read_text())
    assert set(on_ray) == set(on_pool) and set(on_ray["options"]) == set(on_pool["options"])
    assert on_ray["executor"] == "ray" and on_pool["executor"] == "pool"
    for key in ("scenes_total", "scenes_enhanced", "scenes_failed", "worker_crashes",
                "peak_vram_mib", "device", "backend"):
        assert on_ray[key] == on_pool[key], key
    assert on_ray["scenes_enhanced"] == 3 and on_ray["workers_started"] == 1
    ray_lines = read_manifest(tmp_path / "ray_out" / "manifest.jsonl")
    pool_lines = read_manifest(tmp_path / "pool_out" / "manifest.jsonl")
    assert [set(line) for line in ray_lines] == [set(line) for line in pool_lines]
    assert [(l["index"], l["status"]) for l in ray_lines] == [(l["index"], l["status"])
                                                               for l in pool_lines]
    for line in ray_lines:  # passthrough: each output is its input, whole
        assert_enhanced_equal_input(
            SimpleNamespace(input_path=line["input"], output_path=line["output"]),
            SimpleNamespace(status=line["status"], output_path=line["output"]))
    assert_no_partials(tmp_path)


@pytest.mark.timeout(CLI_TIMEOUT_S * 2)
def test_cli_ctrl_c_to_the_process_group_stops_everything(tmp_path):
    # A terminal's Ctrl-C reaches the whole process group: the CLI, and Ray's daemons and actors.
    # One scene per actor keeps the run going long enough to interrupt it after the first scene.
    scenes, out = tmp_path / "scenes", tmp_path / "out"
    for i in range(6):
        write_scene(scenes / f"film_scene_{i:04d}.wav", 0.2, seed=i)
    ray_tmp = Path(tempfile.mkdtemp(prefix="wje-cli-", dir="/tmp"))
    env = {**os.environ, "RAY_TMPDIR": str(ray_tmp)}  # the module's token, a temp dir of its own
    log = open(tmp_path / "cli.log", "w+")
    proc = subprocess.Popen(
        [sys.executable, "-m", "whisperjav_enhance", "enhance", str(scenes), "-o", str(out),
         "--backend", "passthrough", "--device", "cpu", "--executor", "ray",
         "--max-scenes-per-worker", "1"],
        stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True)
    try:
        deadline = time.monotonic() + CLI_TIMEOUT_S
        while not read_manifest(out / "manifest.jsonl"):
            assert proc.poll() is None and time.monotonic() < deadline, Path(log.name).read_text()
            time.sleep(0.05)
        os.killpg(proc.pid, signal.SIGINT)
        rc = proc.wait(timeout=CLI_TIMEOUT_S)
        text = Path(log.name).read_text()
        assert rc == 130 and "interrupted" in text and "Traceback" not in text, text
        deadline = time.monotonic() + RAY_STOP_TIMEOUT_S
        while _cluster_processes(ray_tmp) and time.monotonic() < deadline:
            time.sleep(0.2)
        assert not _cluster_processes(ray_tmp), "Ray processes outlived the interrupted run"
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=30)
        log.close()
        _stop_cluster(ray_tmp)
        shutil.rmtree(ray_tmp, ignore_errors=True)
    assert_no_partials(out)
    summary = json.loads((out / "summary.json").read_text())
    wavs = sorted(out.glob("*.wav"))
    assert summary["interrupted"] is True and 1 <= summary["scenes_enhanced"] == len(wavs) < 6
    for wav in wavs:
        assert_enhanced_equal_input(SimpleNamespace(input_path=str(scenes / wav.name),
                                                    output_path=str(wav)),
                                    SimpleNamespace(status="enhanced", output_path=str(wav)))


# -- the crash table on a real cluster ------------------------------------------------------------------
SCENES = [("k0", 0.1), ("k1", 0.2), ("e0", 0.2), ("e1_exit_once", 0.2), ("r0", 0.2),
          ("r1_raise", 0.15), ("h0", 0.05), ("h1_hang_once", 0.2), ("p0", 0.2), ("p1_segv", 0.2)]


@pytest.fixture(scope="module")
def crash_run(ray_cluster, tmp_path_factory):
    policy = PoolPolicy(scene_timeout_s=SCENE_TIMEOUT_S, max_crashes_per_scene=2, **SAFE)
    run = run_crash_table(tmp_path_factory.mktemp("ray_crash_run"), SCENES,
                          functools.partial(_run_ray, address=ray_cluster), policy)
    _assert_disconnected()
    return run


# case -> (scenes enhanced, {scene: failure reason}, text in the crash description or None)
CASES = {
    "killed_from_outside": (["k0", "k1"], {}, "SYSTEM_ERROR"),
    "os_exit": (["e0", "e1_exit_once"], {}, "SYSTEM_ERROR"),
    "backend_raise": (["r0"], {"r1_raise": "backend_error"}, None),
    "hang": (["h0", "h1_hang_once"], {}, "scene_timeout_s"),
    "poison": (["p0"], {"p1_segv": "quarantined"}, "SYSTEM_ERROR"),
}


@pytest.mark.timeout(600)
@pytest.mark.parametrize("case", list(CASES))
def test_crash_case(crash_run, case):
    assert_crash_case(crash_run, *CASES[case])


def test_actor_killed_from_outside_is_a_crash_and_its_scenes_run_elsewhere(crash_run):
    (first,) = [e for e in crash_run.rec.of(WorkerCrashed) if e.worker == 1]
    assert first.requeued == 2 and "actor process died" in first.description
    assert {crash_run.outcome("k0").worker, crash_run.outcome("k1").worker} == {2}


def test_hung_actor_is_killed_by_the_watchdog_and_its_scene_finishes_in_a_fresh_one(crash_run):
    (hang,) = crash_run.crashes_matching("scene_timeout_s")
    assert "killed as hung" in hang.description
    assert crash_run.outcome("h1_hang_once").worker == hang.worker + 1


def test_poison_scene_is_quarantined_naming_both_crashes(crash_run):
    o = crash_run.outcome("p1_segv")
    assert o.worker is None and "after 2 worker crash(es)" in o.message
    assert len(re.findall(r"worker \d+: actor process died", o.message)) == 2


def test_every_scene_has_one_terminal_state_and_nothing_is_left_behind(crash_run):
    report, rec = crash_run.report, crash_run.rec
    assert_each_scene_ends_once(crash_run, failed=2)
    # Killed from outside, os._exit, hang, poison twice: five crashes, five actors.
    assert report.worker_crashes == len(report.crashes) == len(rec.of(WorkerCrashed)) == 5
    assert report.workers_started == len(rec.of(WorkerStarted)) == 5
    assert report.recycles == {} and report.peak_vram_mib is None
    assert_no_partials(crash_run.folder)
    assert_workers_gone(rec.pids())


# -- recycling, interruption, load failures ------------------------------------------------------------
@pytest.mark.timeout(300)
@pytest.mark.parametrize("why", ["max_scenes", "drift"])
def test_recycling_kills_the_actor_and_a_fresh_one_takes_over(ray_cluster, tmp_path, why):
    tasks = make_tasks(tmp_path, [("s0", 0.05), ("s1", 0.08), ("s2", 0.1), ("s3", 0.06)])
    if why == "max_scenes":
        spec, policy = faulty_spec(**SMALL_WINDOWS), PoolPolicy(max_scenes_per_worker=2, **SAFE)
    else:  # the test backend reports reserved - allocated growing 60 MiB per forward
        spec = faulty_spec(fake_drift_mib_per_forward=60, **SMALL_WINDOWS)
        policy = PoolPolicy(max_drift_mb=100, **SAFE)
    rec = Recorder()
    report = _run_ray(tasks, units_of([[0], [1], [2], [3]]), [spec], policy, on_event=rec,
                      address=ray_cluster)
    _assert_disconnected()
    for task, outcome in zip(tasks, report.outcomes):
        assert_enhanced_equal_input(task, outcome)
    assert [o.worker for o in report.outcomes] == [1, 1, 2, 2]
    assert report.recycles == {why: 2} and report.workers_started == 2
    assert report.worker_crashes == 0
    assert [(e.worker, e.reason) for e in rec.of(WorkerRetired)] == [(1, why), (2, why)]
    order = [(type(e).__name__, e.worker) for e in rec.events
             if isinstance(e, (WorkerStarted, WorkerRetired))]
    assert order.index(("WorkerRetired", 1)) < order.index(("WorkerStarted", 2))
    if why == "drift":
        drift = [(t.worker, t.reserved_mib - t.allocated_mib) for t in rec.of(Telemetry)]
        assert drift == [(1, 60.0), (1, 120.0), (2, 60.0), (2, 120.0)]
        assert any("retires: drift" in e.message for e in rec.of(Log))
    assert_one_terminal_event_each(tasks, rec)
    assert_workers_gone(rec.pids())


@pytest.mark.timeout(300)
@pytest.mark.parametrize("how", ["ctrl-c", "sigterm"])
def test_interrupt_kills_actors_and_removes_temporaries(ray_cluster, tmp_path, how):
    tasks, rec = interrupt_setup(tmp_path, how)
    before = signal.getsignal(signal.SIGTERM)
    with pytest.raises(RunInterrupted, match="SIGTERM" if how == "sigterm" else "Ctrl-C") as info:
        _run_ray(tasks, units_of(INTERRUPT_UNITS), [faulty_spec(**SMALL_WINDOWS)],
                 PoolPolicy(**SAFE), on_event=rec, address=ray_cluster)
    _assert_disconnected()
    assert signal.getsignal(signal.SIGTERM) is before  # ray.init's own handler is not left behind
    assert_interrupted_cleanly(tmp_path, tasks, info.value, rec)


@pytest.mark.timeout(300)
def test_the_cluster_not_the_driver_decides_the_device(ray_cluster, tmp_path, monkeypatch):
    from whisperjav_enhance import devices
    from whisperjav_enhance.pipeline import enhance_scenes

    # This machine "has" two GPUs and the cluster (--num-gpus=0) none: the cluster decides.
    monkeypatch.setattr(devices, "_parent_visible", lambda: ["0", "1"])
    scenes = tmp_path / "scenes"
    write_scene(scenes / "film_scene_0000.wav", 0.1, seed=0)
    on = dict(backend="passthrough", executor="ray", ray_address=ray_cluster)
    with pytest.raises(DeviceError, match=r"the Ray cluster at \S+ has no GPUs"):
        enhance_scenes([scenes], tmp_path / "cuda_out", EnhanceOptions(device="cuda", **on),
                       PoolPolicy(**SAFE))
    _assert_disconnected()
    rec = Recorder()
    summary = enhance_scenes([scenes], tmp_path / "auto_out", EnhanceOptions(device="auto", **on),
                             PoolPolicy(**SAFE), on_event=rec)
    _assert_disconnected()
    assert summary.device == "cpu" and summary.scenes_enhanced == 1
    assert [e.device for e in rec.of(WorkerStarted)] == ["cpu"]
    assert any("device 'auto' runs on cpu" in e.message for e in rec.of(Log)), rec.of(Log)
    assert_workers_gone(rec.pids())


@pytest.mark.timeout(300)
def test_missing_weights_on_the_worker_stop_the_run_with_weights_error(ray_cluster, tmp_path):
    tasks = make_tasks(tmp_path, [("s0", 0.1), ("s1", 0.1)])
    missing = tmp_path / "no-such-checkpoint.pt"
    spec = WorkerSpec(backend="whisperjav_enhance.testing:FaultyBackend",
                      weights_path=str(missing), backend_options={}, slot=CPU)
    rec = Recorder()
    with pytest.raises(WeightsError, match="no weights at") as info:
        _run_ray(tasks, units_of([[0, 1]]), [spec], PoolPolicy(**SAFE), on_event=rec,
                 address=ray_cluster)
    _assert_disconnected()
    assert str(missing) in info.value.searched
    assert "raised in the worker process" in str(info.value.__cause__)
    assert [e.reason for e in rec.of(WorkerRetired)] == ["load_failed"]
    assert not rec.of(SceneFinished) and not (tmp_path / "out").exists()


def test_a_later_actor_that_fails_to_load_is_a_crash_not_the_end_of_the_run(ray_cluster, tmp_path):
    # Actor 1 loads, so the setup is sound; actor 2 raises while loading. It is replaced, and every
    # scene is still enhanced (the local pool's rule, tested there too).
    from whisperjav_enhance.events import WorkerCrashed

    tasks = make_tasks(tmp_path, [("s0", 0.05), ("s1", 0.08), ("s2", 0.1), ("s3", 0.06)])
    spec = faulty_spec(fail_second_load=str(tmp_path / "loads"), **SMALL_WINDOWS)
    rec = Recorder()
    report = _run_ray(tasks, units_of([[0], [1], [2], [3]]), [spec],
                      PoolPolicy(max_scenes_per_worker=2, **SAFE), on_event=rec, address=ray_cluster)
    _assert_disconnected()
    for task, outcome in zip(tasks, report.outcomes):
        assert_enhanced_equal_input(task, outcome)
    crashes = rec.of(WorkerCrashed)
    assert len(crashes) == 1 and "failed to load: RuntimeError" in crashes[0].description
    assert report.worker_crashes == 1 and report.workers_started == 3
    assert_one_terminal_event_each(tasks, rec)
    assert_workers_gone(rec.pids())
