"""The Ray backend on a real local cluster (`ray start --head`, token authentication), driven the
way users drive it: `ray job submit ... -- python jobs/train.py` and `scaleout train --backend ray`."""

import itertools
import json
import math
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
import warnings
from pathlib import Path

import numpy as np
import psutil
import pytest

from conftest import REPO, run_cli
from raycluster import local_cluster
from scaleout import scratch
from scaleout.train.presets import configs
from scaleout.train.checkpoints import RUN_NAME, latest_checkpoint_state

SMALL = ["--batch-size", "1024"]


@pytest.fixture(scope="module")
def cluster():
    with local_cluster(num_cpus=2) as c:
        yield c


def submit_args(cluster, *job_args, submission_id=None, job="jobs/train.py"):
    extra = ["--submission-id", submission_id, "--no-wait"] if submission_id else []
    return ["job", "submit", "--address", cluster.dashboard, "--working-dir", REPO, *extra, "--",
            "python", job, *job_args]


def small_run(tmp_path, shards: int = 2) -> Path:
    root = tmp_path / "run"
    result = run_cli("prepare", "--run", root, "--source", "synthetic", "--synthetic-users", 3000,
                     "--synthetic-items", 1000, "--synthetic-interactions", 30000, "--train-shards", shards)
    assert result.returncode == 0, result.stderr
    return root


def wait_for_checkpoint(root: Path, process=None, timeout=300) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        state = latest_checkpoint_state(str(root / "checkpoints"))
        if state is not None:
            return state
        assert process is None or process.poll() is None, "the job ended before its first checkpoint"
        time.sleep(0.2)
    raise TimeoutError("no checkpoint appeared")


