"""The benchmark harness (the whisperjav_enhance_bench package): scene sets are deterministic and
shaped as specified, the strategies are configured as documented, and `bench --set tiny` runs on
CPU end to end (real spawned processes, the product's pipeline, real files) with every strategy in
its JSON and table."""

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

from whisperjav_enhance.config import PoolPolicy
from whisperjav_enhance.devices import DeviceSlot
from whisperjav_enhance.errors import EnhanceError
from whisperjav_enhance.planning import pack_units
from whisperjav_enhance_bench import command, inprocess, poolrun, results, scenesets
from whisperjav_enhance_bench.context import BenchContext
from whisperjav_enhance_bench.strategies import STRATEGIES, STRATEGY_NAMES, strategy
from whisperjav_enhance_bench.strategyrun import child_env, skip_reason

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


def test_subset_keeps_every_nth_scene_and_every_long_one():
    film = scenesets.durations("film", 0)
    sub, picked = scenesets.subset(film, 4)
    long = [i for i, d in enumerate(film.durations_s) if d > 29.0]
    assert set(long) <= set(picked) and all(i in picked for i in range(0, 700, 4))
    assert sub.durations_s == tuple(film.durations_s[i] for i in picked)
    assert list(picked) == sorted(picked) and sub.name == "film/every-4"
    first, picked = scenesets.subset(film, 1, first=150)
    assert picked == tuple(range(150)) and first.name == "film[:150]"
    iso = scenesets.durations("isolation", 0)
    assert len(iso.durations_s) == 12 and abs(iso.total_s - 192.0) < 0.01 and max(iso.durations_s) == 60.0


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
    names = [s.name for s in STRATEGIES]
    assert names == ["upstream-clearvoice", "inprocess-scene", "inprocess-scene-emptycache",
                     "inprocess-expandable", "reload-every-n", "subprocess-per-scene",
                     "pool-recycle-n", "pool-recycle-drift", "pool-batched", "pool-batched-standby",
                     "pool-batched-standby-n", "direct-runtime", "pool-one-worker"]
    assert {s.name for s in STRATEGIES if s.requires_cuda} == CUDA_ONLY
    assert all(s.description for s in STRATEGIES)
    with pytest.raises(EnhanceError, match="unknown strategy"):
        strategy("nope")
    env = child_env(strategy("inprocess-expandable"), CPU)
    assert env["PYTORCH_CUDA_ALLOC_CONF"] == "expandable_segments:True"
    assert "PYTORCH_CUDA_ALLOC_CONF" not in child_env(strategy("inprocess-scene"), CPU)


def _ctx(tmp_path, set_name="tiny", backend="passthrough", weights_problem=None, n=3):
    ss = scenesets.durations(set_name, 0)
    return BenchContext(ss, tuple(f"/x/{i}.wav" for i in range(len(ss.durations_s))),
                        backend, {}, None, None, weights_problem, CPU, tmp_path, n, 120.0,
                        None, False, 60.0)


def _pool_setup(ctx, s):
    """The units the pipeline will pack for pool strategy ``s`` (as pipeline.run_scenes packs
    them: the options' unit size, never more scenes than a worker may do) and its policy."""
    plan = poolrun.pool_plan(ctx, strategy(s))
    units = pack_units(ctx.durations, plan.options.batch_seconds,
                       max_scenes=plan.policy.max_scenes_per_worker)
    return units, plan.policy


