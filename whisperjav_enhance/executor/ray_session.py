"""Joining or starting Ray for a run, and what devices mean on a cluster: the Ray executor's
connection (ray.py holds the actors and the transport).

``address=None`` starts a private local Ray instance (no dashboard, worker output not forwarded)
and shuts it down when the run ends, on errors and Ctrl-C too. An address joins that cluster and
leaves it running. If this process is already connected to Ray, that connection is used as is.
"""

from __future__ import annotations

import importlib
import logging
import os
import re
import socket

from ..backends.base import install_hint
from ..devices import DeviceSlot
from ..errors import BackendUnavailable, ConfigError, DeviceError, first_line
from .interrupts import deferred_interrupts

LOCAL_OBJECT_STORE_BYTES = 256 * 1024 * 1024  # local instance only: small messages cross Ray, never
                                              # audio, so the object store is kept small
NAMESPACE = "whisperjav-enhance"  # Ray namespace of the run's actors
JOIN_PROBE_TIMEOUT_S = 10.0      # a host:port address must accept a TCP connection within this;
                                 # ray.init itself retries an unreachable address for minutes


# -- the Ray connection -------------------------------------------------------------------------------
def import_ray():
    """The ray module, or a BackendUnavailable that says how to install it."""
    try:
        return importlib.import_module("ray")
    except ImportError as exc:
        raise BackendUnavailable(f"--executor ray needs the ray package ({exc}); install it with "
                                 f"{install_hint('ray')}, or use --executor pool") from exc


class RaySession:
    """Starts a private local Ray instance or joins a cluster, and undoes only what it did."""

    def __init__(self, ray, address: str | None):
        self.ray = ray
        # RAY_ADDRESS is honoured as ray.init itself does: it joins that cluster.
        self.address = address or os.environ.get("RAY_ADDRESS") or None
        # True when open() starts a private instance on this machine (so its devices are this
        # machine's); False when it joins a cluster or uses the caller's connection.
        self.local = not self.address and not ray.is_initialized()
        self.owned = False              # True when close() must disconnect (and, locally, stop)

    @property
    def where(self) -> str:
        return f"the Ray cluster at {self.address}" if self.address else "the local Ray instance"

    def open(self, gpu_visible: list[str] | None = None) -> None:
        """Connect; ``gpu_visible``: the GPUs a private local instance may use (None: CPU only)."""
        if self.ray.is_initialized():
            return  # the caller's own connection: used as is, left as is
        common = dict(namespace=NAMESPACE, log_to_driver=False, logging_level=logging.WARNING)
        if self.address:
            try:
                _probe(self.address)
                with deferred_interrupts():
                    self.ray.init(address=self.address, **common)
            except (ConnectionError, RuntimeError, ValueError, TimeoutError) as exc:
                raise ConfigError(f"cannot join the Ray cluster at {self.address}: {first_line(exc)}; "
                                  "check --ray-address (the head node's GCS address, e.g. "
                                  "10.0.0.5:6379, or 'auto' on a cluster node), and for a cluster "
                                  "with token authentication (Ray's default) set RAY_AUTH_MODE=token "
                                  "and its token (RAY_AUTH_TOKEN or ~/.ray/auth_token); or leave "
                                  "--ray-address out for a local instance") from exc
            self.owned = True
            return
        previous = os.environ.get("CUDA_VISIBLE_DEVICES")
        if gpu_visible is not None:  # the raylet inherits this: it sees the chosen GPUs only
            os.environ["CUDA_VISIBLE_DEVICES"] = ",".join(gpu_visible)
        try:
            self.owned = True
            with deferred_interrupts():
                self.ray.init(num_cpus=os.cpu_count() or 1,
                              num_gpus=len(gpu_visible) if gpu_visible else 0,
                              include_dashboard=False, object_store_memory=LOCAL_OBJECT_STORE_BYTES,
                              **common)
        except (ConnectionError, RuntimeError, ValueError, TimeoutError, OSError) as exc:
            raise ConfigError(f"could not start a local Ray instance: {first_line(exc)}; Ray's "
                              "logs are under its temp dir (RAY_TMPDIR, default /tmp/ray) in "
                              "session_latest/logs; or use --executor pool") from exc
        finally:
            if previous is None:
                os.environ.pop("CUDA_VISIBLE_DEVICES", None)
            else:
                os.environ["CUDA_VISIBLE_DEVICES"] = previous

    def resources(self) -> dict:
        return dict(self.ray.cluster_resources())

    def close(self) -> None:
        if self.owned:
            self.owned = False
            self.ray.shutdown()


def cluster_slots(device: str, resources: dict, where: str) -> list[DeviceSlot]:
    """The device slots ``device`` means on a Ray cluster whose ``ray.cluster_resources()`` are
    ``resources``: ``cpu`` the CPU; ``auto`` one slot per cluster GPU, or the CPU when there is
    none; ``cuda`` one slot per cluster GPU, a :class:`DeviceError` when there is none. GPU slots
    are numbered over the whole cluster and set no ``CUDA_VISIBLE_DEVICES``: Ray gives each actor
    its GPU. ``cuda:N`` names one GPU of one machine, which a driver cannot pick on a cluster: a
    DeviceError that says what to use instead. ``where`` names the cluster in messages."""
    spec = (device or "auto").strip().lower()
    m = re.fullmatch(r"(auto|cpu|cuda)(?::(\d+))?", spec)
    if not m or (m.group(1) != "cuda" and m.group(2) is not None):
        raise DeviceError(f"unknown device {spec!r}; use auto, cpu, cuda or cuda:N")
    cpu = DeviceSlot("cpu", "", "cpu")
    if spec == "cpu":
        return [cpu]
    gpus = int(resources.get("GPU", 0))  # a float in Ray's answer; fractions are not whole GPUs
    if m.group(2) is not None:
        raise DeviceError(f"device {spec!r} names one GPU of one machine, but on {where} Ray "
                          "gives each worker its GPU; use --device cuda (every GPU of the "
                          "cluster) or auto")
    if gpus < 1:
        if spec == "auto":
            return [cpu]
        raise DeviceError(f"device {spec!r} requested but {where} has no GPUs; start the Ray "
                          "nodes on GPU machines (`ray start ... --num-gpus N`) or use --device "
                          "cpu or auto")
    return [DeviceSlot(f"cuda:{i}", None, "cuda:0") for i in range(gpus)]


def _probe(address: str) -> None:
    """Fail fast (ConnectionError) when a ``host:port`` address accepts no connection; other forms
    (``auto``, ``ray://...``) are left to Ray."""
    m = re.fullmatch(r"\[?([^\[\]/]+?)\]?:(\d+)", address.strip())
    if not m:
        return
    try:
        with socket.create_connection((m.group(1), int(m.group(2))), timeout=JOIN_PROBE_TIMEOUT_S):
            pass
    except OSError as exc:
        raise ConnectionError(f"nothing answers at {address} ({exc.strerror or exc})") from exc


__all__ = ["RaySession", "cluster_slots", "import_ray"]
