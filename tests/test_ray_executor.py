"""The Ray transport (whisperjav_enhance.executor.ray) on this CPU machine: recycling,
Ctrl-C/SIGTERM, load failures, devices decided by the cluster, and CLI runs compared with the
local pool. The crash table runs on Ray from test_crash_table.py.

The cluster (tests/_ray_cluster.py) is joined through ``address=``, the path a multi-node run
takes. The local-instance path (``address=None``: start, use, stop) runs in the CLI tests'
subprocesses, which must leave no Ray process behind.
"""

from __future__ import annotations

import importlib.util
import json
import os
import re
import shutil
import signal
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
from whisperjav_enhance.executor import WorkerSpec
from whisperjav_enhance.manifest import read_manifest

from _executor_helpers import (CPU, FAULTY, INTERRUPT_UNITS, SMALL_WINDOWS, Recorder,
                               assert_enhanced_equal_input, assert_interrupted_cleanly,
                               assert_no_partials, assert_one_terminal_event_each,
                               assert_workers_gone, executor_on, faulty_spec, interrupt_setup,
                               make_tasks, units_of, write_scene)
from _ray_cluster import RAY_STOP_TIMEOUT_S, cluster_processes, free_port, stop_cluster

pytestmark = [
    pytest.mark.ray,
    pytest.mark.skipif(importlib.util.find_spec("ray") is None,
                       reason="needs the optional ray extra (pip install ray)"),
    pytest.mark.skipif(not Path("/proc/self").exists(), reason="process checks read /proc"),
]

CLI_TIMEOUT_S = 240
SAFE = dict(startup_timeout_s=120.0, workers_per_device=1)  # one actor: a deterministic order


@pytest.fixture(scope="module", autouse=True)
def _ray_settings(ray_auth_env):
    """Every test here, the CLI subprocesses included, runs with the session's Ray token."""


def _run_ray(tasks, units, specs, policy, on_event=None, address=None):
    return executor_on("ray", address)(tasks, units, specs, policy, on_event)


def _assert_disconnected():
    import ray

    assert not ray.is_initialized(), "the Ray transport must drop the connection it opened"


# -- without a cluster ----------------------------------------------------------------------------------
def test_missing_ray_package_is_backend_unavailable_naming_the_extra(tmp_path, monkeypatch):
    tasks = make_tasks(tmp_path, [("s0", 0.05)])
    monkeypatch.setitem(sys.modules, "ray", None)  # `import ray` now fails as if not installed
    with pytest.raises(BackendUnavailable, match=r"pip install ray.*'\.\[ray\]'"):
        _run_ray(tasks, units_of([[0]]), [faulty_spec()], PoolPolicy(**SAFE))


@pytest.mark.timeout(60)
def test_an_address_nobody_answers_at_is_a_config_error_at_once(tmp_path):
    import ray

    tasks = make_tasks(tmp_path, [("s0", 0.05)])
    address = f"127.0.0.1:{free_port()}"  # closed again: connection refused
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
    from whisperjav_enhance.executor.ray_session import cluster_slots

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
    from whisperjav_enhance.executor.ray_session import cluster_slots

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
        while cluster_processes(ray_tmp) and time.monotonic() < deadline:
            time.sleep(0.2)
        assert not cluster_processes(ray_tmp)
    finally:
        stop_cluster(ray_tmp)
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
        while cluster_processes(ray_tmp) and time.monotonic() < deadline:
            time.sleep(0.2)
        assert not cluster_processes(ray_tmp), "Ray processes outlived the interrupted run"
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=30)
        log.close()
        stop_cluster(ray_tmp)
        shutil.rmtree(ray_tmp, ignore_errors=True)
    assert_no_partials(out)
    summary = json.loads((out / "summary.json").read_text())
    wavs = sorted(out.glob("*.wav"))
    assert summary["interrupted"] is True and 1 <= summary["scenes_enhanced"] == len(wavs) < 6
    for wav in wavs:
        assert_enhanced_equal_input(SimpleNamespace(input_path=str(scenes / wav.name),
                                                    output_path=str(wav)),
                                    SimpleNamespace(status="enhanced", output_path=str(wav)))


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
    monkeypatch.setattr(devices, "gpu_count", lambda: 2)
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
    spec = WorkerSpec(backend=FAULTY,
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