def test_pool_strategies_units_and_policies(tmp_path):
    ctx = _ctx(tmp_path, "film-small", n=10)
    n_scenes = len(ctx.durations)

    units, pol = _pool_setup(ctx, "subprocess-per-scene")
    assert len(units) == n_scenes and all(len(u.scenes) == 1 for u in units)
    assert pol.max_scenes_per_worker == 1 and not pol.warm_standby and pol.workers_per_device == 1

    units, pol = _pool_setup(ctx, "pool-recycle-n")
    assert len(units) == n_scenes and pol.max_scenes_per_worker == 10 and not pol.warm_standby
    assert pol.max_drift_mb >= poolrun.NEVER

    units, pol = _pool_setup(ctx, "pool-recycle-drift")
    assert pol.max_scenes_per_worker >= poolrun.NEVER and pol.max_drift_mb == PoolPolicy().max_drift_mb

    units, pol = _pool_setup(ctx, "pool-batched")
    assert len(units) < n_scenes and max(len(u.scenes) for u in units) > 1
    assert sorted(i for u in units for i in u.scenes) == list(range(n_scenes))
    assert not pol.warm_standby and pol.max_scenes_per_worker == PoolPolicy().max_scenes_per_worker

    _, pol = _pool_setup(ctx, "pool-batched-standby")
    assert pol == PoolPolicy()   # the shipped default, untouched
    _, pol = _pool_setup(ctx, "pool-one-worker")
    assert pol == PoolPolicy(workers_per_device=1)   # the same with one worker

    units, pol = _pool_setup(ctx, "pool-batched-standby-n")
    assert pol.warm_standby and pol.max_scenes_per_worker == 10
    assert max(len(u.scenes) for u in units) <= 10   # a unit never outlives its worker


def test_skip_reasons(tmp_path):
    probes: dict = {}
    ctx = _ctx(tmp_path)
    for name in CUDA_ONLY:
        assert "needs CUDA" in skip_reason(strategy(name), ctx, probes)
    assert "MossFormer2_SE_48K only" in skip_reason(strategy("upstream-clearvoice"), ctx, probes)
    assert skip_reason(strategy("pool-batched"), ctx, probes) is None
    assert skip_reason(strategy("direct-runtime"), ctx, probes) is None

    moss = _ctx(tmp_path, backend="mossformer2", weights_problem="needs mossformer2 weights: x")
    assert skip_reason(strategy("pool-batched"), moss, probes).startswith("needs mossformer2")
    reason = skip_reason(strategy("upstream-clearvoice"), moss, probes)
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
    assert command.run(args, ["__main__.py"]) == 0
    doc = json.loads((out / "results.json").read_text())
    assert [s["strategy"] for s in doc["strategies"]] == ["inprocess-scene", "pool-batched"]
    for s in doc["strategies"]:
        assert s["status"] == "skipped"
        assert "mossformer2 weights" in s["reason"] and "--random-weights" in s["reason"]
        assert str(tmp_path / "hf") in s["reason"]   # says where it looked


def test_bad_arguments_exit_2(tmp_path):
    assert command.run(_parse(["--strategies", "nope", "--out", str(tmp_path)]), ["x"]) == 2
    assert command.run(_parse(["--device", "tpu", "--out", str(tmp_path)]), ["x"]) == 2
    assert command.run(_parse(["--scenes-per-recycle", "0", "--out", str(tmp_path)]), ["x"]) == 2
    assert command.run(_parse(["--repeat", "0", "--out", str(tmp_path)]), ["x"]) == 2
    # auto depends on the weights present, which random weights would not be
    assert command.run(_parse(["--random-weights", "--out", str(tmp_path)]), ["x"]) == 2
    assert not (tmp_path / "results.json").exists()


def test_append_merges_runs_into_one_table(tmp_path):
    """A run split over several commands (GPU sessions cap a command's length) ends as one table;
    results of a different run are refused."""
    out, scenes = tmp_path / "res", tmp_path / "scenes"
    common = ["--set", "tiny", "--device", "cpu", "--out", str(out), "--scenes-dir", str(scenes)]
    assert command.run(_parse(common + ["--strategies", "reload-every-n"]), ["__main__.py"]) == 0
    assert command.run(_parse(common + ["--strategies", "inprocess-scene,inprocess-expandable",
                                        "--append"]), ["__main__.py", "--append"]) == 0
    doc = json.loads((out / "results.json").read_text())
    assert [s["strategy"] for s in doc["strategies"]] == ["inprocess-scene", "inprocess-expandable",
                                                          "reload-every-n"]
    assert [s["status"] for s in doc["strategies"]] == ["ran", "skipped", "ran"]
    assert len((out / "COMMAND.txt").read_text().splitlines()) == 2
    table = (out / "results.md").read_text()
    assert "| inprocess-scene | ran |" in table and "| reload-every-n | ran |" in table

    other = ["--set", "tiny", "--seed", "5", "--device", "cpu", "--out", str(out),
             "--strategies", "inprocess-scene", "--append"]
    assert command.run(_parse(other), ["__main__.py"]) == 2
    assert json.loads((out / "results.json").read_text()) == doc   # untouched


