"""Shared fixtures: small WAV scenes written to tmp folders, and a guard that no test leaves a
child process behind."""

from __future__ import annotations

import multiprocessing
import os
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf


def write_tone(path: Path, seconds: float, rate: int = 48_000, channels: int = 1,
               subtype: str = "PCM_16", seed: int = 0, freq_hz: float = 440.0) -> np.ndarray:
    """A tone plus a little noise, written to ``path``; returns what was written (float32)."""
    rng = np.random.default_rng(seed)
    n = max(1, int(round(seconds * rate)))
    t = np.arange(n) / rate
    x = 0.3 * np.sin(2 * np.pi * freq_hz * t) + 0.02 * rng.standard_normal(n)
    x = x.astype(np.float32)
    data = np.stack([x] * channels, axis=1) if channels > 1 else x
    path.parent.mkdir(parents=True, exist_ok=True)
    sf.write(str(path), data, rate, subtype=subtype)
    return x


@pytest.fixture
def tone(tmp_path):
    def make(name: str, seconds: float, **kw) -> Path:
        p = tmp_path / name
        write_tone(p, seconds, **kw)
        return p
    return make


def _children_of(pid: int) -> list[int]:
    out = []
    proc = Path("/proc")
    if not proc.exists():
        return out
    for d in proc.iterdir():
        if not d.name.isdigit():
            continue
        try:
            stat = (d / "stat").read_text()
        except OSError:
            continue
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        if ppid == pid:
            out.append(int(d.name))
    return out


@pytest.fixture(autouse=True)
def no_leftover_children():
    """Fail a test that leaves a child process of this one running (zombies excepted)."""
    yield
    import time

    deadline = time.monotonic() + 10.0
    while True:
        alive = []
        for c in _children_of(os.getpid()):
            try:
                state = Path(f"/proc/{c}/stat").read_text().rsplit(")", 1)[1].split()[0]
            except OSError:
                continue
            # The (multi)processing resource tracker is one long-lived helper per test session.
            cmd = Path(f"/proc/{c}/cmdline").read_bytes() if Path(f"/proc/{c}/cmdline").exists() else b""
            if state != "Z" and b"resource_tracker" not in cmd:
                alive.append(c)
        if not alive or time.monotonic() > deadline:
            break
        time.sleep(0.1)
    for p in multiprocessing.active_children():
        p.join(0.1)
    assert not alive, f"test left child processes running: {alive}"


# A real Ray cluster, started once per session for the tests that ask for it (tests/_ray_cluster.py).
from _ray_cluster import ray_auth_env, ray_cluster  # noqa: E402,F401