def started_job(cluster, *job_args) -> subprocess.Popen:
    """`ray job submit` of jobs/train.py with ``job_args``, running; its output merged into stdout."""
    return subprocess.Popen([str(Path(cluster.env["PATH"].split(":")[0]) / "ray"),
                             *map(str, submit_args(cluster, *job_args))],
                            env=cluster.env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def kill_a_worker(cluster, job: subprocess.Popen) -> tuple[int, str]:
    """Kills one of the 2 Ray Train workers (its scratch directory there); (its pid, the job's output once the job
    has ended)."""
    workers = cluster.processes("ray::RayTrainWorker")
    assert len(workers) == 2, workers
    victim = workers[-1].pid
    assert [p for p in Path(tempfile.gettempdir()).glob("scaleout-scratch-worker-*") if f"-{victim}-" in p.name]
    workers[-1].kill()
    psutil.wait_procs([workers[-1]], timeout=30)
    try:
        out, _ = job.communicate(timeout=600)
    except subprocess.TimeoutExpired:  # fail with what the job said, not the bare timeout
        job.kill()
        out, _ = job.communicate()
        pytest.fail(f"the job did not end within 600 s of worker {victim}'s kill; its output's end:\n{out[-6000:]}")
    return victim, out


def train_json(root):
    return json.loads((root / "metrics" / "train.json").read_text())


def checkpoint_cadence(epochs: list[dict], interval: float, slack: float = 0.25) -> list[dict]:
    """The epochs checkpointed (a stall recorded, and the last), after checking that each epoch after the first
    checkpoint was kept exactly when ``interval`` seconds had passed since the one before it ended (rank 0's
    clock; ``slack`` for the moments between the epoch's end, its record and the decision). ``epochs``: those
    of one attempt of the workers (a resumed one's start at the first it trained)."""
    kept = [e for e in epochs[:-1] if "checkpoint_stall_seconds" in e] + [epochs[-1]]
    assert kept[0]["epoch"] < epochs[-1]["epoch"], "no checkpoint before the last epoch's"
    previous = kept[0]
    for epoch in epochs[epochs.index(kept[0]) + 1:-1]:  # the epochs after the first checkpoint, but the last
        waited = epoch["ended_at"] - (previous["ended_at"] + previous["checkpoint_stall_seconds"])
        if "checkpoint_stall_seconds" in epoch:
            assert waited >= interval - slack, (epoch["epoch"], waited, interval)
            previous = epoch
        else:
            assert waited < interval + slack, (epoch["epoch"], waited, interval)
    return kept


def failure_policy(out: str) -> list[str]:
    """Ray Train's account of each replacement of the workers in a job's output (its controller logs a
    "[FailurePolicy] RETRY" block: where the error came from and what it was), a line each."""
    lines = [re.sub(r"\x1b\[[0-9;]*m", "", line) for line in out.splitlines()]
    found = []
    for i, line in enumerate(lines):
        if "[FailurePolicy] RETRY" in line:
            prefix = line[:line.index("[FailurePolicy]")]  # the controller's "(TrainController pid=N) "
            # Ray's snippet of a worker's error keeps its first and last 500 characters: its last line, the
            # exception, is in the block's end
            block = itertools.takewhile(lambda l: l.startswith(prefix), lines[i:i + 200])
            found.append(" | ".join(t for t in (l[len(prefix):].strip() for l in block) if t))
    return found


def test_two_workers_through_ray_job_submit_match_one_process(cluster, pipeline_run, tmp_path):
    local_root, summary, _ = pipeline_run
    root = tmp_path / "run"
    shutil.copytree(local_root / "data", root / "data")
    result = cluster.ray(*submit_args(cluster, "--run", root, "--workers", 2, "--profile-epoch", 2))
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-2000:]
    assert "succeeded" in result.stdout + result.stderr
    trained = train_json(root)
    epochs = configs("quality")[1].epochs  # the default preset, as in the pipeline run
    assert trained["backend"] == "ray" and [e["epoch"] for e in trained["epochs"]] == list(range(1, epochs + 1))
    # Each checkpoint but the last uploaded by Ray Train in the background while the next epoch trained (the
    # default), its local copy removed after the upload; the last one uploaded in place; how long the workers
    # stood still for each is in the history (the last checkpoint's state.json was written before its own).
    assert trained["train"]["checkpoint_upload"] == "async"
    out = result.stdout + result.stderr
    # Ray Train replaces a worker group that fails, from the last checkpoint (FailureConfig: CI saw it once,
    # after epoch 1, its cause not in the part of the log kept). The run must still match one process; the
    # checkpoints are counted on the epochs of the last attempt, and the replacement is reported with its cause.
    # (One replaced before its first checkpoint starts afresh: no resume is recorded.)
    resumed, retries = trained["resumed_at_epochs"], failure_policy(out)
    assert len(retries) >= len(resumed), (resumed, out[-3000:])
    if retries:
        warnings.warn(f"Ray Train replaced the worker group (resumed at epochs {resumed}): {retries}")
    kept = checkpoint_cadence(trained["epochs"][resumed[-1] if resumed else 0:],
                              trained["train"]["checkpoint_min_interval"])
    uploads = out.count("and its upload started in")  # a failed attempt's too, the one resumed from at least
    assert uploads == len(kept) - 1 if not retries else uploads >= len(kept) - 1 + len(resumed), out[-3000:]
    assert out.count("written and stored in") == 1, out[-3000:]
    assert all(e["checkpoint_stall_seconds"] >= e["checkpoint_write_seconds"] > 0 for e in kept[:-1])
    # The workers (on this host) removed their scratch directories, shards, checkpoints and traces, before Ray
    # ended them; what ended processes left before was swept when they made theirs.
    left = [p.name for p in Path(tempfile.gettempdir()).glob("scaleout-scratch-*")]
    assert not [n for n in left if n.startswith("scaleout-scratch-worker-") or scratch.owner_alive(n) is False], left
    # Epoch 2 traced by each worker, uploaded to the run's storage and gathered by the driver: the packed
    # all-reduce, over the socket ring by default (a PyFunc kernel), is among each worker's kernels (its time
    # includes the wait for the other worker).
    profile = json.loads((root / "metrics" / "profile" / "profile.json").read_text())
    assert (profile["backend"], profile["epoch"]) == ("ray", 2)
    assert [w["worker"] for w in profile["workers"]] == [0, 1]
    for rank, worker in enumerate(profile["workers"]):
        assert "PyFunc" in {t["type"] for t in worker["by_type"]}, worker["by_type"]
        assert list((root / "metrics" / "profile" / f"worker-{rank}").rglob("*.xplane.pb"))
    assert [e.get("profiled", False) for e in trained["epochs"]] == [e["epoch"] == 2 for e in trained["epochs"]]
    assert trained["model"] == json.loads(json.dumps(configs("quality")[0].__dict__))
    # What a step sends between the workers, as they traced it: every gradient and logged value, and the next
    # batch's candidate rows (global negatives: 1,024 ids, each as four 8-bit parts in bfloat16, the quality
    # preset's dtype), in one packed all-reduce. Nothing else (Keras would add one all-reduce per logged value,
    # the optimizer one per sparse gradient, the input one for its end; the rows of each step's own batch were
    # sent by the step before).
    [packed] = trained["collectives_per_step"]
    assert (packed["op"], packed["dtype"]) == ("ring_all_reduce", "bfloat16")
    # Counted: the candidate table's gradient over the global batch's rows, the user table's made dense (its
    # vocabulary and the one unknown row), the next batch's rows in 4 parts, and the 2 logged values (the loss
    # and the regularization loss), each as 3 parts in each of the 2 workers' slots.
    model_cfg, train_cfg = configs("quality")
    users = json.loads((root / "model" / "model.json").read_text())["vocab_sizes"]["user_id"] + 1
    batch, dim = train_cfg.batch_size, model_cfg.embedding_dim
    assert packed["elements"] == batch * dim + users * dim + 4 * batch + 3 * 2 * 2, (packed, users)
    local = json.loads((local_root / "metrics" / "train.json").read_text())
    assert local["collectives_per_step"] == []
    # TensorFlow's BFC allocator in the workers as in one process (scaleout.tfenv: the runtime environment)
    assert trained["cpu_allocator"] == local["cpu_allocator"] == "bfc"
    # Each worker on a CPU of its own where the node (2 CPUs) owns every CPU this machine lets it use.
    host = sorted(os.sched_getaffinity(0))
    expected = (f"worker 0 of 2 on this node pinned to CPUs [{host[0]}] of {host}" if len(host) == 2 else
                f"not pinned: the Ray node has 2 CPUs of the {len(host)} this process may use")
    assert trained["cpu_pinning"].startswith(expected), trained["cpu_pinning"]
    assert local["cpu_pinning"] == "one process: not pinned"
    assert (root / "model" / "query_tower" / "saved_model.pb").is_file()
    ray_top100 = json.loads((root / "metrics" / "eval.json").read_text())["metrics"][
        "factorized_top_k/top_100_categorical_accuracy"]
    local_top100 = summary["metrics"]["factorized_top_k/top_100_categorical_accuracy"]
    assert abs(ray_top100 - local_top100) <= 0.02, (ray_top100, local_top100)
    quality = run_cli("quality", "--run", root, "--baselines")
    assert quality.returncode == 0, quality.stderr[-2000:]
    ray_quality = json.loads((root / "metrics" / "quality.json").read_text())["model"]["exclude_seen"]
    for k in ("recall@10", "recall@100"):
        local = summary["quality"]["model"]["exclude_seen"][k]
        assert abs(ray_quality[k] - local) <= 0.02, (k, ray_quality[k], local)


