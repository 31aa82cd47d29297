"""Pinning Ray Train workers to CPUs of their own: which CPUs, when it is safe, and every thread moved."""

import json
import os
import subprocess
import sys

import pytest

from scaleout.train.cpus import own_cpus


def test_each_worker_of_a_node_gets_its_own_cpus_in_order():
    allowed = {0, 1, 2, 3, 4, 5}
    assert own_cpus(0, 2, 1, {0, 1}, 2.0) == ([0], "worker 0 of 2 on this node pinned to CPUs [0] of [0, 1]")
    assert own_cpus(1, 2, 1, {0, 1}, 2.0)[0] == [1]
    assert [own_cpus(rank, 3, 2, allowed, 6.0)[0] for rank in range(3)] == [[0, 1], [2, 3], [4, 5]]
    # Fewer workers than CPUs: the first CPUs, each worker's own; the process's allowed CPUs, not 0..n-1.
    assert own_cpus(1, 2, 1, {4, 7, 9}, 3.0)[0] == [7]


@pytest.mark.parametrize("rank, world, per_worker, allowed, node_cpus, why", [
    (0, 1, 1, {0, 1}, 1.0, "not pinned: the Ray node has 1 CPU of the 2 this process may use"),  # 2 nodes, 1 host
    (0, 2, 1, {0, 1}, None, "not pinned: the node's CPU resource is unknown"),
    (0, 2, 2, {0, 1, 2}, 3.0, "not pinned: 2 workers x 2 CPUs do not fit in 3 CPUs"),
])
def test_nothing_is_pinned_where_the_worker_cannot_know_which_cpus_are_its_own(rank, world, per_worker, allowed,
                                                                               node_cpus, why):
    cpus, reason = own_cpus(rank, world, per_worker, allowed, node_cpus)
    assert cpus is None and reason.startswith(why), reason


PINNED = """
import json, os, sys, threading
from scaleout.train.cpus import pin_process
ready, done = threading.Event(), threading.Event()
before = threading.Thread(target=lambda: (ready.set(), done.wait()))  # runs before the pinning, as Ray's do
before.start(); ready.wait()
cpu = min(os.sched_getaffinity(0))
pin_process([cpu])
seen = {}
after = threading.Thread(target=lambda: seen.update(after=sorted(os.sched_getaffinity(0))))
after.start(); after.join()
threads = {tid: sorted(os.sched_getaffinity(int(tid))) for tid in os.listdir("/proc/self/task")}
done.set(); before.join()
print(json.dumps({"cpu": cpu, "threads": threads, "after": seen["after"]}))
"""


def test_pin_process_moves_every_running_thread_and_the_ones_started_after():
    out = subprocess.run([sys.executable, "-c", PINNED], capture_output=True, text=True, check=True)
    result = json.loads(out.stdout)
    assert len(result["threads"]) >= 2  # the main thread and the one started before
    assert all(cpus == [result["cpu"]] for cpus in result["threads"].values()), result
    assert result["after"] == [result["cpu"]]
