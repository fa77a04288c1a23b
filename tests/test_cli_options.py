"""Issue 15 on the command line: ``--backend-option KEY=VALUE`` (checked by the backend, exit 2
naming the valid keys, listed by ``models``, the old window flags as aliases), ``enhance
--dry-run`` (discovery, probing and planning only: nothing started, nothing written, exit 0 or 2
as a run would decide) and what ``enhance --help`` promises."""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

import pytest
import soundfile as sf

from _cli import FAST, RUN_TIMEOUT_S, Background, empty_caches_env, good_scenes, run_cli
from whisperjav_enhance.cli import build_parser, options_from_args
from whisperjav_enhance.backends.base import OptionText
from whisperjav_enhance.manifest import read_manifest


def _options(*argv):
    return options_from_args(build_parser().parse_args(["enhance", "x.wav", "-o", "out", *argv]))


# -- --backend-option -------------------------------------------------------------------------------
def test_backend_options_are_text_for_the_backend_and_the_window_flags_are_aliases():
    options, _ = _options("--backend-option", "atten_lim_db=12", "--backend-option",
                          "post_filter_beta = 0.02")
    assert options.backend_options == {"atten_lim_db": "12", "post_filter_beta": "0.02"}
    assert all(isinstance(v, OptionText) for v in options.backend_options.values())
    by_alias, _ = _options("--window-seconds", "2", "--overlap-seconds", "0.5")
    assert by_alias.backend_options == {"window_seconds": 2.0, "overlap_seconds": 0.5}


@pytest.mark.parametrize("argv,message", [
    (["--backend-option", "nonsense"], "expected KEY=VALUE"),
    (["--backend-option", "=3"], "expected KEY=VALUE"),
    (["--backend-option", "sample_rate=16000", "--backend-option", "sample_rate=8000"],
     "given twice"),
    (["--backend-option", "colour=blue"],
     "passthrough has no option colour; it takes: window_seconds (a number >= 0.001, default "
     "4.0); overlap_seconds (a number >= 0, default 1.0); sample_rate (an integer in "
     "4000..384000, default 48000)"),
    (["--backend-option", "sample_rate=fast"], "sample_rate='fast' is not an integer in 4000..384000"),
    (["--backend-option", "sample_rate=1"], "sample_rate must be an integer in 4000..384000"),
    (["--window-seconds", "0"], "window_seconds"),
])
def test_bad_backend_options_exit_2_naming_the_valid_ones(tmp_path, argv, message):
    src, out = tmp_path / "scenes", tmp_path / "out"
    good_scenes(src, 1)
    r = run_cli("enhance", src, "-o", out, *FAST, *argv)
    assert r.returncode == 2, r.stdout + r.stderr
    assert message in " ".join(r.stderr.split()), r.stderr
    assert "Traceback" not in r.stderr and not out.exists()


def test_backend_options_reach_the_backend_and_the_summary(tmp_path):
    src, out = tmp_path / "scenes", tmp_path / "out"
    scene = good_scenes(src, 1)[0]
    r = run_cli("enhance", src, "-o", out, *FAST, "--backend-option", "sample_rate=16000",
                "--window-seconds", "2")
    assert r.returncode == 0, r.stdout + r.stderr
    summary = json.loads((out / "summary.json").read_text())
    assert summary["options"]["backend_options"] == {"window_seconds": 2.0,
                                                     "overlap_seconds": 1.0, "sample_rate": 16000}
    # The identity at 16 kHz, written back at the input's rate: band-limited, same length.
    assert sf.info(str(out / scene.name)).frames == sf.info(str(scene)).frames


@pytest.mark.slow
def test_deepfilternet_options_from_the_command_line(tmp_path):
    src, out = tmp_path / "scenes", tmp_path / "out"
    good_scenes(src, 1)
    r = run_cli("enhance", src, "-o", out, "--backend", "deepfilternet", "--device", "cpu",
                "--workers", "1", "--backend-option", "atten_lim_db=12",
                "--backend-option", "post_filter_beta=0.02")
    assert r.returncode == 0, r.stdout + r.stderr
    given = json.loads((out / "summary.json").read_text())["options"]["backend_options"]
    assert (given["atten_lim_db"], given["post_filter_beta"]) == (12.0, 0.02)
    r = run_cli("enhance", src, "-o", out, "--backend", "deepfilternet", "--device", "cpu",
                "--backend-option", "post_filter_beta=9")
    assert r.returncode == 2 and "post_filter_beta" in r.stderr and "Traceback" not in r.stderr


