"""A real local Ray cluster for tests: `ray start --head --block` with token authentication,
stopped by its process session when the test module is done, whatever happened."""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import psutil

BIN = Path(sys.executable).parent


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class Cluster:
    address: str  # GCS host:port, for ray.init / --address
    dashboard: str  # http://host:port, for `ray job`
    env: dict  # what a client needs: token authentication and the project's Python first on PATH
    session: int  # process session id of every process of the (head) node
    other_sessions: tuple = ()  # those of the other nodes

    def processes(self, marker: str) -> list[psutil.Process]:
        found = []
        for p in psutil.process_iter(["pid", "cmdline"]):
            try:
                if os.getsid(p.pid) in (self.session, *self.other_sessions) \
                        and marker in " ".join(p.info["cmdline"] or []):
                    found.append(p)
            except (ProcessLookupError, psutil.Error):
                continue
        return found

    def state(self, resource: str, *filters: str) -> list[dict]:
        """Ray's state API (``ray list RESOURCE --detail``): every node, actor, ... as dicts."""
        args = [a for f in filters for a in ("--filter", f)]
        listed = self.ray("list", resource, "--address", self.address, "--format", "json", "--detail",
                          "--limit", "10000", *args, timeout=120)
        if listed.returncode != 0:
            raise RuntimeError(f"ray list {resource} failed: {listed.stderr[-2000:]}")
        text = listed.stdout.strip()
        return [] if not text.startswith("[") else json.loads(text)

    def ray(self, *args, timeout=900, **kwargs) -> subprocess.CompletedProcess:
        return subprocess.run([str(BIN / "ray"), *map(str, args)], env=self.env, capture_output=True, text=True,
                              timeout=timeout, **kwargs)


def _wait(condition, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise TimeoutError(f"gave up waiting for {what} after {timeout:.0f} s")
        time.sleep(0.5)


@contextlib.contextmanager
def local_cluster(num_cpus: int = 2):
    # Unix socket paths are short: the temp dir must be too.
    root = Path(tempfile.mkdtemp(prefix="ray", dir="/tmp"))
    token = root / "auth_token"
    token.write_text(secrets.token_hex(32))
    env = {**os.environ, "RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN_PATH": str(token),
           "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}"}
    env.pop("RAY_ADDRESS", None)
    port, dashboard_port = free_port(), free_port()
    log = open(root / "ray-start.log", "w")
    proc = subprocess.Popen(
        [str(BIN / "ray"), "start", "--head", "--block", f"--port={port}", f"--dashboard-port={dashboard_port}",
         f"--num-cpus={num_cpus}", f"--temp-dir={root / 't'}", "--disable-usage-stats", "--include-dashboard=true"],
        env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    cluster = Cluster(f"127.0.0.1:{port}", f"http://127.0.0.1:{dashboard_port}", env, proc.pid)
    try:
        _wait_for_job_server(proc, cluster, root / "ray-start.log")
        yield cluster
    finally:
        _stop(proc, proc.pid)
        log.close()
        shutil.rmtree(root, ignore_errors=True)


def _wait_for_job_server(head: subprocess.Popen, cluster: Cluster, log: Path) -> None:
    _wait(lambda: head.poll() is not None or cluster.ray("job", "list", "--address", cluster.dashboard,
                                                         timeout=60).returncode == 0,
          120, "the Ray dashboard's job server")
    if head.poll() is not None:
        raise RuntimeError(f"ray start --head exited with {head.returncode}: {log.read_text()[-2000:]}")


def _stop(proc: subprocess.Popen, session: int) -> None:
    """Stops a `ray start --block` and then kills whatever of its process session is left."""
    proc.send_signal(signal.SIGTERM)  # ray start --block drains and stops its processes
    with contextlib.suppress(subprocess.TimeoutExpired):
        proc.wait(timeout=45)
    for p in psutil.process_iter():
        with contextlib.suppress(psutil.Error, ProcessLookupError):
            if os.getsid(p.pid) == session:
                p.kill()


@contextlib.contextmanager
def two_node_cluster(extra_env: dict, object_store_bytes: int = 300 * 1024 ** 2, own_disk: bool = True,
                     token: str = ""):
    """A head and a second node of one CPU each (custom resources ``node_a`` / ``node_b``), token authentication.

    The second node runs in its own mount namespace with an empty tmpfs over
    ``hidden``, where the head keeps its temp dir and where its processes'
    TMPDIR points (the scaleout driver's local mirror): on one host the two
    nodes would otherwise share one disk, and a stage that handed a local path
    to the other node would pass here and fail on a real cluster. With
    ``own_disk`` false the two nodes share this host's disk, as nodes with a
    shared file system do (benchmarks/ray_scaling.py --nodes 2 times training
    there, checkpoints in a local directory). ``token``: the cluster's
    authentication token (default a new one; a driver in this process must
    have its token in the environment before it imports ray). Yields
    (cluster, hidden).
    """
    base = Path(tempfile.mkdtemp(prefix="ray", dir="/tmp"))  # short: Unix socket paths
    hidden = base / "h"
    (hidden / "tmp").mkdir(parents=True)
    token_file = base / "auth_token"
    token_file.write_text(token or secrets.token_hex(32))
    env = {**os.environ, **extra_env, "RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN_PATH": str(token_file),
           "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}", "TMPDIR": str(hidden / "tmp")}
    env.pop("RAY_ADDRESS", None)
    port, dashboard_port = free_port(), free_port()
    common = ["--block", "--num-cpus=1", f"--object-store-memory={object_store_bytes}", "--disable-usage-stats"]
    head_log, node_log = open(base / "head.log", "w"), open(base / "node-b.log", "w")
    head = subprocess.Popen(
        [str(BIN / "ray"), "start", "--head", f"--port={port}", f"--dashboard-port={dashboard_port}",
         "--include-dashboard=true", '--resources={"node_a": 1}', f"--temp-dir={hidden / 'a'}", *common],
        env=env, stdout=head_log, stderr=subprocess.STDOUT, start_new_session=True)
    cluster = Cluster(f"127.0.0.1:{port}", f"http://127.0.0.1:{dashboard_port}", env, head.pid)
    node = None
    try:
        _wait_for_job_server(head, cluster, base / "head.log")
        script = f'mount -t tmpfs tmpfs {hidden} && mkdir -p {hidden}/b {hidden}/tmp && exec "$0" "$@"'
        namespace = ["unshare", "-m", "--propagation", "private", "sh", "-c", script] if own_disk else []
        node = subprocess.Popen(
            [*namespace, str(BIN / "ray"), "start",
             f"--address=127.0.0.1:{port}", '--resources={"node_b": 1}', f"--temp-dir={hidden / 'b'}",
             "--dashboard-agent-listen-port=0", *common],
            env=env, stdout=node_log, stderr=subprocess.STDOUT, start_new_session=True)
        cluster.other_sessions = (node.pid,)

        def two_alive():
            if node.poll() is not None:
                raise RuntimeError(f"the second node exited with {node.returncode}: "
                                   f"{(base / 'node-b.log').read_text()[-2000:]}")
            return sum(n["state"] == "ALIVE" for n in cluster.state("nodes")) == 2
        _wait(two_alive, 120, "the second node")
        yield cluster, hidden
    finally:
        if node is not None:
            _stop(node, node.pid)
        _stop(head, head.pid)
        head_log.close()
        node_log.close()
        shutil.rmtree(base, ignore_errors=True)
