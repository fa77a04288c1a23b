"""Weights on first use (whisperjav_enhance.hub) with the real hub clients, huggingface_hub and
modelscope, against a local server on 127.0.0.1 that serves random-initialised checkpoints in
the real repositories' layouts (tests/_hub_server.py): a first run fetches and then enhances, a
dropped connection or a killed download leaves nothing that a later run takes for weights (and
the later run completes), wrong keys are refused after the download, two runs download once,
and --no-download / HF_HUB_OFFLINE keep the clear missing-weights error.

The clients read their endpoint when first imported, so downloads run in a fresh process
(tests/_hub_child.py) with the environment each test sets.
"""

from __future__ import annotations

import json
import os
import shlex
import shutil
import subprocess
import sys
import sysconfig
import threading
from pathlib import Path

import pytest
import torch

from conftest import write_tone
from _hub_server import FakeHub
from whisperjav_enhance import hub, weights
from whisperjav_enhance.errors import WeightsError

CHILD = [sys.executable, str(Path(__file__).with_name("_hub_child.py"))]
CHILD_TIMEOUT_S = 300     # one child: imports torch, downloads ~220 MB locally, loads the network
WAIT_S = 120              # longest any single wait in these tests may take
MF2 = weights.MOSSFORMER2
ZIP = weights.ZIPENHANCER
BIG = {"mossformer2": "last_best_checkpoint.pt", "zipenhancer": "pytorch_model.bin"}

pytestmark = pytest.mark.slow


# -- what the fake hub publishes --------------------------------------------------------------
@pytest.fixture(scope="module")
def published(tmp_path_factory) -> dict:
    """Random-initialised weights in each repository's real layout, and copies whose keys are
    wrong: {backend: {"good": {name: path}, "wrong": {name: path}}}."""
    from whisperjav_enhance.backends.mossformer2 import MossFormer2Backend
    from whisperjav_enhance.backends.zipenhancer import ZipEnhancerBackend

    root = tmp_path_factory.mktemp("published")
    mf2 = MossFormer2Backend.write_random_weights(root / "mf2").parent
    zipf = ZipEnhancerBackend.write_random_weights(root / "zip")
    wrong_mf2 = root / "mf2_wrong"
    wrong_mf2.mkdir()
    torch.save({"model": {"encoder.not_a_layer.weight": torch.zeros(4, 4)}},
               wrong_mf2 / "last_best_checkpoint.pt")
    shutil.copy(mf2 / "last_best_checkpoint", wrong_mf2 / "last_best_checkpoint")
    wrong_zip = root / "zip_wrong"
    wrong_zip.mkdir()
    torch.save({"generator": {"dense_encoder.bogus": torch.zeros(3)}},
               wrong_zip / "pytorch_model.bin")
    shutil.copy(zipf / "configuration.json", wrong_zip / "configuration.json")

    def files(folder, source):
        return {name: folder / name for name in source.files}

    return {"mossformer2": {"good": files(mf2, MF2), "wrong": files(wrong_mf2, MF2)},
            "zipenhancer": {"good": files(zipf, ZIP), "wrong": files(wrong_zip, ZIP)}}


@pytest.fixture
def fake_hub(published):
    with FakeHub() as server:
        for name, source in weights.SOURCES.items():
            server.serve(source.repo_id, published[name]["good"])
        yield server


@pytest.fixture
def caches(tmp_path, monkeypatch) -> Path:
    """Empty caches for this test and the child processes it starts; nothing else to find."""
    root = tmp_path / "caches"
    monkeypatch.setenv("HF_HOME", str(root / "hf"))
    monkeypatch.setenv("MODELSCOPE_CACHE", str(root / "ms"))
    monkeypatch.setenv("MODELSCOPE_HOME", str(root / "ms-home"))
    for var in ("HF_HUB_CACHE", "HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE", MF2.env_var, ZIP.env_var):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.chdir(tmp_path)   # clearvoice's checkpoints/ layout is looked for here
    return root


def _child_env(server: FakeHub) -> dict:
    env = dict(os.environ)
    env.update(HF_ENDPOINT=server.url, MODELSCOPE_ENDPOINT=server.url,
               HF_HUB_DISABLE_TELEMETRY="1",
               # one attempt per file: a dropped connection fails the run now instead of after
               # the client's back-off (the Hugging Face client resumes and meets the 503)
               MODELSCOPE_DOWNLOAD_MAX_RETRIES="0")
    return env


