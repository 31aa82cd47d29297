"""benchmarks/ray_cores.py: each core's time split between its pinned worker, the other processes and idle."""

import os

import pytest
from benchscripts import load


@pytest.fixture(scope="module")
def ray_cores():
    return load("ray_cores")


def samples(rates: list[dict], hz: int) -> list:
    """Samples a second apart from per-second rates: {"busy": {core: share}, "pids": {pid: (name, core, cpus)}}."""
    out, busy, used = [], {0: 0, 1: 0}, {}
    for second, rate in enumerate([None, *rates]):
        if rate:
            for core, share in rate["busy"].items():
                busy[core] += round(share * hz)
            for pid, (_, _, cpus) in rate["pids"].items():
                used[pid] = used.get(pid, 0.0) + cpus
        names = (rate or rates[0])["pids"]
        out.append((float(second), {core: (busy[core], 10**6) for core in busy},
                    {pid: (name, core, used.get(pid, 0.0)) for pid, (name, core, _) in names.items()}))
    return out


def test_each_core_splits_into_its_worker_the_others_and_idle_over_the_training_after_the_skip(ray_cores):
    hz = os.sysconf("SC_CLK_TCK")
    starting = {"busy": {0: 0.3, 1: 0.2}, "pids": {1: ("RayTrainWorker", 0, 0.1), 2: ("RayTrainWorker", 1, 0.1),
                                                  3: ("raylet", None, 0.5)}}  # workers not training yet
    first_epoch = {"busy": {0: 1.0, 1: 1.0}, "pids": {1: ("RayTrainWorker", 0, 0.5), 2: ("RayTrainWorker", 1, 0.6),
                                                     3: ("raylet", None, 0.9)}}
    steady = {"busy": {0: 0.95, 1: 0.9}, "pids": {1: ("RayTrainWorker", 0, 0.9), 2: ("RayTrainWorker", 1, 0.8),
                                                 3: ("raylet", None, 0.1), 4: ("python", None, 0.05)}}
    got = ray_cores.where_time_went(samples([starting, first_epoch, steady, steady, steady], hz), 1.0, 2)
    assert got["cores"][0] == pytest.approx({"worker": 0.9, "others": 0.05, "idle": 0.05}, abs=0.011)
    assert got["cores"][1] == pytest.approx({"worker": 0.8, "others": 0.1, "idle": 0.1}, abs=0.011)
    assert got["others_cpus"]["raylet"] == pytest.approx(0.1, abs=1e-6)  # the first epoch's 0.9 skipped
    assert got["seconds"] == pytest.approx(3.0)  # the three steady seconds
    assert ray_cores.where_time_went(samples([starting, starting], hz), 0.0, 2) == {}  # never trained
