"""A real Ray cluster for the tests that run on Ray (started once per session with
``ray start --head``: its own temp dir, a random port, a token of its own) and the /proc helpers
that find and end exactly its processes.

Started that way its daemons are not children of the test process, so the conftest guard against
leftover children applies unchanged; teardown ends exactly the processes of that cluster (found by
its temp dir) and waits for them. Ray workers import the tests' fault-injecting backend, so the
cluster's processes get the tests folder on their path.
"""

from __future__ import annotations

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

import pytest

RAY_START_TIMEOUT_S = 180     # `ray start --head` on a loaded 2-core machine
RAY_STOP_TIMEOUT_S = 30       # the cluster's processes must be gone within this after teardown
TESTS = Path(__file__).parent


# -- processes of one Ray cluster, found by its temp dir ----------------------------------------------
def processes() -> dict[int, tuple[int, str, bytes]]:
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


def cluster_processes(temp_dir: Path) -> list[int]:
    """Live processes started for the cluster under ``temp_dir``: those naming it on their command
    line (gcs_server, raylet, monitors) and everything below them (agents, workers, actors)."""
    procs = processes()
    key = str(temp_dir).encode()
    tree = {p for p, (_, _, cmd) in procs.items() if key in cmd and p != os.getpid()}
    grew = True
    while grew:
        below = {p for p, (ppid, _, _) in procs.items() if ppid in tree} - tree
        tree |= below
        grew = bool(below)
    return sorted(p for p in tree if procs[p][1] != "Z")


def stop_cluster(temp_dir: Path) -> list[int]:
    """End this cluster's processes (by pid: TERM, then KILL); returns any still alive."""
    deadline = time.monotonic() + RAY_STOP_TIMEOUT_S
    sig = signal.SIGTERM
    while True:
        alive = cluster_processes(temp_dir)
        if not alive or time.monotonic() > deadline:
            return alive
        for pid in alive:
            try:
                os.kill(pid, sig)
            except ProcessLookupError:
                pass
        time.sleep(2.0 if sig == signal.SIGTERM else 0.2)
        sig = signal.SIGKILL  # gcs_server and raylet can linger after TERM: they are test daemons


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("", 0))
        return s.getsockname()[1]


def _ray_env(token: str, **extra) -> dict:
    # A token of our own: nothing is written to ~/.ray, and joining by address needs it.
    return {"RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": token, "RAY_USAGE_STATS_ENABLED": "0",
            **extra}


@pytest.fixture(scope="session")
def ray_auth_env():
    """This module's Ray settings, in place before anything here imports ray: ray reads its
    authentication mode once per process, and joining a token cluster by address needs them."""
    with pytest.MonkeyPatch.context() as mp:
        for key, value in _ray_env(secrets.token_hex(32)).items():
            mp.setenv(key, value)
        mp.delenv("RAY_ADDRESS", raising=False)
        yield


@pytest.fixture(scope="session")
def ray_cluster(ray_auth_env):
    # Short and unique: Ray's unix sockets live under it (paths must stay under 108 bytes).
    temp_dir = Path(tempfile.mkdtemp(prefix="wje-ray-", dir="/tmp"))
    ray_cli = Path(sys.executable).parent / "ray"
    try:
        done = subprocess.run(
            [str(ray_cli), "start", "--head", f"--port={free_port()}", "--num-cpus=2",
             "--num-gpus=0", "--include-dashboard=false", "--disable-usage-stats",
             f"--temp-dir={temp_dir}", "--object-store-memory=100000000"],
            capture_output=True, text=True, timeout=RAY_START_TIMEOUT_S,
            env={**os.environ, "PYTHONPATH": os.pathsep.join(
                [str(TESTS)] + [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p])})
        found = re.search(r"--address='([^']+)'", done.stdout + done.stderr)
        assert done.returncode == 0 and found, f"ray start failed:\n{done.stdout}\n{done.stderr}"
        yield found.group(1)
    finally:
        import ray

        if ray.is_initialized():
            ray.shutdown()
        left = stop_cluster(temp_dir)
        shutil.rmtree(temp_dir, ignore_errors=True)
        assert not left, f"Ray processes still running after teardown: {left}"
