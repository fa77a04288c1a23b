"""The benchmark harness: scene sets are deterministic and shaped as specified, the strategies
are configured as documented, and `bench --set tiny` runs on CPU end to end (real spawned
processes, the real pool, real files) with every strategy in its JSON and table."""

from __future__ import annotations

import importlib.util
import json
import math
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from whisperjav_enhance import bench, benchloop, scenesets
from whisperjav_enhance.config import PoolPolicy
from whisperjav_enhance.devices import DeviceSlot
from whisperjav_enhance.errors import EnhanceError

REPO = Path(__file__).resolve().parents[1]
CPU = DeviceSlot("cpu", "", "cpu")
CUDA_ONLY = {"inprocess-scene-emptycache", "inprocess-expandable"}
BENCH_TIMEOUT_S = 900  # generous: the machine is shared; the CI budget is measured, not asserted


# -- scene sets ---------------------------------------------------------------------------------

def test_scene_sets_are_deterministic_per_seed():
    for name in scenesets.SET_NAMES:
        a, b = scenesets.durations(name, 7), scenesets.durations(name, 7)
        assert a == b and a.fingerprint() == b.fingerprint()
        c = scenesets.durations(name, 8)
        assert c.durations_s != a.durations_s and c.fingerprint() != a.fingerprint()
    x = scenesets.synthesize(3, 4_800, seed=1)
    assert np.array_equal(x, scenesets.synthesize(3, 4_800, seed=1))
    assert not np.array_equal(x, scenesets.synthesize(3, 4_800, seed=2))
    assert x.dtype == np.float32 and np.abs(x).max() < 1.0


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_scene_set_shapes(seed):
    tiny = np.array(scenesets.durations("tiny", seed).durations_s)
    assert len(tiny) == 9
    assert np.sum(np.isclose(tiny, 3.0)) == 1
    short = tiny[~np.isclose(tiny, 3.0)]
    assert len(short) == 8 and short.min() >= 0.1 - 1e-9 and short.max() <= 1.5 + 1e-9

    film = np.array(scenesets.durations("film", seed).durations_s)
    assert len(film) == 700
    assert abs(film.sum() - 7_200.0) < 0.01 * 7_200.0
    long = film[film > 29.0 + 1e-9]
    assert len(long) == 4 and long.min() >= 60.0 - 1e-9 and long.max() <= 220.0 + 1e-9
    short = film[film <= 29.0 + 1e-9]
    assert short.min() >= 0.2 - 1e-9
    # log-normal: most scenes short, a long tail up to the 29 s cap
    assert np.median(short) < 10.0 and short.max() > 25.0

    small = np.array(scenesets.durations("film-small", seed).durations_s)
    assert len(small) == 40 and np.sum(small > 29.0 + 1e-9) == 1
    assert abs(small.sum() - 7_200.0 * 40 / 700) < 0.01 * small.sum()

    tail = np.array(scenesets.durations("longtail", seed).durations_s)
    assert np.sum(tail >= 60.0) == 30 and tail.max() <= 300.0 + 1e-9


def test_write_scene_set_real_wavs_and_reuse(tmp_path):
    ss = scenesets.durations("tiny", 0)
    paths = scenesets.write_scene_set(ss, tmp_path / "s")
    assert [p.name for p in paths] == [f"bench_scene_{i:04d}.wav" for i in range(len(paths))]
    for p, d in zip(paths, ss.durations_s):
        info = sf.info(str(p))
        assert (info.samplerate, info.channels, info.subtype) == (48_000, 1, "PCM_16")
        assert info.frames == round(d * 48_000)
    mtimes = [p.stat().st_mtime_ns for p in paths]
    again = scenesets.write_scene_set(ss, tmp_path / "s")          # same set: reused as is
    assert [p.stat().st_mtime_ns for p in again] == mtimes
    other = scenesets.write_scene_set(scenesets.durations("tiny", 1), tmp_path / "s")
    assert sf.info(str(other[0])).frames == round(scenesets.durations("tiny", 1).durations_s[0] * 48_000)


# -- strategies -------------------------------------------------------------------------------

