"""What the connected Ray cluster offers the work placed on it: CPUs for every worker, and a local path every node
sees as this process does.

Ray waits for CPUs the cluster does not have instead of failing (the embedding
job's actor pool up to the ten minutes it is given): ``check_cpus`` refuses
such a request before any work.

A run on one machine's disk works with the Ray backend on that machine, or on a
cluster whose nodes all mount the same directory; on nodes that share no disk,
a worker on another node finds no dataset (or a model, or the parts' folder)
there, and fails deep inside Ray Train or Ray Data. ``check_nodes_share`` asks
each node with CPUs, before any work, what it sees at the path: a file's size
and the sha256 of its first MiB; a directory's, a marker file written into it
here for the check. A node that sees nothing there, or another file, is named.
"""

from __future__ import annotations

import hashlib
import logging
import os
import uuid
from pathlib import Path

from scaleout.errors import ConfigError

log = logging.getLogger(__name__)
HEAD_BYTES = 1 << 20  # of a file, hashed on each node: enough to tell two files apart, cheap at any size
MARKER = ".scaleout-node-check-"  # then a random id: written into a directory for the check, removed after it
ON_A_CLUSTER = ("on a cluster, give --run s3://BUCKET/PREFIX (or gs://), or a directory every node mounts at the "
                "same path")


def check_cpus(workers: int, cpus_per_worker: float, cluster_cpus: float, what: str = "workers") -> None:
    """ConfigError where ``workers`` x ``cpus_per_worker`` CPUs are more than ``cluster_cpus``, the connected
    cluster's (``ray.cluster_resources()``)."""
    needed = workers * cpus_per_worker
    if needed > cluster_cpus:
        raise ConfigError(f"{workers} {what} x {cpus_per_worker:g} CPU need {needed:g} CPUs; the Ray cluster has "
                          f"{cluster_cpus:g}")


def look(path: str) -> tuple[int, str] | None:
    """What this node sees at the file ``path``: (its size, the sha256 of its first HEAD_BYTES), or None."""
    try:
        with open(path, "rb") as f:
            return os.fstat(f.fileno()).st_size, hashlib.sha256(f.read(HEAD_BYTES)).hexdigest()
    except OSError:
        return None


def check_nodes_share(paths: list[Path], what: str) -> None:
    """ConfigError unless every alive Ray node with CPUs sees each of ``paths`` (files, or directories this process
    may write a marker into: one not made yet is checked at its nearest existing parent) as this process does;
    ``what`` names them in the message. A cluster of one node is not asked."""
    import ray
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    nodes = [n for n in ray.nodes() if n.get("Alive") and n.get("Resources", {}).get("CPU", 0) > 0]
    if len(nodes) < 2:
        return
    markers = []
    try:
        files = []
        for path in paths:
            folder = Path(path)
            while not folder.exists() and folder != folder.parent:  # a directory not made yet: where it will be
                folder = folder.parent
            if folder.is_dir():
                marker = folder / f"{MARKER}{uuid.uuid4().hex}"
                marker.write_text(uuid.uuid4().hex)
                markers.append(marker)
                files.append(marker)
            else:
                files.append(Path(path))
        here = [look(str(f)) for f in files]
        probe = ray.remote(num_cpus=0, max_retries=0)(_look_all)
        seen = ray.get([probe.options(scheduling_strategy=NodeAffinitySchedulingStrategy(n["NodeID"], soft=False))
                        .remote([str(f) for f in files]) for n in nodes], timeout=300)
    finally:
        for marker in markers:
            marker.unlink(missing_ok=True)
    for node, theirs in zip(nodes, seen):
        for path, mine, its in zip(paths, here, theirs):
            if its != mine:
                where = f"the Ray node {node.get('NodeManagerAddress', node['NodeID'])}"
                raise ConfigError(f"{what} {path} is on this machine's disk, and {where} "
                                  f"{'cannot see it' if its is None else 'sees another file there'}: workers "
                                  f"placed there would not find it; {ON_A_CLUSTER}")
    log.info("every one of the %d Ray nodes sees %s", len(nodes), ", ".join(map(str, paths)))


def _look_all(paths: list[str]) -> list[tuple[int, str] | None]:
    return [look(p) for p in paths]