def test_strategy_process_reports_child_errors(tmp_path):
    """A strategy process that fails sends its error and traceback back, and leaves no process."""
    cfg = {"kind": "inprocess", "backend": "no-such-backend", "weights_path": None,
           "backend_options": {}, "windowed": True, "uses_torch": False,
           "torch_device": "cpu", "inputs": [], "outputs": [], "window_s": 1.0,
           "empty_cache": False, "reload_every": None, "vram_budget_gb": None}
    assert "WJE_BENCH_TEST_VAR" not in os.environ
    with pytest.raises(EnhanceError, match="unknown backend 'no-such-backend'") as info:
        inprocess.run_in_child(cfg, {"CUDA_VISIBLE_DEVICES": "", "WJE_BENCH_TEST_VAR": "1"},
                               timeout_s=300)
    assert "Traceback" in str(info.value)
    assert "WJE_BENCH_TEST_VAR" not in os.environ   # set for the child only


def _parse(argv):
    import argparse

    p = argparse.ArgumentParser()
    command.add_arguments(p)
    return p.parse_args(argv)


# -- the CI run ---------------------------------------------------------------------------------

@pytest.mark.timeout(BENCH_TIMEOUT_S + 60)
def test_bench_tiny_cpu_end_to_end(tmp_path):
    """`bench --set tiny` on CPU: every strategy in JSON and table, CUDA-only ones skipped with
    the reason, and every strategy that ran finished every scene with real outputs. The default
    backend is what `enhance`'s auto picks here (one meaning of auto)."""
    from whisperjav_enhance.backends import select_backend

    expected, _ = select_backend("auto")
    out = tmp_path / "res"
    cmd = [sys.executable, "-m", "whisperjav_enhance_bench", "--set", "tiny", "--device", "cpu",
           "--out", str(out), "--scenes-dir", str(tmp_path / "scenes")]
    r = subprocess.run(cmd, cwd=tmp_path, capture_output=True, text=True, timeout=BENCH_TIMEOUT_S,
                       env=dict(os.environ, PYTHONPATH=str(REPO)))
    assert r.returncode == 0, r.stderr[-4000:]
    doc = json.loads((out / "results.json").read_text())
    by_name = {s["strategy"]: s for s in doc["strategies"]}
    assert list(by_name) == list(STRATEGY_NAMES)
    n = len(scenesets.durations("tiny", 0).durations_s)
    total = scenesets.durations("tiny", 0).total_s
    for name, s in by_name.items():
        assert s["device"] == "cpu" and s["backend"] == expected.name
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
            assert max(s["peak_rss_mib"].values()) > 20                       # a real process
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
    assert doc["meta"]["weights"]["origin"] == expected.weights.origin
    assert "auto picked" in doc["meta"]["backend_note"]

    table = (out / "results.md").read_text()
    assert "CPU run" in table
    for name in STRATEGY_NAMES:
        assert f"| {name} |" in table
    assert "## What isolation costs" in table       # direct-runtime and the pool both ran
    assert table.count("skipped: needs CUDA") == 2
    for png in ("memory.png", "throughput.png"):
        assert (out / png).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "python -m whisperjav_enhance_bench --set tiny" in (out / "COMMAND.txt").read_text()