def peer_closed(retry: str) -> bool:
    """Whether Ray Train's account of a retry (``failure_policy``) is a worker's step failing because the other
    worker's process ended: its ring's RingError naming that worker. Which Ray reports first, the killed worker's
    death (its health check; ``pid=`` the victim) or this, is a race of Ray's polls: CI at stop 79 saw this one."""
    said = re.search(r"\[Rank (\d+) Error Snippet\].*RingError: worker (\d+): (?:worker|the connection from worker|"
                     r"sending to worker) (\d+)[^|]* in the step's all-reduce", retry)
    return bool(said) and said.group(1) == said.group(2) != said.group(3)


def test_failure_policy_reads_a_retry_caused_by_the_ring_or_by_the_death():
    ray_says = ["(TrainController pid=7) [FailurePolicy] RETRY", "(TrainController pid=7) Source: worker group",
                "(TrainController pid=7) [Rank 0 Error Snippet]:", "(TrainController pid=7) Traceback (most recent "
                "call last):", "(TrainController pid=7) ...", "(TrainController pid=7) scaleout.train.ring.RingError: "
                "worker 0: worker 1 closed its connection in the step's all-reduce: its process ended (killed, out "
                "of memory, or crashed)", "the next line of the job's output"]
    [retry] = failure_policy("\n".join(ray_says))
    assert peer_closed(retry) and "next line" not in retry
    assert not peer_closed(retry.replace("worker 0: worker 1", "worker 0: worker 0"))  # its own rank: not a peer
    assert not peer_closed(retry.replace("[Rank 0", "[Rank 1"))
    assert not peer_closed(retry.replace("RingError", "ValueError"))


