"""benchmarks/engine_scaling.py (issue 2's GPU criteria) runs end to end: a smoke run on the CPU
with the passthrough backend writes its JSON, table and command, with every part filled."""

import json
import subprocess
import sys
from pathlib import Path

SCRIPT = Path(__file__).resolve().parent.parent / "benchmarks" / "engine_scaling.py"


def test_smoke_run_writes_results(tmp_path):
    r = subprocess.run([sys.executable, str(SCRIPT), "--backend", "passthrough", "--device", "cpu",
                        "--smoke", "--out", str(tmp_path)], capture_output=True, text=True,
                       timeout=240)
    assert r.returncode == 0, r.stderr
    result = json.loads((tmp_path / "results.json").read_text())
    assert [row["scene_seconds"] for row in result["a"]["rows"]] == [1.0, 2.0, 4.0]
    assert all(row["windows"] >= 1 and row["forwards"] >= 1 for row in result["a"]["rows"])
    assert result["a"]["peak_spread"] is None             # no device memory on the CPU
    batches = {row["batch"]: row for row in result["b"]["rows"]}
    assert set(batches) == {1, 32} and all(b["audio_s_per_s"] > 0 for b in batches.values())
    assert result["weights"]["random_test_weights"] is False
    assert "engine_scaling.py" in (tmp_path / "COMMAND.txt").read_text()
    assert "Peak allocated vs scene length" in (tmp_path / "results.md").read_text()
