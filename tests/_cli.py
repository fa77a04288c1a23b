"""Running the real command line in tests: a subprocess with a timeout (``run_cli``), a run in the
background in its own session that can be paused and always ends (``Background``), scene files,
and checks of what a run left behind.

Runs use the passthrough backend on the CPU (``FAST``), so they exercise everything around the
model (spawned workers, atomic outputs, manifest, summary, exit codes) without weights.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import soundfile as sf

from conftest import write_tone

CLI = [sys.executable, "-m", "whisperjav_enhance"]
RUN_TIMEOUT_S = 240        # one CLI run, generous for a loaded 2-core machine
POLL_S = 0.05
FAST = ["--backend", "passthrough", "--device", "cpu", "--workers", "1"]


def run_cli(*args, timeout=RUN_TIMEOUT_S, env=None, cwd=None) -> subprocess.CompletedProcess:
    return subprocess.run([*CLI, *map(str, args)], capture_output=True, text=True,
                          timeout=timeout, env=env, cwd=cwd)


def empty_caches_env(tmp_path: Path) -> dict:
    """The environment of a machine that has fetched no weights and cannot fetch any."""
    caches = tmp_path / "caches"
    env = dict(os.environ, HF_HOME=str(caches / "hf"), HF_HUB_CACHE=str(caches / "hf" / "hub"),
               MODELSCOPE_CACHE=str(caches / "ms"), HF_HUB_OFFLINE="1")
    for var in ("WHISPERJAV_ENHANCE_MOSSFORMER2_WEIGHTS", "WHISPERJAV_ENHANCE_ZIPENHANCER_WEIGHTS"):
        env.pop(var, None)
    return env


def env_with(**extra) -> dict:
    env = dict(os.environ)
    env.update({k: str(v) for k, v in extra.items()})
    return env


# -- process groups (a background run is started in its own session; every worker inherits it) ----
def group_members(pgid: int) -> list[int]:
    """Live (non-zombie) processes whose process group is ``pgid``."""
    members = []
    for d in Path("/proc").iterdir():
        if not d.name.isdigit():
            continue
        try:
            fields = (d / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[2]) == pgid and fields[0] != "Z":
            members.append(int(d.name))
    return members


def wait_group_gone(pgid: int, timeout_s: float) -> list[int]:
    deadline = time.monotonic() + timeout_s
    while True:
        alive = group_members(pgid)
        if not alive or time.monotonic() > deadline:
            return alive
        time.sleep(0.1)


def kill_group(pgid: int) -> None:
    try:
        os.killpg(pgid, signal.SIGCONT)   # a paused run must be able to die
        os.killpg(pgid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass


class Background:
    """A CLI run in its own session, output to files, always cleaned up (group killed)."""

    def __init__(self, args, tmp: Path, name: str = "bg", env=None):
        self.out = open(tmp / f"{name}.stdout", "w+")
        self.err = open(tmp / f"{name}.stderr", "w+")
        self.proc = subprocess.Popen([*CLI, *map(str, args)], stdout=self.out, stderr=self.err,
                                     start_new_session=True, env=env)
        self.pgid = self.proc.pid

    def wait_for(self, predicate, timeout_s: float, what: str) -> None:
        deadline = time.monotonic() + timeout_s
        while not predicate():
            if self.proc.poll() is not None:
                raise AssertionError(f"the run ended (rc {self.proc.returncode}) before {what}:\n"
                                     + self.text())
            if time.monotonic() > deadline:
                raise AssertionError(f"timed out waiting for {what}:\n" + self.text())
            time.sleep(POLL_S)

    def pause(self) -> None:
        """Stop the parent only (SIGSTOP): its workers finish what they hold and wait for it."""
        os.kill(self.proc.pid, signal.SIGSTOP)

    def resume(self) -> None:
        os.kill(self.proc.pid, signal.SIGCONT)

    def finish(self, timeout_s: float = RUN_TIMEOUT_S) -> int:
        return self.proc.wait(timeout=timeout_s)

    def text(self) -> str:
        self.out.flush()
        self.err.flush()
        return Path(self.out.name).read_text() + Path(self.err.name).read_text()

    def close(self) -> None:
        kill_group(self.pgid)
        try:
            self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            pass
        self.out.close()
        self.err.close()


# -- scenes and outputs ------------------------------------------------------------------------
def good_scenes(folder: Path, n: int, seconds: float = 0.3) -> list[Path]:
    paths = []
    for i in range(1, n + 1):
        p = folder / f"movie_scene_{i:04d}.wav"
        write_tone(p, seconds, rate=48_000, seed=i, freq_hz=200.0 + 20 * i)
        paths.append(p)
    return paths


def assert_whole_copy(src: Path, out: Path) -> None:
    """Passthrough output: same rate and length as the input, samples equal within PCM_16 steps."""
    a, ra = sf.read(str(src), dtype="float32")
    b, rb = sf.read(str(out), dtype="float32")
    assert rb == ra and b.shape == a.shape, (src, out)
    assert np.max(np.abs(a - b)) < 2e-3, (src, out)
    assert sf.info(str(out)).subtype == "PCM_16"


def partials(folder: Path) -> list[Path]:
    return [p for p in folder.rglob("*") if p.name.endswith(".partial")]


def last_run_lines(out: Path) -> list[dict]:
    """The manifest lines the newest run in OUT_DIR wrote (each one checked whole)."""
    lines = manifest_lines_whole(out / "manifest.jsonl")
    return [line for line in lines if line["run"] == lines[-1]["run"]]


def manifest_lines_whole(path: Path) -> list[dict]:
    """The manifest's lines, asserting that it ends with a whole line."""
    import json

    raw = path.read_bytes()
    assert not raw or raw.endswith(b"\n"), "the manifest ends in part of a line"
    return [json.loads(line) for line in raw.decode("utf-8").splitlines()]


__all__ = ["CLI", "RUN_TIMEOUT_S", "POLL_S", "FAST", "run_cli", "env_with", "group_members",
           "wait_group_gone", "kill_group", "Background", "good_scenes", "assert_whole_copy",
           "partials", "manifest_lines_whole"]