def test_a_killed_worker_is_replaced_and_training_continues_from_the_checkpoint(cluster, tmp_path):
    root = small_run(tmp_path)
    # With side features and every loss option on: they run under the Ray backend and resume too.
    options = ["--features", "timestamp", "title", "--hard-negatives", 64, "--temperature", 0.5]
    job = started_job(cluster, "--run", root, "--epochs", 30, *SMALL, *options)
    try:
        state = wait_for_checkpoint(root, job)
        victim, out = kill_a_worker(cluster, job)
    finally:
        if job.poll() is None:
            job.kill()
    assert job.returncode == 0, out[-4000:]
    assert "resuming from the checkpoint of epoch" in out
    trained = train_json(root)
    assert trained["model"]["features"] == ["timestamp", "title"] and trained["model"]["hard_negatives"] == 64
    assert trained["model"]["logq_correction"] and trained["model"]["remove_accidental_hits"]
    # Every epoch trained and recorded once; the restart is in the record.
    assert [e["epoch"] for e in trained["epochs"]] == list(range(1, 31))
    assert len(trained["resumed_at_epochs"]) == 1 and trained["resumed_at_epochs"][0] >= state["epoch"]
    [retry] = failure_policy(out)  # Ray Train's account of it, with its cause
    assert "Source: worker group" in retry and (f"pid={victim}" in retry or peer_closed(retry)), retry
    # The killed worker could not remove its scratch directory (its checkpoint of the epoch, perhaps); the
    # worker that replaced it on this host swept it.
    assert not [p for p in Path(tempfile.gettempdir()).glob("scaleout-scratch-*") if f"-{victim}-" in p.name]


def test_a_killed_worker_past_max_failures_ends_the_job_in_one_line_naming_its_process(cluster, tmp_path):
    root = small_run(tmp_path)
    job = started_job(cluster, "--run", root, "--epochs", 30, *SMALL, "--max-failures", 0)
    try:
        wait_for_checkpoint(root, job)
        victim, out = kill_a_worker(cluster, job)
    finally:
        if job.poll() is None:
            job.kill()
    assert job.returncode != 0, out[-4000:]
    # One error line: `ray job submit` may print it twice, as the job's log streams and again in the failed job's
    # "Status message", which quotes the log's last lines (Ray's job_supervisor); both copies are that one line.
    mark = "jobs/train.py: error:"
    errors = {line[line.index(mark):] for line in out.splitlines() if mark in line}
    assert len(errors) == 1, out[-4000:]
    [said] = errors
    # one clause a failed worker (the other may fail too, its collective cut), not Ray's pages of tracebacks
    assert said.startswith("jobs/train.py: error: Ray training failed (--max-failures 0): worker "), said
    assert f"its process (pid {victim} on " in said and ") ended (" in said and "Error Snippet" not in said, said
    assert "Ray Train's whole error:" in out and "[Rank " in out  # the whole of it logged before
    assert not (root / "model").exists()