@pytest.mark.gpu
@pytest.mark.timeout(BENCH_TIMEOUT_S + 60)
def test_bench_tiny_cuda_runs_cuda_strategies(tmp_path):
    torch = pytest.importorskip("torch")
    if not torch.cuda.is_available():
        pytest.skip("needs CUDA")
    out = tmp_path / "res"
    cmd = [sys.executable, "-m", "whisperjav_enhance_bench", "--set", "tiny", "--device", "cuda",
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


# -- repeats, recycle cost, what isolation costs ---------------------------------------------------

def _ran(name, wall, rate=10.0, workers=1, settings=None, **kw):
    return results.StrategyResult(
        name, "d", False, "ran", None, "cpu", "passthrough", None, 4, scenes_ok=4,
        audio_seconds=rate * wall, wall_seconds=wall, audio_seconds_per_second=rate,
        workers_at_once=workers, settings={"policy": {}} if settings is None else settings, **kw)


def test_repeats_keep_the_median_run_and_every_wall():
    runs = [_ran("pool-batched", 12.0), _ran("pool-batched", 7.0), _ran("pool-batched", 9.6)]
    chosen = results.median_of_repeats(runs)
    assert chosen.wall_seconds == 9.6 and chosen.wall_seconds_runs == [12.0, 7.0, 9.6]
    skipped = results.StrategyResult("x", "d", True, "skipped", "needs CUDA", "cpu", "b", None, 4)
    assert results.median_of_repeats([skipped]) is skipped


def test_recycle_cost_is_the_wait_beyond_the_first_start_per_recycle():
    r = _ran("pool-batched-standby-n", 10.0, recycles={"max_scenes": 4, "shutdown": 1},
             startup_wait_seconds=8.0, first_ready_seconds=2.0)
    assert r.recycle_cost_seconds == pytest.approx(1.5)     # shutdown is not a recycle
    assert _ran("pool-batched", 10.0).recycle_cost_seconds is None


def test_isolation_table_compares_each_pool_per_worker_with_the_direct_runtime():
    from whisperjav_enhance_bench.report import isolation_lines

    direct = _ran("direct-runtime", 10.0, rate=20.0, settings={"torch_imported": False})
    lines = "\n".join(isolation_lines([direct, _ran("pool-one-worker", 10.0, rate=19.6),
                                       _ran("pool-batched-standby", 10.0, rate=30.0, workers=2)]))
    assert "| pool-one-worker | 1 | 20 | 0.98 | meets 0.95 |" in lines
    assert "| pool-batched-standby | 2 | 30 | 0.75 | below 0.95 |" in lines
    assert "torch imported: False" in lines
    assert isolation_lines([_ran("pool-one-worker", 10.0)]) == []   # nothing to compare with


def test_direct_runtime_of_a_torch_free_backend_never_imports_torch(tmp_path):
    """The direct loop must not carry costs the backend does not have, or the comparison with
    the pool would flatter the pool."""
    from whisperjav_enhance.backends import backend_class

    assert backend_class("passthrough").uses_torch is False
    out = tmp_path / "res"
    args = _parse(["--set", "tiny", "--backend", "passthrough", "--device", "cpu",
                   "--strategies", "direct-runtime,pool-one-worker", "--repeat", "2",
                   "--out", str(out), "--scenes-dir", str(tmp_path / "scenes")])
    assert command.run(args, ["__main__.py"]) == 0
    doc = json.loads((out / "results.json").read_text())
    direct, pool = doc["strategies"]
    assert direct["status"] == pool["status"] == "ran"
    assert direct["settings"]["torch_imported"] is False
    assert len(direct["wall_seconds_runs"]) == len(pool["wall_seconds_runs"]) == 2
    assert pool["workers_at_once"] == 1 and pool["worker_pids"]
    assert "## What isolation costs" in (out / "results.md").read_text()


_WITHOUT_BENCH = r'''
import importlib.abc, sys
class Hide(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path, target=None):
        if name.split(".")[0] == "whisperjav_enhance_bench":
            raise ModuleNotFoundError(f"No module named {name!r}", name=name)
sys.meta_path.insert(0, Hide())
from whisperjav_enhance.cli import main
sys.exit(main(sys.argv[1:]))
'''


@pytest.mark.parametrize("argv", [["bench", "--set", "tiny"], ["bench", "--quality"]])
def test_cli_says_when_the_bench_package_is_missing(tmp_path, argv):
    r = subprocess.run([sys.executable, "-c", _WITHOUT_BENCH, *argv], cwd=tmp_path,
                       capture_output=True, text=True, timeout=120,
                       env=dict(os.environ, PYTHONPATH=str(REPO)))
    assert r.returncode == 2, r.stderr
    assert "whisperjav_enhance_bench" in r.stderr and "not installed" in r.stderr
    assert "Traceback" not in r.stderr
