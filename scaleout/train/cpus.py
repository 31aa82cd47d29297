"""Each Ray Train worker on CPUs of its own, when the workers of a node own all of its CPUs.

Two workers of one CPU each on this 2-core machine, left to the scheduler,
trained the default preset at 53,500 and 57,599 examples/s (median of epochs
2-8); each pinned to its own core, at 60,800 and 61,235 in the same minutes
(1.14x and 1.06x; ``benchmarks/ray_scaling.py`` measures it against one
process). A worker waits on the other at every step's collective, so a worker
moved between cores, or sharing one with the other while a core idles, holds
up both.

Pinning is only safe where the workers know which CPUs are theirs: the Ray
node must own every CPU the process may run on (Ray's CPU resource equals the
process's affinity), and its workers' CPUs must fit in them. Two Ray nodes on
one host (containers, or ``ray start`` twice) each see all of the host's CPUs
and would pin their first workers to the same core; there the node's CPU
resource is less than the CPUs the process sees, and nothing is pinned.
"""

from __future__ import annotations

import os


def _cpus(n: float) -> str:
    return f"{n:g} CPU" if n == 1 else f"{n:g} CPUs"


def own_cpus(local_rank: int, local_world: int, per_worker: int, allowed: set[int],
             node_cpus: float | None) -> tuple[list[int] | None, str]:
    """The CPUs worker ``local_rank`` of the node's ``local_world`` workers of ``per_worker`` CPUs each should
    run on, from the CPUs this process may use (``allowed``) and the node's Ray CPU resource (``node_cpus``):
    (cpus, why), or (None, why not)."""
    cpus = sorted(allowed)
    if node_cpus is None:
        return None, "not pinned: the node's CPU resource is unknown"
    if node_cpus != len(cpus):
        return None, (f"not pinned: the Ray node has {_cpus(node_cpus)} of the {len(cpus)} this process may use "
                      "(another node may share them)")
    if local_world * per_worker > len(cpus):
        return None, f"not pinned: {local_world} workers x {_cpus(per_worker)} do not fit in {_cpus(len(cpus))}"
    mine = cpus[local_rank * per_worker:(local_rank + 1) * per_worker]
    return mine, f"worker {local_rank} of {local_world} on this node pinned to CPUs {mine} of {cpus}"


def pin_process(cpus: list[int]) -> None:
    """Every thread of this process on ``cpus``; threads started later inherit it from the thread that starts
    them. (``sched_setaffinity`` sets one thread: Ray's own threads run already.)"""
    for tid in os.listdir("/proc/self/task"):
        try:
            os.sched_setaffinity(int(tid), cpus)
        except ProcessLookupError:  # a thread that ended since the listing
            pass


def pin_ray_worker(local_rank: int, local_world: int, per_worker: int) -> str:
    """Pins this Ray Train worker (see the module docstring) where it is safe; what was done, to log and keep."""
    if not hasattr(os, "sched_setaffinity"):
        return "not pinned: this platform has no CPU affinity"
    import ray

    node = ray.get_runtime_context().get_node_id()
    node_cpus = next((n["Resources"].get("CPU") for n in ray.nodes() if n["NodeID"] == node), None)
    cpus, why = own_cpus(local_rank, local_world, per_worker, os.sched_getaffinity(0), node_cpus)
    if cpus is not None:
        pin_process(cpus)
    return why
