"""What a collective costs between Ray Train workers, and what that makes of a training step at more workers.

``time_all_reduce`` is a Ray Train worker loop: each collective of a list, timed
alone at its size in the workers' own ``MultiWorkerMirroredStrategy``.
``fit_ring`` fits the ring all-reduce's cost model to such timings at several
worker counts: a ring of N workers sends 2 (N - 1) messages one after the
other (a reduce-scatter, then an all-gather), each of 1/N of the M bytes, so

    seconds(N, M) = 2 (N - 1) x alpha + 2 (N - 1) / N x M / beta

with alpha the cost of one message (on a CPU cluster, TensorFlow's gRPC path:
milliseconds, not the network's microseconds) and beta the bytes a second one
message moves. ``project`` puts a step together from it and the step's measured
compute: examples/s = global batch / (compute of each worker's share + the
step's one all-reduce).
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np


def time_all_reduce(config: dict) -> None:
    """Ray Train worker loop: per worker, the seconds of each collective of ``config["collectives"]`` (op, dtype,
    elements: TensorFlow's all-reduce, or the socket ring's where op is ``RING_OP``), run alone
    ``config["repeats"]`` times after a warm-up, on one thread; rank 0 writes ``{"seconds": [...], "pinning":
    ...}`` to ``config["out"]``.

    ``config["pin"]``: each worker on a CPU of its own where that is safe, as training's workers are
    (``TrainConfig.pin_cpus``). The placement must be training's: on this 2-core host, 2 workers left to the
    scheduler took 3.7 ms an all-reduce of 256 KiB, and pinned 2.2-2.9 ms (2026-12-02)."""
    import ray.train

    import scaleout  # noqa: F401  (TensorFlow's environment first)
    from scaleout.tfenv import import_tensorflow
    from scaleout.train.cpus import pin_ray_worker
    from scaleout.train.replicas import RING_OP, ring_all_reduce
    from scaleout.train.ring import join_ring

    context = ray.train.get_context()
    pinning = "not pinned: pin is off"
    if config["pin"]:  # before TensorFlow starts its threads, which then inherit it
        pinning = pin_ray_worker(context.get_local_rank(), context.get_local_world_size(), 1)
    tf = import_tensorflow()
    tf.config.threading.set_intra_op_parallelism_threads(1)
    tf.config.threading.set_inter_op_parallelism_threads(1)
    strategy = tf.distribute.MultiWorkerMirroredStrategy()
    ring = None
    if any(c.get("op") == RING_OP for c in config["collectives"]):  # the step's all-reduce over the socket ring
        ring = join_ring(strategy, context.get_world_rank(), context.get_world_size(), ray.util.get_node_ip_address())
    seconds = []
    try:
        for collective in config["collectives"]:
            dtype, elements = getattr(tf, collective["dtype"]), collective["elements"]
            over_ring = collective.get("op") == RING_OP

            @tf.function
            def step():
                def on_replica():
                    ones = tf.ones([elements], dtype)
                    if over_ring:  # as scaleout.train.replicas.all_reduce_step calls it
                        return tf.reduce_sum(ring_all_reduce(ring, ones))
                    return tf.reduce_sum(tf.distribute.get_replica_context().all_reduce("sum", ones))
                return strategy.run(on_replica)

            for _ in range(5):  # trace, resolve the group, warm up
                step()
            start = time.perf_counter()
            for _ in range(config["repeats"]):
                step()
            seconds.append((time.perf_counter() - start) / config["repeats"])
    finally:
        if ring is not None:
            ring.close()
    if context.get_world_rank() == 0:
        Path(config["out"]).write_text(json.dumps({"seconds": seconds, "pinning": pinning}))


def ring_seconds(workers: int, nbytes: float, alpha: float, beta: float) -> float:
    """The ring all-reduce's seconds for ``nbytes`` over ``workers`` (0 for one worker)."""
    if workers < 2:
        return 0.0
    return 2 * (workers - 1) * alpha + 2 * (workers - 1) / workers * nbytes / beta


def fit_ring(points: list[tuple[int, float, float]]) -> dict:
    """(alpha seconds a message, beta bytes a second, the fit's largest relative error) by least squares over
    ``points`` of (workers, bytes, seconds), each weighted by 1 / seconds (relative errors)."""
    n, m, t = (np.asarray(c, dtype=float) for c in zip(*points))
    design = np.stack([2 * (n - 1), 2 * (n - 1) / n * m], axis=1) / t[:, None]
    (alpha, inverse_beta), *_ = np.linalg.lstsq(design, np.ones_like(t), rcond=None)
    if alpha <= 0 or inverse_beta <= 0:
        raise ValueError(f"the timings do not fit a ring all-reduce (alpha {alpha:.3g} s, 1/beta "
                         f"{inverse_beta:.3g} s/B): {points}")
    model = np.array([ring_seconds(int(a), b, alpha, 1 / inverse_beta) for a, b in zip(n, m)])
    return {"alpha_s": float(alpha), "beta_bytes_per_s": float(1 / inverse_beta),
            "max_relative_error": float(np.max(np.abs(model - t) / t))}


def compute_model(one_worker_ms: float, two_workers_compute_ms: float) -> tuple[float, float]:
    """(fixed ms, ms per query of a worker's share) of a step's compute at a fixed global batch B, from one
    worker's step (all B queries, no collective) and a 2-worker step less its collective (B / 2 queries each):
    a straight line through the two, the fixed part what every worker pays whatever its share (embedding
    the global batch's candidates, updating their rows, the framework). Not below zero either way."""
    per_query_half = max(0.0, one_worker_ms - two_workers_compute_ms)  # B/2 queries' worth
    fixed = max(0.0, two_workers_compute_ms - per_query_half)
    return fixed, per_query_half


def project(batch: int, nbytes: float, one_worker_ms: float, two_workers_compute_ms: float, alpha: float,
            beta: float, workers: list[int]) -> list[dict]:
    """Per worker count: its step's compute and collective (ms) and examples/s at global batch ``batch``."""
    fixed, half = compute_model(one_worker_ms, two_workers_compute_ms)
    out = []
    for n in workers:
        compute = one_worker_ms if n == 1 else fixed + half * 2 / n
        comm = 1000 * ring_seconds(n, nbytes, alpha, beta)
        out.append({"workers": n, "compute_ms": round(compute, 2), "collective_ms": round(comm, 2),
                    "step_ms": round(compute + comm, 2), "examples_per_second": round(1000 * batch / (compute + comm))})
    return out