def test_a_worker_killed_within_an_epoch_resumes_at_its_step_and_trains_as_if_never_stopped(cluster, tmp_path):
    """A checkpoint 8 steps into each epoch (``--checkpoint-every-steps``): a worker killed mid-run is replaced,
    the group resumes at the step of the newest checkpoint, each worker's input where it left it, and every
    epoch's loss is the uninterrupted run's (one thread a worker: the same arithmetic in the same order). Three
    shards for two workers: worker 0 holds two (about 31 batches a pass), worker 1 one (15), and an epoch is 15
    steps, so worker 0's epochs begin within its passes, where a resume must find them. The interrupted run's
    all-reduce travels over the socket ring (the default), the uninterrupted one's as TensorFlow's collective
    (``--allreduce-transport tensorflow``): the killed worker's peer fails its step on the closed socket, the new
    group builds a new ring, and the two transports sum the same bits. Each epoch trains at its own rate
    (``--learning-rate-schedule cosine``), the resumed epoch's rest too."""
    root = small_run(tmp_path, shards=3)
    again = tmp_path / "again"
    shutil.copytree(root / "data", again / "data")
    common = ["--epochs", 5, *SMALL, "--steps-per-execution", 4, "--no-evaluate", "--learning-rate-schedule", "cosine"]
    job = started_job(cluster, "--run", root, *common, "--checkpoint-every", 100, "--checkpoint-every-steps", 8,
                      "--checkpoint-min-interval", 0)
    try:
        deadline = time.monotonic() + 300
        while (state := latest_checkpoint_state(str(root / "checkpoints"))) is None or state["epoch"] < 1:
            assert job.poll() is None and time.monotonic() < deadline, "no checkpoint within epoch 2 or later"
            time.sleep(0.1)
        assert state["step"] == 8 and state["partial"]["loss_sum"] > 0  # within an epoch: no epoch's ends kept
        _, out = kill_a_worker(cluster, job)
    finally:
        if job.poll() is None:
            job.kill()
    assert job.returncode == 0, out[-4000:]
    assert "checkpoint of step 8/" in out, out[-4000:]
    interrupted = train_json(root)
    [resumed] = [e for e in interrupted["epochs"] if "resumed_at_step" in e]
    assert resumed["resumed_at_step"] == 8, resumed
    assert f"resuming from the checkpoint at step {resumed['resumed_at_step']} of " in out
    assert interrupted["resumed_at_epochs"] == [resumed["epoch"] - 1]
    assert all(e["checkpoints_within"] == 1 for e in interrupted["epochs"] if e["epoch"] > resumed["epoch"])
    assert [c["op"] for c in interrupted["collectives_per_step"]] == ["ring_all_reduce"]
    assert out.count("the step's all-reduce over a socket ring: worker 0 sends to worker 1 at ") >= 2, out[-4000:]

    result = run_cli("train", "--run", again, "--backend", "ray", "--address", cluster.address, *common,
                     "--allreduce-transport", "tensorflow", env=cluster.env)
    assert result.returncode == 0, result.stderr[-4000:]
    uninterrupted = train_json(again)
    assert [c["op"] for c in uninterrupted["collectives_per_step"]] == ["CollectiveReduceV2"]
    assert [e["epoch"] for e in interrupted["epochs"]] == [e["epoch"] for e in uninterrupted["epochs"]] == [1, 2, 3,
                                                                                                           4, 5]
    np.testing.assert_allclose([e["loss_per_example"] for e in interrupted["epochs"]],
                               [e["loss_per_example"] for e in uninterrupted["epochs"]], rtol=1e-6)
    rate = interrupted["model"]["learning_rate"]
    for run in (interrupted, uninterrupted):
        np.testing.assert_allclose([e["learning_rate"] for e in run["epochs"]],
                                   [rate * (1 + math.cos(math.pi * (e - 0.5) / 5)) / 2 for e in range(1, 6)], rtol=1e-6)