def test_strategy_registry():
    names = [s.name for s in bench.STRATEGIES]
    assert names == ["upstream-clearvoice", "inprocess-scene", "inprocess-scene-emptycache",
                     "inprocess-expandable", "reload-every-n", "subprocess-per-scene",
                     "pool-recycle-n", "pool-recycle-drift", "pool-batched", "pool-batched-standby",
                     "pool-batched-standby-n"]
    assert {s.name for s in bench.STRATEGIES if s.requires_cuda} == CUDA_ONLY
    assert all(s.description for s in bench.STRATEGIES)
    with pytest.raises(EnhanceError, match="unknown strategy"):
        bench.strategy("nope")
    env = bench._child_env(bench.strategy("inprocess-expandable"), CPU)
    assert env["PYTORCH_CUDA_ALLOC_CONF"] == "expandable_segments:True"
    assert "PYTORCH_CUDA_ALLOC_CONF" not in bench._child_env(bench.strategy("inprocess-scene"), CPU)


def _ctx(tmp_path, set_name="tiny", backend="passthrough", weights_problem=None, n=3):
    ss = scenesets.durations(set_name, 0)
    return bench.BenchContext(ss, tuple(f"/x/{i}.wav" for i in range(len(ss.durations_s))),
                              backend, {}, None, None, weights_problem, CPU, tmp_path, n, 120.0,
                              None, False, 60.0)


def test_pool_strategies_units_and_policies(tmp_path):
    ctx = _ctx(tmp_path, "film-small", n=10)
    n_scenes = len(ctx.durations)

    units, pol = bench._pool_setup(ctx, bench.strategy("subprocess-per-scene"))
    assert len(units) == n_scenes and all(len(u.scenes) == 1 for u in units)
    assert pol.max_scenes_per_worker == 1 and not pol.warm_standby and pol.workers_per_device == 1

    units, pol = bench._pool_setup(ctx, bench.strategy("pool-recycle-n"))
    assert len(units) == n_scenes and pol.max_scenes_per_worker == 10 and not pol.warm_standby
    assert pol.max_drift_mb >= bench.NEVER

    units, pol = bench._pool_setup(ctx, bench.strategy("pool-recycle-drift"))
    assert pol.max_scenes_per_worker >= bench.NEVER and pol.max_drift_mb == PoolPolicy().max_drift_mb

    units, pol = bench._pool_setup(ctx, bench.strategy("pool-batched"))
    assert len(units) < n_scenes and max(len(u.scenes) for u in units) > 1
    assert sorted(i for u in units for i in u.scenes) == list(range(n_scenes))
    assert not pol.warm_standby and pol.max_scenes_per_worker == PoolPolicy().max_scenes_per_worker

    _, pol = bench._pool_setup(ctx, bench.strategy("pool-batched-standby"))
    assert pol == PoolPolicy()   # the shipped default, untouched


def test_skip_reasons(tmp_path):
    probes: dict = {}
    ctx = _ctx(tmp_path)
    for name in CUDA_ONLY:
        assert "needs CUDA" in bench.skip_reason(bench.strategy(name), ctx, probes)
    assert "MossFormer2_SE_48K only" in bench.skip_reason(bench.strategy("upstream-clearvoice"),
                                                          ctx, probes)
    assert bench.skip_reason(bench.strategy("pool-batched"), ctx, probes) is None

    moss = _ctx(tmp_path, backend="mossformer2", weights_problem="needs mossformer2 weights: x")
    assert bench.skip_reason(bench.strategy("pool-batched"), moss, probes).startswith("needs mossformer2")
    reason = bench.skip_reason(bench.strategy("upstream-clearvoice"), moss, probes)
    if probes["upstream"] is None:
        pytest.skip("clearvoice's decode path imports here, so the upstream path is not skipped")
    assert "clearvoice.utils.decode_batch" in reason and "does not import here" in reason
    if importlib.util.find_spec("torchaudio") is None:
        assert "not installed: torchaudio" in reason