def _parse(stdout: str) -> tuple[list[dict], dict]:
    lines = [json.loads(line) for line in stdout.splitlines() if line.startswith("{")]
    events = [x for x in lines if "event" in x]
    results = [x for x in lines if "result" in x]
    assert len(results) == 1, stdout
    return events, results[0]


def run_child(server: FakeHub, *args, stderr: list | None = None) -> tuple[int, list[dict], dict]:
    """Run tests/_hub_child.py; its stderr is appended to ``stderr`` when given."""
    r = subprocess.run([*CHILD, *args], env=_child_env(server), capture_output=True, text=True,
                       timeout=CHILD_TIMEOUT_S)
    if stderr is not None:
        stderr.append(r.stderr)
    events, result = _parse(r.stdout)
    return r.returncode, events, result


class _Background:
    """A child in the background whose output lines are collected as they come."""

    def __init__(self, server: FakeHub, *args):
        self.proc = subprocess.Popen([*CHILD, *args], env=_child_env(server),
                                     stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
        self.lines: list[str] = []
        self.changed = threading.Condition()
        self.reader = threading.Thread(target=self._read, daemon=True)
        self.reader.start()

    def _read(self):
        for line in self.proc.stdout:
            with self.changed:
                self.lines.append(line)
                self.changed.notify_all()

    def wait_for(self, text: str) -> bool:
        with self.changed:
            return self.changed.wait_for(lambda: any(text in ln for ln in self.lines), WAIT_S)

    def finish(self) -> tuple[int, list[dict], dict]:
        rc = self.proc.wait(CHILD_TIMEOUT_S)
        self.reader.join(WAIT_S)
        events, result = _parse("".join(self.lines))
        return rc, events, result

    def kill(self):
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait(WAIT_S)
        self.reader.join(WAIT_S)


def _resolve(name: str):
    from whisperjav_enhance.backends import backend_class

    return backend_class(name).resolve(None)


def _files_named(root: Path, name: str) -> list[Path]:
    return [p for p in root.rglob("*") if p.name == name]


# -- first use --------------------------------------------------------------------------------
def test_first_run_fetches_mossformer2_and_enhances(fake_hub, caches, tmp_path):
    rc, events, result = run_child(fake_hub, "ensure", "mossformer2")
    assert rc == 0, result
    kinds = [e["event"] for e in events]
    assert kinds[0] == "DownloadStarted" and kinds[-1] == "DownloadFinished"
    assert events[0]["files"] == list(MF2.files) and events[0]["repo_id"] == MF2.repo_id
    done = [e for e in events if e["event"] == "DownloadProgress" and e["filename"] == BIG[
        "mossformer2"]]
    assert done[-1]["bytes_done"] == done[-1]["bytes_total"] > 200_000_000
    assert events[-1]["ok"] is True and events[-1]["path"].startswith(str(caches / "hf" / "hub"))
    for name in MF2.files:                      # each file fetched once, checkpoint first
        assert fake_hub.gets(name) == 1
    order = [p for m, p, _ in fake_hub.requests if m == "GET" and "/resolve/" in p]
    assert order[0].endswith("/last_best_checkpoint.pt")

    backend = _resolve("mossformer2")           # the standard search finds it now
    assert backend.weights.origin == "hf-cache" and backend.weights.random_test_weights
    seen = []
    hub.ensure_weights("mossformer2", None, seen.append)   # present: nothing happens
    assert seen == [] and fake_hub.gets(BIG["mossformer2"]) == 1

    from whisperjav_enhance import EnhanceOptions, PoolPolicy
    from whisperjav_enhance.pipeline import enhance_scenes

    scene = tmp_path / "scenes" / "a_scene_0000.wav"
    write_tone(scene, 0.3)
    summary = enhance_scenes([str(scene.parent)], str(tmp_path / "out"),
                             EnhanceOptions(backend="mossformer2", device="cpu"),
                             PoolPolicy(workers_per_device=1))
    assert summary.scenes_enhanced == 1 and summary.scenes_failed == 0
    assert (tmp_path / "out" / scene.name).is_file()
    assert summary.weights["random_test_weights"] is True


def test_first_run_fetches_zipenhancer_from_modelscope(fake_hub, caches):
    rc, events, result = run_child(fake_hub, "ensure", "zipenhancer")
    assert rc == 0, result
    assert events[-1]["event"] == "DownloadFinished" and events[-1]["ok"]
    folder = Path(events[-1]["path"])
    assert folder.is_relative_to(caches / "ms")
    assert sorted(p.name for p in folder.iterdir()) == sorted(ZIP.files)
    listing = [p for m, p, _ in fake_hub.requests if p.endswith("/repo/files?Revision=master&"
                                                                  "Recursive=True")]
    assert listing, fake_hub.requests
    backend = _resolve("zipenhancer")
    assert backend.weights.origin == "modelscope-cache" and backend.weights.random_test_weights


# -- interrupted downloads --------------------------------------------------------------------
@pytest.mark.parametrize("name", ["mossformer2", "zipenhancer"])
def test_dropped_connection_leaves_nothing_and_a_later_run_completes(fake_hub, caches, name,
                                                                    published):
    big = BIG[name]
    fake_hub.drop_after[big] = published[name]["good"][big].stat().st_size // 2
    stderr = []
    rc, events, result = run_child(fake_hub, "ensure", name, stderr=stderr)
    assert rc == 3 and result["type"] == "WeightsError", result
    assert "could not download" in result["message"] and "run again" in result["message"]
    # the clients' own retry warnings and bars went to the debug log, not the terminal
    assert stderr == [""], stderr
    assert events[-1]["event"] == "DownloadFinished" and events[-1]["ok"] is False

    with pytest.raises(weights.WeightsNotFound):     # nothing there looks like weights
        _resolve(name)
    assert _files_named(caches, big) == []           # only *.incomplete, if anything

    fake_hub.heal()
    rc, events, result = run_child(fake_hub, "ensure", name)
    assert rc == 0, result
    assert _resolve(name).weights.random_test_weights
    if name == "zipenhancer":   # ModelScope kept the partial file and resumed from it
        ranges = [r for m, p, r in fake_hub.requests if m == "GET" and p.endswith(big) and r]
        assert len(ranges) == 1 and int(ranges[0][len("bytes="):-1]) > 0, fake_hub.requests


def test_killed_download_leaves_nothing_and_a_later_run_completes(fake_hub, caches):
    big = BIG["mossformer2"]
    fake_hub.pause(big)
    child = _Background(fake_hub, "ensure", "mossformer2")
    try:
        assert fake_hub.paused.wait(WAIT_S), "the download never started"
    finally:
        child.kill()
        fake_hub.resume()
    with pytest.raises(weights.WeightsNotFound):
        _resolve("mossformer2")
    assert _files_named(caches, big) == [] and _files_named(caches, "last_best_checkpoint") == []
    rc, _, result = run_child(fake_hub, "ensure", "mossformer2")   # the lock died with it
    assert rc == 0, result
    assert _resolve("mossformer2").weights.origin == "hf-cache"


# -- what arrives is checked ------------------------------------------------------------------
@pytest.mark.parametrize("name", ["mossformer2", "zipenhancer"])
def test_wrong_keys_are_refused_after_the_download(fake_hub, caches, published, name):
    fake_hub.serve(weights.SOURCES[name].repo_id, published[name]["wrong"])
    rc, events, result = run_child(fake_hub, "ensure", name)
    assert rc == 3 and result["type"] == "WeightsError", result
    message = result["message"]
    assert "but the backend refuses it" in message and BIG[name] in message
    assert "does not match" in message and "missing" in message.lower()
    assert events[-1]["event"] == "DownloadFinished" and events[-1]["ok"] is False


# -- one download at a time -------------------------------------------------------------------
def test_two_runs_download_once_and_the_second_waits(fake_hub, caches):
    big = BIG["mossformer2"]
    fake_hub.pause(big)
    first = _Background(fake_hub, "ensure", "mossformer2")
    second = None
    try:
        assert fake_hub.paused.wait(WAIT_S), "the first download never started"
        second = _Background(fake_hub, "ensure", "mossformer2")
        assert second.wait_for("waiting for"), second.lines
        fake_hub.resume()
        rc1, events1, result1 = first.finish()
        rc2, events2, result2 = second.finish()
    finally:
        fake_hub.resume()
        for child in (first, second):
            if child is not None:
                child.kill()
    assert rc1 == 0 and rc2 == 0, (result1, result2)
    waiting = [e for e in events2 if e["event"] == "Log" and "waiting for" in e["message"]]
    assert f"pid {events1[0]['pid']}" in waiting[0]["message"]
    assert not any(e["event"] == "DownloadStarted" for e in events2)
    for name in MF2.files:
        assert fake_hub.gets(name) == 1 and fake_hub.heads(name) == 1


# -- not allowed to download ------------------------------------------------------------------
def test_no_download_and_offline_keep_the_clear_missing_weights_error(caches, monkeypatch):
    for name in ("mossformer2", "zipenhancer"):
        with pytest.raises(WeightsError) as info:
            hub.ensure_weights(name, None, None, allow_download=False)
        text = str(info.value)
        assert "download was not attempted" in text and "--no-download" in text
        assert f"models --download {name}" in text and "Searched:" in text
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(WeightsError) as info:
        hub.ensure_weights("mossformer2")
    assert "HF_HUB_OFFLINE=1 is set" in str(info.value)
    assert str(caches / "hf" / "hub") in str(info.value)     # where it looked
    assert not caches.exists()                    # no lock taken, nothing created


def test_what_never_downloads(caches, tmp_path, monkeypatch):
    bad = tmp_path / "nowhere"
    with pytest.raises(WeightsError) as info:    # the user named a file: never another one
        hub.ensure_weights("mossformer2", str(bad))
    assert "--weights" in str(info.value) and "not attempted" not in str(info.value)
    monkeypatch.setenv(ZIP.env_var, str(bad))
    with pytest.raises(WeightsError) as info:
        hub.ensure_weights("zipenhancer")
    assert ZIP.env_var in str(info.value)
    hub.ensure_weights("auto")                    # auto picks from what is present
    hub.ensure_weights("passthrough")
    hub.ensure_weights("deepfilternet")           # bundled
    assert not caches.exists()


def test_models_download_command_goes_through_the_hub(fake_hub, caches):
    cli = [sys.executable, "-m", "whisperjav_enhance"]
    r = subprocess.run([*cli, "models", "--download", "zipenhancer"], env=_child_env(fake_hub),
                       capture_output=True, text=True, timeout=CHILD_TIMEOUT_S)
    assert r.returncode == 0, r.stderr
    assert "downloading zipenhancer weights from modelscope" in r.stderr
    assert "pytorch_model.bin: 8.0 MiB received" in r.stderr and "Traceback" not in r.stderr
    assert "%|" not in r.stderr                 # no bars of the client's own (tqdm)
    assert "zipenhancer: weights ready in" in r.stdout
    r = subprocess.run([*cli, "models", "--backend", "zipenhancer", "--json"],
                       env=_child_env(fake_hub), capture_output=True, text=True,
                       timeout=CHILD_TIMEOUT_S)
    report = json.loads(r.stdout)[0]
    assert r.returncode == 0 and report["usable"] and report["origin"] == "modelscope-cache"


# -- hints name commands that exist here ------------------------------------------------------
def _quoted_commands(text: str) -> list[list[str]]:
    return [shlex.split(part) for part in text.split("`")[1::2] if " " in part]


@pytest.mark.parametrize("name", ["mossformer2", "zipenhancer"])
def test_hints_name_commands_that_exist_here(name):
    text = weights.how_to_get(name)
    commands = _quoted_commands(text)
    assert commands, text
    for argv in commands:
        exe = shutil.which(argv[0])
        assert exe, f"{argv[0]} in {text!r} is not a command here"
    ours, theirs = commands[0], commands[1]
    assert ours[-3:] == ["models", "--download", name]
    assert theirs[1] == "download" and weights.SOURCES[name].repo_id in theirs
    r = subprocess.run([*theirs[:2], "--help"], capture_output=True, text=True, timeout=WAIT_S)
    assert r.returncode == 0, r.stderr          # the hub's tool really has `download`


def _clone_environment(tmp_path: Path) -> Path:
    """This virtual environment's interpreter and packages, but a bin folder of its own (none of
    the environment's console scripts): returns that folder."""
    venv = Path(sys.prefix)
    clone = tmp_path / "env"
    (clone / "bin").mkdir(parents=True)
    shutil.copy(venv / "pyvenv.cfg", clone / "pyvenv.cfg")
    (clone / "bin" / "python").symlink_to(Path(sys.executable))
    lib = Path(sysconfig.get_paths()["purelib"])
    (clone / lib.relative_to(venv)).parent.mkdir(parents=True)
    (clone / lib.relative_to(venv)).symlink_to(lib)
    return clone / "bin"


def _hint_there(bin_dir: Path) -> str:
    env = {"PATH": str(bin_dir), "HOME": os.environ.get("HOME", "/")}
    r = subprocess.run([str(bin_dir / "python"), "-c", "from whisperjav_enhance import weights; "
                        "print(weights.how_to_get('mossformer2'))"],
                       env=env, capture_output=True, text=True, timeout=WAIT_S)
    assert r.returncode == 0, r.stderr
    return r.stdout


@pytest.mark.skipif(sys.prefix == sys.base_prefix, reason="needs to run in a virtual environment")
def test_hint_falls_back_to_what_is_installed(tmp_path):
    """Without the `hf` tool anywhere: the Python one-liner, naming a `python` that has the
    package; with only the old `huggingface-cli`: that one."""
    bin_dir = _clone_environment(tmp_path)
    text = _hint_there(bin_dir)
    one_liner = ("`python -c \"from huggingface_hub import snapshot_download; "
                 "snapshot_download('alibabasglab/MossFormer2_SE_48K')\"`")
    assert one_liner in text, text
    assert "`python -m whisperjav_enhance models --download mossformer2`" in text
    r = subprocess.run(["python", "-c", "import huggingface_hub, whisperjav_enhance"],
                       env={"PATH": str(bin_dir)}, capture_output=True, timeout=WAIT_S)
    assert r.returncode == 0, r.stderr        # that `python` really has both

    old = bin_dir / "huggingface-cli"
    old.write_text("#!/bin/sh\nexit 0\n")
    old.chmod(0o755)
    assert "`huggingface-cli download alibabasglab/MossFormer2_SE_48K`" in _hint_there(bin_dir)


def test_sources_agree_with_the_backends():
    from whisperjav_enhance.backends import mossformer2, zipenhancer

    assert set(MF2.files) == {mossformer2.POINTER_FILE, mossformer2.CHECKPOINT_FILE}
    assert MF2.files[-1] == mossformer2.POINTER_FILE     # the pointer comes last
    assert set(ZIP.files) == {zipenhancer.CONFIG_FILE, zipenhancer.WEIGHTS_FILE}
    assert mossformer2.HF_REPO_ID == MF2.repo_id and zipenhancer.MODEL_ID == ZIP.repo_id
    assert mossformer2.ENV_VAR == MF2.env_var and zipenhancer.ENV_VAR == ZIP.env_var


# -- the command line, once the pipeline calls hub.ensure_weights -------------------------------
def test_enhance_command_fetches_on_first_use_and_no_download_refuses(fake_hub, caches,
                                                                       tmp_path):
    cli = [sys.executable, "-m", "whisperjav_enhance"]
    scene = tmp_path / "scenes" / "a_scene_0000.wav"
    write_tone(scene, 0.3)
    base = [*cli, "enhance", str(scene.parent), "--backend", "zipenhancer", "--device", "cpu",
            "--workers", "1"]
    r = subprocess.run([*base, "-o", str(tmp_path / "refused"), "--no-download"],
                       env=_child_env(fake_hub), capture_output=True, text=True,
                       timeout=CHILD_TIMEOUT_S)
    assert r.returncode == 2 and "download was not attempted" in r.stderr, r.stderr
    assert fake_hub.requests == [] and not (tmp_path / "refused").exists()

    r = subprocess.run([*base, "-o", str(tmp_path / "out")], env=_child_env(fake_hub),
                       capture_output=True, text=True, timeout=CHILD_TIMEOUT_S)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "downloading zipenhancer weights from modelscope" in r.stderr
    summary = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert summary["scenes_enhanced"] == 1
    assert summary["weights"]["origin"] == "modelscope-cache"
    assert summary["weights"]["random_test_weights"] is True