def test_resume_continues_an_interrupted_run_and_refuses_other_settings(cluster, tmp_path):
    """A Ray run stopped by `ray job stop` is refused a resume with other settings and a start without --resume,
    continues with --resume on Ray (with another all-reduce dtype), then continues in one process."""
    root = small_run(tmp_path)
    job_id = f"scaleout-test-{uuid.uuid4().hex[:8]}"
    # Interrupted while it waits for each upload of a checkpoint every epoch (no least interval), resumed
    # uploading in the background at the default interval.
    started = cluster.ray(*submit_args(cluster, "--run", root, "--epochs", 8, *SMALL, "--checkpoint-upload", "sync",
                                       "--checkpoint-min-interval", 0, submission_id=job_id))
    assert started.returncode == 0, started.stderr
    assert wait_for_checkpoint(root)["checkpoint_upload"] == "sync"
    stopped = cluster.ray("job", "stop", "--address", cluster.dashboard, job_id)
    assert stopped.returncode == 0, stopped.stderr
    status = cluster.ray("job", "status", "--address", cluster.dashboard, job_id)
    assert "was stopped" in status.stdout + status.stderr
    # The driver ended on ray job stop's SIGTERM with its line, not the SIGKILL that follows 3 s later.
    logs = cluster.ray("job", "logs", "--address", cluster.dashboard, job_id)
    assert "jobs/train.py: stopped by SIGTERM;" in logs.stdout, logs.stdout[-3000:]
    assert not (root / "model").exists()
    interrupted = latest_checkpoint_state(str(root / "checkpoints"))
    interrupted_at = interrupted["epoch"]
    assert interrupted_at < 8
    assert all("checkpoint_stall_seconds" in e for e in interrupted["history"][:-1])  # every epoch's kept
    # The interrupted workers all-reduced in the preset's bfloat16 over the socket ring, as they traced their step.
    assert [(c["op"], c["dtype"]) for c in interrupted["collectives_per_step"]] == [("ring_all_reduce", "bfloat16")]

    refused = run_cli("train", "--run", root, "--backend", "ray", "--address", cluster.address, "--resume",
                      "--epochs", 8, *SMALL, "--embedding-dim", 64, env=cluster.env)
    assert refused.returncode == 1
    assert "trained with other settings (model.embedding_dim: checkpoint 128, now 64)" in refused.stderr

    without_resume = run_cli("train", "--run", root, "--backend", "ray", "--address", cluster.address,
                             "--epochs", 8, *SMALL, env=cluster.env)
    assert without_resume.returncode == 1 and "pass --resume to continue it" in without_resume.stderr

    # Resumed with a float32 all-reduce (the preset's is bfloat16) as TensorFlow's collective (the default is the
    # socket ring): how the workers exchange gradients is not the model's identity.
    resumed = cluster.ray(*submit_args(cluster, "--run", root, "--epochs", 8, *SMALL, "--resume",
                                       "--allreduce-dtype", "float32", "--allreduce-transport", "tensorflow"))
    out = resumed.stdout + resumed.stderr
    assert resumed.returncode == 0, out[-4000:]
    assert f"resuming from the checkpoint of epoch {interrupted_at}/8" in out
    trained = train_json(root)
    assert [e["epoch"] for e in trained["epochs"]] == list(range(1, 9))
    assert trained["resumed_at_epochs"] == [interrupted_at]
    assert "and its upload started in" in out and trained["train"]["checkpoint_upload"] == "async"
    [packed] = trained["collectives_per_step"]  # as the resumed workers traced their step
    assert (packed["op"], packed["dtype"]) == ("CollectiveReduceV2", "float32")
    assert (trained["train"]["allreduce_dtype"], trained["train"]["allreduce_transport"]) == ("float32", "tensorflow")

    # Continued in one process from the Ray run's last checkpoint (a cluster gone, say): two more epochs, Ray
    # Train's checkpoints left as they are, the local backend's own removed once the model is saved.
    ray_kept = sorted(p.name for p in (root / "checkpoints" / RUN_NAME).iterdir())
    local = run_cli("train", "--run", root, "--epochs", 10, *SMALL, "--resume")
    assert local.returncode == 0, local.stderr[-3000:]
    assert "resuming from the checkpoint of epoch 8/10" in local.stderr and "epochs 9-10 remain" in local.stderr
    continued = train_json(root)
    assert continued["backend"] == "local" and [e["epoch"] for e in continued["epochs"]] == list(range(1, 11))
    assert continued["resumed_at_epochs"] == [interrupted_at, 8]
    assert sorted(p.name for p in (root / "checkpoints" / RUN_NAME).iterdir()) == ray_kept


def test_impossible_settings_fail_before_training(cluster, tmp_path):
    root = small_run(tmp_path)
    too_many = run_cli("train", "--run", root, "--backend", "ray", "--address", cluster.address, "--workers", 3,
                       "--batch-size", 1023, env=cluster.env)
    assert too_many.returncode == 1
    assert "3 workers x 1 CPU need 3 CPUs; the Ray cluster has 2" in too_many.stderr
    assert not (root / "checkpoints" / RUN_NAME).exists()
    unreachable = run_cli("train", "--run", root, "--backend", "ray", "--address", "127.0.0.1:1", env=cluster.env)
    assert unreachable.returncode == 1 and "cannot reach the Ray cluster at 127.0.0.1:1" in unreachable.stderr


def test_a_diverging_run_on_two_workers_stops_once_with_one_line_and_saves_nothing(cluster, tmp_path):
    root = small_run(tmp_path)
    result = run_cli("train", "--run", root, "--backend", "ray", "--address", cluster.address, "--epochs", 3,
                     "--optimizer", "sgd", "--learning-rate", "1e30", *SMALL, env=cluster.env)
    assert result.returncode == 1, result.stderr[-3000:]
    errors = [line for line in result.stderr.splitlines() if line.startswith("scaleout train: error:")]
    assert len(errors) == 1 and "training diverged: the loss was nan by step" in errors[0]
    assert "resuming from the checkpoint" not in result.stderr  # not restarted into the same divergence
    assert not (root / "model").exists()