def test_missing_weights_are_a_reason_not_a_crash(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)   # no clearvoice checkpoints/ folder here
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    monkeypatch.delenv("HF_HUB_CACHE", raising=False)
    monkeypatch.delenv("WHISPERJAV_ENHANCE_MOSSFORMER2_WEIGHTS", raising=False)
    out = tmp_path / "res"
    args = _parse(["--set", "tiny", "--backend", "mossformer2", "--device", "cpu",
                   "--strategies", "inprocess-scene,pool-batched", "--out", str(out),
                   "--scenes-dir", str(tmp_path / "scenes")])
    assert bench.run(args, ["bench.py"]) == 0
    doc = json.loads((out / "results.json").read_text())
    assert [s["strategy"] for s in doc["strategies"]] == ["inprocess-scene", "pool-batched"]
    for s in doc["strategies"]:
        assert s["status"] == "skipped"
        assert "mossformer2 weights" in s["reason"] and "--random-weights" in s["reason"]
        assert str(tmp_path / "hf") in s["reason"]   # says where it looked


def test_bad_arguments_exit_2(tmp_path):
    assert bench.run(_parse(["--strategies", "nope", "--out", str(tmp_path)]), ["x"]) == 2
    assert bench.run(_parse(["--device", "tpu", "--out", str(tmp_path)]), ["x"]) == 2
    assert bench.run(_parse(["--scenes-per-recycle", "0", "--out", str(tmp_path)]), ["x"]) == 2
    assert not (tmp_path / "results.json").exists()


def test_append_merges_runs_into_one_table(tmp_path):
    """A run split over several commands (GPU sessions cap a command's length) ends as one table;
    results of a different run are refused."""
    out, scenes = tmp_path / "res", tmp_path / "scenes"
    common = ["--set", "tiny", "--device", "cpu", "--out", str(out), "--scenes-dir", str(scenes)]
    assert bench.run(_parse(common + ["--strategies", "reload-every-n"]), ["bench.py"]) == 0
    assert bench.run(_parse(common + ["--strategies", "inprocess-scene,inprocess-expandable",
                                      "--append"]), ["bench.py", "--append"]) == 0
    doc = json.loads((out / "results.json").read_text())
    assert [s["strategy"] for s in doc["strategies"]] == ["inprocess-scene", "inprocess-expandable",
                                                          "reload-every-n"]
    assert [s["status"] for s in doc["strategies"]] == ["ran", "skipped", "ran"]
    assert len((out / "COMMAND.txt").read_text().splitlines()) == 2
    table = (out / "results.md").read_text()
    assert "| inprocess-scene | ran |" in table and "| reload-every-n | ran |" in table

    other = ["--set", "tiny", "--seed", "5", "--device", "cpu", "--out", str(out),
             "--strategies", "inprocess-scene", "--append"]
    assert bench.run(_parse(other), ["bench.py"]) == 2
    assert json.loads((out / "results.json").read_text()) == doc   # untouched


def test_strategy_process_reports_child_errors(tmp_path):
    """A strategy process that fails sends its error and traceback back, and leaves no process."""
    cfg = {"kind": "inprocess", "backend": "no-such-backend", "weights_path": None,
           "torch_device": "cpu", "inputs": [], "outputs": [], "window_s": 1.0,
           "empty_cache": False, "reload_every": None, "vram_budget_gb": None}
    assert "WJE_BENCH_TEST_VAR" not in os.environ
    with pytest.raises(EnhanceError, match="unknown backend 'no-such-backend'") as info:
        benchloop.run_in_child(cfg, {"CUDA_VISIBLE_DEVICES": "", "WJE_BENCH_TEST_VAR": "1"},
                               timeout_s=300)
    assert "Traceback" in str(info.value)
    assert "WJE_BENCH_TEST_VAR" not in os.environ   # set for the child only


def _parse(argv):
    import argparse

    p = argparse.ArgumentParser()
    bench.add_arguments(p)
    return p.parse_args(argv)


# -- the CI run ---------------------------------------------------------------------------------

