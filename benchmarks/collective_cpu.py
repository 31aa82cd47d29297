"""What one all-reduce costs each of 2 TensorFlow workers on this host: its wall time, and the CPU time it takes.

    python benchmarks/collective_cpu.py [--threads 1] [--steps 200] [--rounds 3]

Two processes join one MultiWorkerMirroredStrategy over localhost (TF_CONFIG, as
Ray Train sets it; Ray itself is left out), and time a tf.function step that
all-reduces a tensor of each size and nothing else: 4 bytes (the floor), 8 KiB,
256 KiB (about the default preset's packed all-reduce of 254 KiB) and 1 MiB,
beside a step with no collective (the call's own cost). Per step, each worker
reports the median wall time over rounds, and the CPU time of its process
(user + system, all threads: gRPC's, the executor's, Python's) and its voluntary
context switches, from getrusage over all rounds. On a host whose cores all
train, the CPU time is what the collective takes from the training; the wall
time is what a step waits for it.

Writes benchmarks/results/collective_cpu.json.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import socket
import statistics
import subprocess
import sys
import time
from pathlib import Path

RESULTS = Path(__file__).parent / "results"
SIZES = [0, 4, 8 * 1024, 256 * 1024, 1024 * 1024]  # bytes all-reduced a step; 0: no collective


def worker(rank: int, ports: list[int], threads: int, steps: int, rounds: int) -> list[dict]:
    os.environ["TF_CONFIG"] = json.dumps({"cluster": {"worker": [f"localhost:{p}" for p in ports]},
                                          "task": {"type": "worker", "index": rank}})
    import scaleout  # noqa: F401  (TensorFlow's environment first)
    from scaleout.tfenv import tf

    tf.config.threading.set_intra_op_parallelism_threads(threads)
    tf.config.threading.set_inter_op_parallelism_threads(threads)
    strategy = tf.distribute.MultiWorkerMirroredStrategy()
    figures = []
    for nbytes in SIZES:
        elements = max(nbytes // 4, 1)

        @tf.function
        def step():
            def on_replica():
                x = tf.ones([elements], tf.float32)
                summed = tf.distribute.get_replica_context().all_reduce("sum", x) if nbytes else x
                return tf.reduce_sum(summed)
            return strategy.run(on_replica)

        for _ in range(10):  # trace, resolve the group, warm up
            step()
        before = resource.getrusage(resource.RUSAGE_SELF)
        walls = []
        for _ in range(rounds):
            start = time.perf_counter()
            for _ in range(steps):
                step()
            walls.append((time.perf_counter() - start) / steps)
        after = resource.getrusage(resource.RUSAGE_SELF)
        cpu = (after.ru_utime + after.ru_stime - before.ru_utime - before.ru_stime) / (steps * rounds)
        figures.append({"bytes": nbytes, "wall_ms": round(statistics.median(walls) * 1e3, 3),
                        "wall_ms_rounds": [round(w * 1e3, 3) for w in walls], "cpu_ms": round(cpu * 1e3, 3),
                        "voluntary_switches": round((after.ru_nvcsw - before.ru_nvcsw) / (steps * rounds), 1)})
    return figures


def free_ports(n: int) -> list[int]:
    sockets = [socket.socket() for _ in range(n)]
    for s in sockets:
        s.bind(("localhost", 0))
    ports = [s.getsockname()[1] for s in sockets]
    for s in sockets:
        s.close()
    return ports


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--threads", type=int, default=1, help="TensorFlow's intra- and inter-op threads a worker "
                        "(1: as a pinned Ray worker of the default preset)")
    parser.add_argument("--steps", type=int, default=200)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--out", type=Path, default=RESULTS / "collective_cpu.json")
    parser.add_argument("--worker", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--ports", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker is not None:
        figures = worker(args.worker, [int(p) for p in args.ports.split(",")], args.threads, args.steps, args.rounds)
        print(json.dumps(figures), flush=True)
        return

    ports = ",".join(map(str, free_ports(2)))
    common = [sys.executable, __file__, "--ports", ports, "--threads", str(args.threads), "--steps", str(args.steps),
              "--rounds", str(args.rounds)]
    print(f"2 workers on localhost, {args.threads} thread(s) each, {args.rounds} rounds of {args.steps} steps a size",
          flush=True)
    procs = [subprocess.Popen([*common, "--worker", str(r)], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                              text=True) for r in range(2)]
    outputs = [p.communicate(timeout=1800) for p in procs]
    for p, (_, err) in zip(procs, outputs):
        if p.returncode != 0:
            sys.exit(f"a worker failed ({p.returncode}):\n{err[-3000:]}")
    workers = [json.loads(out.strip().splitlines()[-1]) for out, _ in outputs]
    print(f"{'bytes':>9} | {'wall ms (w0, w1)':>18} | {'CPU ms a step (w0, w1)':>23} | {'switches (w0, w1)':>18}")
    for a, b in zip(*workers):
        print(f"{a['bytes']:>9,} | {a['wall_ms']:>8.3f} {b['wall_ms']:>9.3f} | {a['cpu_ms']:>11.3f} {b['cpu_ms']:>11.3f} "
              f"| {a['voluntary_switches']:>8.1f} {b['voluntary_switches']:>9.1f}")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"cpus": os.cpu_count(), "threads": args.threads, "steps": args.steps,
                                    "rounds": args.rounds, "workers": workers}, indent=1) + "\n")
    print(f"written to {args.out}")


if __name__ == "__main__":
    from scaleout.cli.ending import ended

    ended(main)
