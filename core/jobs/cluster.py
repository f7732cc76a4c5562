"""Connecting to Ray: a cluster by address, or the local instance this machine shares.

:func:`connect` makes this process a Ray client of

* ``$RECONBENCH_RAY_ADDRESS`` when set (``host:port`` of a running cluster's GCS; a team's
  GPU nodes), else
* the local instance of this cache root: started on first use as its own process tree
  (``ray start --head``), so it outlives the Streamlit server and the CLI process that started
  it, and every later process (another CLI call, a restarted server) joins the same one. Its
  address is recorded in ``<cache root>/ray/instance.json``; a record whose instance is gone is
  replaced by a fresh start.

The local instance is sized to the machine (all CPUs, no GPU unless CUDA is there, which Ray
detects itself) with a small object store (results travel as files on a shared disk, or as a
few MB of bytes otherwise). Its session folder lives in a short folder under the system temp
directory (``/tmp/rb-ray-<hash of the cache root>``), not under the cache root: Ray's Unix
sockets live there and a socket path may not exceed 107 bytes.

Every port of the local instance (GCS, raylet, object manager, workers, agents, client server)
listens on 127.0.0.1 only: it and every process joining it run in Ray's single-machine mode
(:func:`loopback_node`). A configured cluster listens where its administrator started it.

Every ReconBench job and the job manager live in the Ray namespace ``reconbench``.
"""
from __future__ import annotations

import hashlib
import json
import logging
import os
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

from core.errors import UserError

log = logging.getLogger(__name__)

ADDRESS_ENV = "RECONBENCH_RAY_ADDRESS"
SHARED_DISK_ENV = "RECONBENCH_RAY_SHARED_DISK"
LOOPBACK_ENV = "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"   # "0": Ray's single-machine mode (see loopback_node)
NAMESPACE = "reconbench"
REPO_ROOT = Path(__file__).resolve().parents[2]
OBJECT_STORE_BYTES = 256 * 2**20


class ClusterError(UserError):
    """Ray could not be reached or started; the message says which address and why."""


def _cache_root(root: Path | str | None) -> Path:
    from core.store.cache import cache_root

    return Path(root) if root is not None else cache_root()


def record_path(root: Path | str | None = None) -> Path:
    """Where the local instance of cache root ``root`` records its address."""
    return _cache_root(root) / "ray" / "instance.json"


def temp_dir(root: Path | str | None = None) -> Path:
    """The local instance's Ray session folder (short: Unix socket paths are limited)."""
    digest = hashlib.sha256(str(_cache_root(root).resolve()).encode()).hexdigest()[:10]
    return Path(tempfile.gettempdir()) / f"rb-ray-{digest}"


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _reachable(address: str, timeout: float = 1.0) -> bool:
    host, _, port = address.rpartition(":")
    try:
        with socket.create_connection((host, int(port)), timeout=timeout):
            return True
    except (OSError, ValueError):
        return False


def _ray_executable() -> str:
    candidate = Path(sys.executable).with_name("ray")
    return str(candidate) if candidate.exists() else "ray"


def worker_env(root: Path | str | None = None) -> dict[str, str]:
    """Environment a local instance's processes start with: the repository importable, the same
    cache root, one intra-op thread per task (Ray runs one task per CPU)."""
    env = dict(os.environ)
    env.pop(ADDRESS_ENV, None)
    paths = [str(REPO_ROOT)] + [p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p]
    env["PYTHONPATH"] = os.pathsep.join(dict.fromkeys(paths))
    env["RECONBENCH_CACHE"] = str(_cache_root(root))
    env.setdefault("OMP_NUM_THREADS", "1")
    env["RAY_USAGE_STATS_ENABLED"] = "0"
    env[LOOPBACK_ENV] = "0"
    return env


def start_local(root: Path | str | None = None, num_cpus: int | None = None) -> str:
    """Start a local Ray head for cache root ``root`` as its own process tree; returns its address.

    ``num_cpus`` defaults to this machine's CPU count. The instance keeps running after this
    process exits; :func:`stop_local` stops it.
    """
    port = _free_port()
    address = f"127.0.0.1:{port}"
    folder = temp_dir(root)
    folder.mkdir(parents=True, exist_ok=True)
    command = [_ray_executable(), "start", "--head", f"--port={port}", "--node-ip-address=127.0.0.1",
               f"--temp-dir={folder}", f"--num-cpus={num_cpus or os.cpu_count() or 1}",
               f"--object-store-memory={OBJECT_STORE_BYTES}", "--include-dashboard=false",
               f"--ray-client-server-port={_free_port()}",   # unused; not Ray's shared default 10001
               "--disable-usage-stats"]
    done = subprocess.run(command, env=worker_env(root), capture_output=True, text=True, start_new_session=True)
    if done.returncode != 0:
        raise ClusterError(f"could not start a local Ray instance: {done.stderr.strip().splitlines()[-1:]}")
    record = record_path(root)
    record.parent.mkdir(parents=True, exist_ok=True)
    staging = record.with_suffix(f".tmp-{os.getpid()}")
    staging.write_text(json.dumps({"address": address, "temp_dir": str(folder), "started": time.time()}))
    os.replace(staging, record)
    return address