def test_bench_tiny_cpu_end_to_end(tmp_path):
    """`bench --set tiny` on CPU: every strategy in JSON and table, CUDA-only ones skipped with
    the reason, and every strategy that ran finished every scene with real outputs."""
    out = tmp_path / "res"
    cmd = [sys.executable, "-m", "whisperjav_enhance.bench", "--set", "tiny", "--device", "cpu",
           "--out", str(out), "--scenes-dir", str(tmp_path / "scenes")]
    r = subprocess.run(cmd, cwd=tmp_path, capture_output=True, text=True, timeout=BENCH_TIMEOUT_S,
                       env=dict(os.environ, PYTHONPATH=str(REPO)))
    assert r.returncode == 0, r.stderr[-4000:]
    doc = json.loads((out / "results.json").read_text())
    by_name = {s["strategy"]: s for s in doc["strategies"]}
    assert list(by_name) == list(bench.STRATEGY_NAMES)
    n = len(scenesets.durations("tiny", 0).durations_s)
    total = scenesets.durations("tiny", 0).total_s
    for name, s in by_name.items():
        assert s["device"] == "cpu" and s["backend"] == "passthrough"
        if name in CUDA_ONLY:
            assert s["status"] == "skipped" and "needs CUDA" in s["reason"]
        elif name == "upstream-clearvoice":
            assert s["status"] == "skipped" and "MossFormer2" in s["reason"]
        else:
            assert s["status"] == "ran", (name, s["reason"])
            assert (s["scenes_ok"], s["scenes_failed"], s["scenes_total"]) == (n, 0, n), name
            assert math.isclose(s["audio_seconds"], total, rel_tol=1e-6)
            assert s["wall_seconds"] > 0 and s["audio_seconds_per_second"] > 0
            assert all(v is None for v in s["peak_reserved_mib"].values())   # CPU: no VRAM
            assert max(s["peak_rss_mib"].values()) > 50                       # a real process
            assert s["series"] and s["series"][-1]["scenes_done"] == n
    assert n <= by_name["subprocess-per-scene"]["workers_started"] <= n + 1
    # (the pool may start one more worker as the last one retires, so allow one extra)
    assert math.ceil(n / 3) <= by_name["pool-recycle-n"]["workers_started"] <= math.ceil(n / 3) + 1
    assert by_name["pool-recycle-drift"]["workers_started"] == 1
    standby_n = by_name["pool-batched-standby-n"]
    assert standby_n["recycles"].get("max_scenes", 0) >= math.ceil(n / 3) - 1
    assert standby_n["workers_started"] >= math.ceil(n / 3) and standby_n["worker_crashes"] == 0
    assert by_name["reload-every-n"]["recycles"] == {"reload": math.ceil(n / 3) - 1}
    assert doc["meta"]["environment"]["cpu_count"] == os.cpu_count()
    assert doc["meta"]["weights"]["origin"] == "none"

    table = (out / "results.md").read_text()
    assert "CPU run" in table
    for name in bench.STRATEGY_NAMES:
        assert f"| {name} |" in table
    assert table.count("skipped: needs CUDA") == 2
    for png in ("memory.png", "throughput.png"):
        assert (out / png).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "whisperjav_enhance.bench --set tiny" in (out / "COMMAND.txt").read_text()


@pytest.mark.gpu
def test_bench_tiny_cuda_runs_cuda_strategies(tmp_path):
    torch = pytest.importorskip("torch")
    if not torch.cuda.is_available():
        pytest.skip("needs CUDA")
    out = tmp_path / "res"
    cmd = [sys.executable, "-m", "whisperjav_enhance.bench", "--set", "tiny", "--device", "cuda",
           "--backend", "mossformer2", "--random-weights", "--vram-budget-gb", "8",
           "--out", str(out), "--scenes-dir", str(tmp_path / "scenes")]
    r = subprocess.run(cmd, cwd=tmp_path, capture_output=True, text=True, timeout=BENCH_TIMEOUT_S,
                       env=dict(os.environ, PYTHONPATH=str(REPO)))
    assert r.returncode == 0, r.stderr[-4000:]
    doc = json.loads((out / "results.json").read_text())
    for s in doc["strategies"]:
        assert s["weights"]["random_test_weights"] is True
        if s["status"] == "ran":
            assert s["scenes_ok"] == s["scenes_total"]
            assert max(v for v in s["peak_reserved_mib"].values() if v is not None) > 0
    ran = {s["strategy"] for s in doc["strategies"] if s["status"] == "ran"}
    assert CUDA_ONLY <= ran
