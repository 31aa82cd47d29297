"""A real local Ray cluster for tests: `ray start --head --block` with token authentication,
stopped by its process session when the test module is done, whatever happened."""

from __future__ import annotations

import contextlib
import os
import secrets
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
    session: int  # process session id of every process of the cluster

    def processes(self, marker: str) -> list[psutil.Process]:
        found = []
        for p in psutil.process_iter(["pid", "cmdline"]):
            try:
                if os.getsid(p.pid) == self.session and marker in " ".join(p.info["cmdline"] or []):
                    found.append(p)
            except (ProcessLookupError, psutil.Error):
                continue
        return found

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
        _wait(lambda: proc.poll() is not None or cluster.ray("job", "list", "--address", cluster.dashboard,
                                                               timeout=60).returncode == 0,
              120, "the Ray dashboard's job server")
        if proc.poll() is not None:
            raise RuntimeError(f"ray start exited with {proc.returncode}: {(root / 'ray-start.log').read_text()[-2000:]}")
        yield cluster
    finally:
        proc.send_signal(signal.SIGTERM)  # ray start --block drains and stops its processes
        try:
            proc.wait(timeout=45)
        except subprocess.TimeoutExpired:
            pass
        for p in cluster.processes(""):
            with contextlib.suppress(psutil.Error):
                p.kill()
        log.close()