def local_address(root: Path | str | None = None) -> str | None:
    """The recorded local instance's address when it still answers, else None."""
    try:
        address = json.loads(record_path(root).read_text())["address"]
    except (OSError, ValueError, KeyError, TypeError):
        return None
    return address if _reachable(address) else None


def stop_local(root: Path | str | None = None) -> None:
    """Stop the local instance of cache root ``root``: its processes are those whose command line
    names its session folder (``ray stop`` would stop every Ray instance of the machine)."""
    import psutil

    import ray

    if ray.is_initialized():
        ray.shutdown()
    folder = str(temp_dir(root))
    members = []
    for proc in psutil.process_iter(["cmdline"]):
        try:
            if folder in " ".join(proc.info["cmdline"] or []):
                members.append(proc)
        except psutil.Error:
            continue
    for proc in members:
        try:
            proc.kill()
        except psutil.Error:
            pass
    psutil.wait_procs(members, timeout=20)
    record_path(root).unlink(missing_ok=True)


def address(root: Path | str | None = None, start: bool = True) -> str:
    """The address to join: ``$RECONBENCH_RAY_ADDRESS``, else the local instance (started when
    ``start`` and none answers)."""
    configured = os.environ.get(ADDRESS_ENV)
    if configured:
        return configured
    found = local_address(root)
    if found is None:
        if not start:
            raise ClusterError("no local Ray instance is running (start one with `python -m core jobs start`)")
        lock_path = record_path(root).with_suffix(".lock")
        lock_path.parent.mkdir(parents=True, exist_ok=True)
        import fcntl

        with open(lock_path, "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)   # two processes starting at once start one instance
            found = local_address(root) or start_local(root)
    return found


_connect_lock = threading.Lock()


def connect(root: Path | str | None = None, start: bool = True) -> str:
    """Make this process a client of the cluster (:func:`address`); idempotent and thread-safe
    (the app server's sessions run in threads). Returns the address."""
    import ray

    if ray.is_initialized():
        return os.environ.get(ADDRESS_ENV) or local_address(root) or ""
    with _connect_lock:
        return _connect(root, start)


def loopback_node() -> None:
    """Make this process's Ray treat the machine as a single loopback node (before it joins the local
    instance, whose processes start so, :func:`worker_env`): Ray on Linux replaces a loopback
    ``--node-ip-address`` by the machine's network address (its multi-node mode), and then the GCS,
    the raylet, the workers, the client server and the agents listen on that interface too.
    ``RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0`` (Ray's single-machine mode; the name is Ray's) keeps
    every one of them on 127.0.0.1: set in the environment for the processes started from here, and
    on Ray's already imported constant for this one. A process joining that instance by address
    (``RECONBENCH_RAY_ADDRESS=127.0.0.1:port``) needs the variable set in its environment."""
    os.environ[LOOPBACK_ENV] = "0"
    try:
        from ray._private import ray_constants
    except ImportError:  # another Ray layout: the environment variable is what it reads at import
        return
    ray_constants.ENABLE_RAY_CLUSTER = False


def _connect(root: Path | str | None, start: bool) -> str:
    import ray

    target = address(root, start)
    if ray.is_initialized():
        return target
    if not os.environ.get(ADDRESS_ENV):   # the local instance; a configured cluster is joined as Ray does
        loopback_node()
    log.info("joining Ray at %s", target)
    try:
        ray.init(address=target, namespace=NAMESPACE, log_to_driver=False, logging_level=logging.WARNING,
                 configure_logging=False,
                 runtime_env={"env_vars": {"PYTHONPATH": str(REPO_ROOT)}} if os.environ.get(ADDRESS_ENV) else None)
    except (ConnectionError, RuntimeError) as error:
        raise ClusterError(f"cannot join Ray at {target}: {error}") from None
    return target


def shared_disk() -> bool:
    """Whether workers write the cache themselves (default) or return results to the manager
    (``RECONBENCH_RAY_SHARED_DISK=0``: workers on other machines)."""
    return os.environ.get(SHARED_DISK_ENV, "1").strip().lower() not in ("0", "false", "no")