def test_models_lists_each_backends_options():
    r = run_cli("models", timeout=120)
    assert r.returncode == 0, r.stderr
    blocks = dict(re.findall(r"^(\w+): [^\n]*\n((?:  [^\n]*\n)*)", r.stdout, re.M))
    assert "options (enhance --backend-option KEY=VALUE):" in blocks["deepfilternet"]
    assert re.search(r"^    atten_lim_db=a number >= 0 \(default [\d.]+\): ", blocks["deepfilternet"], re.M)
    assert "post_filter_beta=a number in 0.." in blocks["deepfilternet"]
    assert "prefetch_state=true or false" in blocks["deepfilternet"]
    assert "not part of the resume record" in blocks["deepfilternet"]
    assert "window_seconds=" in blocks["mossformer2"] and "sample_rate=" in blocks["passthrough"]


def test_enhance_help_documents_lock_records_dry_run_options_and_hosted_spellings():
    r = run_cli("enhance", "--help", timeout=60)
    assert r.returncode == 0
    text = " ".join(r.stdout.split())
    for promise in ("One run at a time per OUT_DIR", "refused (exit 2) naming the first",
                    "skips an output only when it was made with the same settings",
                    "redoes the others and says how many", "no record", "--overwrite redoes",
                    "whisperjav:<backend>[:<model>]", "exit 2 naming the valid ones",
                    "Starts no worker and writes nothing", "never fetch missing weights",
                    "start-up included", "audio_seconds_per_second", "--backend-option KEY=VALUE",
                    "the same as --backend-option window_seconds=S"):
        assert promise in text, promise


# -- --dry-run ----------------------------------------------------------------------------------------
def test_dry_run_reports_the_plan_and_writes_nothing(tmp_path):
    src, out = tmp_path / "scenes", tmp_path / "out"
    scenes = good_scenes(src, 4)
    first = run_cli("enhance", scenes[0], scenes[1], "-o", out, *FAST)   # two done before
    assert first.returncode == 0, first.stdout + first.stderr
    (src / "zz_bad.wav").write_text("not audio")
    before = {p.name: p.read_bytes() for p in out.iterdir() if p.is_file()}

    r = run_cli("enhance", src, "-o", out, *FAST, "--output-sample-rate", "16000",
                "--dry-run")
    assert r.returncode == 0, r.stdout + r.stderr
    text = " ".join(r.stdout.split())
    assert "nothing was started or written" in text
    assert "5 found: 4 to enhance (2 redone for changed settings), 0 already done" in text
    assert "1 rejected" in text and re.search(r"zz_bad\.wav: unreadable", r.stdout)
    assert "2 existing output(s) will be redone: made with other settings (output_sample_rate)" in text
    assert "1 worker(s) would start" in text and "estimate" in text
    assert {p.name: p.read_bytes() for p in out.iterdir() if p.is_file()} == before

    plan_path = tmp_path / "plan.json"
    r = run_cli("enhance", src, "-o", out, *FAST, "--dry-run", "--summary-json", plan_path)
    assert r.returncode == 0, r.stdout + r.stderr
    plan = json.loads(plan_path.read_text())
    assert plan["dry_run"] is True and plan["backend"] == "passthrough"
    actions = {Path(s["input"]).name: s["action"] for s in plan["scenes"]}
    assert actions == {scenes[0].name: "skip", scenes[1].name: "skip", scenes[2].name: "run",
                       scenes[3].name: "run", "zz_bad.wav": "reject"}
    assert (plan["scenes_to_run"], plan["scenes_skipped"], plan["scenes_rejected"]) == (2, 2, 1)
    assert {p.name: p.read_bytes() for p in out.iterdir() if p.is_file()} == before


def test_dry_run_on_a_new_out_dir_creates_nothing_and_says_what_auto_would_pick(tmp_path):
    src, out = tmp_path / "scenes", tmp_path / "new" / "out"
    good_scenes(src, 2)
    r = run_cli("enhance", src, "-o", out, "--device", "cpu", "--dry-run",
                env=empty_caches_env(tmp_path), cwd=tmp_path)
    assert r.returncode == 0, r.stdout + r.stderr
    text = " ".join(r.stdout.split())
    assert "auto picked deepfilternet" in text and "(bundled)" in text
    assert "2 found: 2 to enhance" in text
    assert not (tmp_path / "new").exists()