def test_more_embedding_workers_than_the_cluster_has_cpus_for_are_refused_before_any_work(cluster, pipeline_run,
                                                                                           tmp_path):
    # Ray Data's actor pool would wait ten minutes for a third CPU (wait_for_min_actors_s), then fail
    root = tmp_path / "run"
    for part in ("data", "model"):
        shutil.copytree(pipeline_run[0] / part, root / part)
    result = run_cli("index", "--run", root, "--backend", "ray", "--address", cluster.address, "--workers", 3,
                     env=cluster.env)
    assert result.returncode == 1, result.stderr[-3000:]
    assert result.stderr.splitlines()[-1] == ("scaleout index: error: 3 embedding workers x 1 CPU need 3 CPUs; the "
                                              "Ray cluster has 2")
    # the towers are recorded in artifacts.json as checked; no plan, part, embeddings or index begun
    assert sorted(p.name for p in root.iterdir()) == ["artifacts.json", "data", "model"]


FRESH_QUERY = """
import sys, json
import scann  # registers ScaNN's ops for the ScaNN export; TensorFlow alone serves the BruteForce one
import tensorflow as tf
serve = tf.saved_model.load(sys.argv[1] + "/saved_model").signatures["serving_default"]
out = serve(user_id=tf.constant(["42", "7", "500"]))
print(json.dumps([[m.decode() for m in row] for row in out["movie_id"].numpy()]))
"""


def test_the_embed_and_index_job_through_ray_job_submit(cluster, pipeline_run, tmp_path):
    local_root = pipeline_run[0]
    root = tmp_path / "run"
    for part in ("data", "model"):
        shutil.copytree(local_root / part, root / part)
    result = cluster.ray(*submit_args(cluster, "--run", root, "--workers", 2, "--part-rows", 300,
                                      "--export", "brute_force", "scann", job="jobs/embed_index.py"))
    out = result.stdout + result.stderr
    assert result.returncode == 0, out[-4000:]
    assert "embedding 1,682 candidates in 6 parts with ray (2 workers)" in out
    assert "embedded part 6/6: 1,682 of 1,682 candidates (100%)" in out
    embeddings = json.loads((root / "embeddings" / "embeddings.json").read_text())
    # Two actors in the pool; which embeds which part is Ray Data's choice: with six small parts the
    # actor that is ready first can take them all (seen once in CI), so both need not appear.
    assert embeddings["job"]["backend"] == "ray" and embeddings["job"]["workers"] == 2
    assert 1 <= len(embeddings["job"]["per_worker_candidates_per_s"]) <= 2
    assert embeddings["job"]["embedded_now"] == 1682
    # The same model gives the same embeddings as the one-process pipeline, part layout aside.
    from scaleout.embed.embedding_set import EmbeddingSet

    ids, vectors, _ = EmbeddingSet(root / "embeddings").load()
    ref_ids, ref_vectors, _ = EmbeddingSet(local_root / "embeddings").load()
    assert sorted(ids) == sorted(ref_ids)
    np.testing.assert_allclose(vectors[np.argsort(ids)], ref_vectors[np.argsort(ref_ids)], rtol=1e-6)
    through = json.loads((root / "metrics" / "index_eval.json").read_text())
    local = json.loads((local_root / "metrics" / "index_eval.json").read_text())
    name = "factorized_top_k/top_100_categorical_accuracy"
    assert through["scann"][name] == pytest.approx(local["scann"][name], abs=1e-6)
    for kind in ("brute_force", "scann"):
        answers = []
        for export in (root / "export" / kind, local_root / "export" / kind):
            fresh = subprocess.run([sys.executable, "-c", FRESH_QUERY, str(export)], capture_output=True, text=True)
            assert fresh.returncode == 0, fresh.stderr[-3000:]
            answers.append(json.loads(fresh.stdout))
        assert answers[0] == answers[1], kind
    verify = run_cli("verify", "--run", root)
    assert verify.returncode == 0 and "ok  export/scann" in verify.stdout
