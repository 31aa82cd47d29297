"""scaleout.bench.collectives.time_all_reduce in real Ray Train workers: one timing per collective (TensorFlow's,
and the socket ring's), and the workers placed as training places them (each on a core of its own where the node
owns every CPU), or left to the scheduler."""

import json
import os
import subprocess
import sys

import pytest

DRIVER = """
import os, sys
import scaleout  # noqa: F401  (TensorFlow's environment first)
import ray
from ray.train import RunConfig, ScalingConfig
from ray.train.tensorflow import TensorflowTrainer
from scaleout.bench.collectives import time_all_reduce

tmp = sys.argv[1]
ray.init(num_cpus=len(os.sched_getaffinity(0)), include_dashboard=False)
try:
    for pin in (True, False):
        TensorflowTrainer(
            time_all_reduce,
            train_loop_config={"collectives": [{"dtype": "float32", "elements": 1024},
                                               {"dtype": "float32", "elements": 64},
                                               {"op": "ring_all_reduce", "dtype": "bfloat16", "elements": 1024}],
                               "repeats": 3, "out": f"{tmp}/timed-{pin}.json", "pin": pin},
            scaling_config=ScalingConfig(num_workers=2, resources_per_worker={"CPU": 1}),
            run_config=RunConfig(name=f"timed-{pin}", storage_path=f"{tmp}/runs"),
        ).fit()
finally:
    ray.shutdown()
"""


@pytest.mark.slow
def test_each_collective_is_timed_in_workers_placed_as_asked(tmp_path):
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    done = subprocess.run([sys.executable, "-c", DRIVER, str(tmp_path)], env=env, capture_output=True, text=True,
                          timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    pinned = json.loads((tmp_path / "timed-True.json").read_text())
    free = json.loads((tmp_path / "timed-False.json").read_text())
    for timed in (pinned, free):
        assert len(timed["seconds"]) == 3 and all(s > 0 for s in timed["seconds"])
    assert pinned["pinning"] == f"worker 0 of 2 on this node pinned to CPUs [{min(os.sched_getaffinity(0))}] of " \
                                f"{sorted(os.sched_getaffinity(0))}"
    assert free["pinning"] == "not pinned: pin is off"