@pytest.mark.parametrize("case", ["missing-weights", "bad-rate", "summary-is-input", "no-inputs"])
def test_dry_run_exits_2_where_a_run_would_refuse(tmp_path, case):
    src, out = tmp_path / "scenes", tmp_path / "out"
    scenes = good_scenes(src, 1)
    extra = {"missing-weights": ["--backend", "mossformer2", "--no-download"],
             "bad-rate": [*FAST, "--output-sample-rate", "1"],
             "summary-is-input": [*FAST, "--summary-json", scenes[0]],
             "no-inputs": [*FAST]}[case]
    inputs = [tmp_path / "nothing"] if case == "no-inputs" else [src]
    if case == "no-inputs":
        inputs[0].mkdir()
    r = run_cli("enhance", *inputs, "-o", out, *extra, "--dry-run",
                env=empty_caches_env(tmp_path), cwd=tmp_path)
    assert r.returncode == 2, r.stdout + r.stderr
    assert "Traceback" not in r.stderr and not out.exists()


def test_dry_run_plan_goes_to_the_path_checked_with_a_tilde_expanded(tmp_path):
    """--summary-json '~/plan.json' (quoted: the shell left the ~) is checked and written as
    $HOME/plan.json; no folder named ~ appears where the command ran."""
    src, out, home, cwd = (tmp_path / n for n in ("scenes", "out", "home", "cwd"))
    good_scenes(src, 1)
    home.mkdir()
    cwd.mkdir()
    r = run_cli("enhance", src, "-o", out, *FAST, "--dry-run", "--summary-json", "~/plan.json",
                env=dict(os.environ, HOME=str(home)), cwd=cwd)
    assert r.returncode == 0, r.stdout + r.stderr
    assert json.loads((home / "plan.json").read_text())["dry_run"] is True
    assert f"written to {home / 'plan.json'}" in " ".join(r.stdout.split())
    assert list(cwd.iterdir()) == [] and not out.exists()


def test_dry_run_plan_inside_out_dir_only_when_out_dir_exists(tmp_path):
    src, out = tmp_path / "scenes", tmp_path / "out"
    good_scenes(src, 1)
    r = run_cli("enhance", src, "-o", out, *FAST, "--dry-run", "--summary-json",
                out / "plans" / "plan.json", cwd=tmp_path)
    assert r.returncode == 2, r.stdout + r.stderr
    assert "does not exist yet, and a dry run creates nothing" in " ".join(r.stderr.split())
    assert not out.exists() and "Traceback" not in r.stderr
    out.mkdir()
    r = run_cli("enhance", src, "-o", out, *FAST, "--dry-run", "--summary-json",
                out / "plans" / "plan.json", cwd=tmp_path)
    assert r.returncode == 0, r.stdout + r.stderr
    assert json.loads((out / "plans" / "plan.json").read_text())["dry_run"] is True
    assert sorted(p.name for p in out.rglob("*")) == ["plan.json", "plans"]


def test_unknown_options_are_still_refused_with_exit_2(tmp_path):
    r = run_cli("enhance", tmp_path, "-o", tmp_path / "out", "--no-such-option", timeout=60)
    assert r.returncode == 2 and "unrecognized arguments: --no-such-option" in r.stderr


def test_dry_run_on_a_busy_out_dir_exits_2_naming_the_run(tmp_path):
    src, out = tmp_path / "scenes", tmp_path / "out"
    good_scenes(src, 6)
    bg = Background(["enhance", src, "-o", out, *FAST, "--max-scenes-per-worker", "1"], tmp_path)
    try:
        bg.wait_for(lambda: read_manifest(out / "manifest.jsonl"), RUN_TIMEOUT_S,
                    "the first finished scene")
        bg.pause()
        r = run_cli("enhance", src, "-o", out, *FAST, "--dry-run")
        assert r.returncode == 2, r.stdout + r.stderr
        assert "in use by another run" in r.stderr and f"pid {bg.proc.pid}" in r.stderr
        bg.resume()
        assert bg.finish() == 0, bg.text()
    finally:
        bg.close()
