"""The whole pipeline on two Ray nodes that share no disk, with the run directory in an S3-compatible store.

The second node runs in its own mount namespace with an empty tmpfs over the
head's temp files (where the job's driver keeps its local mirror), so any
stage that handed a local path to the other node fails here as it would on a
real cluster. The job is submitted as users submit it (`ray job submit`), a
training worker is killed mid-run, and everything is read back from the store.
"""

import json
import subprocess

import numpy as np
import psutil
import pytest

from conftest import REPO, SMALL_RUN, run_cli
from raycluster import two_node_cluster
from s3server import local_s3, wait_until, with_s3_env
from scaleout import storage
from scaleout.data.dataset import Dataset
from scaleout.train.features import history_table, timestamp_table
from scaleout.train.checkpoints import latest_checkpoint_state
from scaleout.train.saved import Towers


@pytest.fixture(scope="module")
def s3_for_nodes():
    with local_s3() as server:
        yield server


@pytest.fixture(scope="module")
def two_nodes(s3_for_nodes):
    env, _ = s3_for_nodes
    undo = with_s3_env(env)
    try:
        with two_node_cluster(env) as (cluster, hidden):
            yield cluster, hidden
    finally:
        undo()


def node_names(cluster) -> dict[str, str]:
    """node id -> node_a / node_b (the custom resource each node was started with)."""
    return {n["node_id"]: next(r for r in ("node_a", "node_b") if r in n["resources_total"])
            for n in cluster.state("nodes")}


def test_the_second_node_cannot_see_the_heads_files(two_nodes):
    cluster, hidden = two_nodes
    marker = hidden / "tmp" / "visible-to-node-a-only"
    marker.write_text("x")
    code = ("import os, ray; ray.init(); print('SEEN', ray.get([ray.remote(num_cpus=0, resources={r: 1})("
            f"os.path.exists).remote({str(marker)!r}) for r in ('node_a', 'node_b')]))")
    result = cluster.ray("job", "submit", "--address", cluster.dashboard, "--", "python", "-c", code)
    assert "SEEN [True, False]" in result.stdout, result.stdout[-2000:] + result.stderr[-2000:]


def test_a_client_without_the_token_is_refused(two_nodes):
    cluster, _ = two_nodes
    env = {k: v for k, v in cluster.env.items() if not k.startswith("RAY_AUTH")}
    refused = subprocess.run([cluster.env["PATH"].split(":")[0] + "/ray", "job", "list", "--address",
                              cluster.dashboard], env=env, capture_output=True, text=True, timeout=120)
    assert refused.returncode != 0
    assert "auth" in (refused.stdout + refused.stderr).lower()


def test_pipeline_on_two_nodes_with_the_run_in_s3(two_nodes, s3_for_nodes, pipeline_run, ml100k):
    cluster, hidden = two_nodes
    _, make_bucket = s3_for_nodes
    run = f"{make_bucket('scaleout-e2e')}/runs/ml-100k"
    before = subprocess.run(["git", "status", "--porcelain"], cwd=REPO, capture_output=True,
                            text=True).stdout
    job = subprocess.Popen(
        [cluster.env["PATH"].split(":")[0] + "/ray", "job", "submit", "--address", cluster.dashboard,
         "--working-dir", str(REPO), "--", "scaleout", "pipeline", "--run", run, "--source", "movielens",
         "--path", str(ml100k), "--backend", "ray", "--workers", "2"],
        env=cluster.env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        # A worker killed once the first checkpoint is in the store: Ray Train restarts the group from it.
        state = wait_until(lambda: job.poll() is None and latest_checkpoint_state(f"{run}/checkpoints")
                           or (job.poll() is not None and {"ended": True}), 900, "the first checkpoint in the store")
        assert "ended" not in state, job.communicate()[0][-4000:]
        workers = wait_until(lambda: cluster.processes("ray::RayTrainWorker"), 60, "the training workers")
        victim = workers[-1]
        victim.kill()
        psutil.wait_procs([victim], timeout=30)
        out, _ = job.communicate(timeout=1800)
    finally:
        if job.poll() is None:
            job.kill()
    assert job.returncode == 0, out[-6000:]
    assert "resuming from the checkpoint of epoch" in out, out[-4000:]

    # Placement, from Ray's state API: training workers on both nodes, embedding actors on both nodes.
    names = node_names(cluster)
    trainers = cluster.state("actors", "class_name=RayTrainWorker")
    assert {names[a["node_id"]] for a in trainers} == {"node_a", "node_b"}, trainers
    actors = cluster.state("actors")
    # MapWorker(...MapBatches(PartEmbedder)); one the pool asked for but never placed has no node.
    embedders = [a for a in actors if "PartEmbedder" in a["class_name"] and a.get("node_id")]
    assert {names[a["node_id"]] for a in embedders} == {"node_a", "node_b"}, [
        (a["class_name"], names.get(a.get("node_id")), a["state"]) for a in actors]

    # The run, read back from the store: every stage committed, the restart recorded, quality as one process.
    listed = storage.list_files(run)
    for stage in ("data", "model", "embeddings", "index/brute_force", "index/scann", "export/brute_force",
                  "export/scann"):
        assert f"{stage}/{storage.COMMIT}" in listed, stage
    assert not any(name.startswith(".embeddings.partial") for name in listed)
    trained = json.loads(storage.read_bytes(f"{run}/metrics/train.json"))
    assert trained["backend"] == "ray" and len(trained["resumed_at_epochs"]) == 1
    assert trained["resumed_at_epochs"][0] >= state["epoch"]
    # Two Ray nodes of one CPU each on this host: each sees the host's CPUs, so no worker may pin itself to one.
    assert trained["cpu_pinning"].startswith("not pinned: the Ray node has 1 CPU of the "), trained["cpu_pinning"]
    quality = json.loads(storage.read_bytes(f"{run}/metrics/quality.json"))["model"]["exclude_seen"]
    local = pipeline_run[1]["quality"]["model"]["exclude_seen"]
    for k in ("recall@10", "recall@100"):
        assert abs(quality[k] - local[k]) <= 0.02, (k, quality[k], local[k])
    embedded = json.loads(storage.read_bytes(
        f"{run}/embeddings/{storage.read_commit(f'{run}/embeddings')['generation']}/embeddings.json"))
    # A pool of 2 (both placed, above); which of them embeds the 2 small parts is Ray Data's choice.
    assert embedded["job"]["backend"] == "ray" and embedded["job"]["workers"] == 2

    # Nothing written outside the bucket and temporary directories: the working tree as it was, the
    # driver's mirror removed.
    after = subprocess.run(["git", "status", "--porcelain"], cwd=REPO, capture_output=True,
                           text=True).stdout
    assert after == before
    assert not list((hidden / "tmp").glob("scaleout-scratch-*"))

    # A user reads the results back from anywhere the store is reachable.
    rec = run_cli("recommend", "--run", run, "--user", "42", "-k", 5, env={})
    assert rec.returncode == 0 and rec.stdout.count("movie_id") == 5, rec.stderr[-2000:]
    verified = run_cli("verify", "--run", run)
    assert verified.returncode == 0 and "ok" in verified.stdout, verified.stdout + verified.stderr[-2000:]


def test_the_readme_jobs_train_then_embed_and_index_resuming_from_parts_in_the_store(two_nodes, s3_for_nodes,
                                                                                     tmp_path):
    """jobs/train.py and jobs/embed_index.py as the README runs them; the second stopped after some parts (in the
    store), then finished. The model reads the users' histories and timestamps: its tables are the whole train
    split's, though each worker fetched only its own shards."""
    cluster, _ = two_nodes
    _, make_bucket = s3_for_nodes
    run = f"{make_bucket('scaleout-jobs')}/runs/small"
    prepared = run_cli("prepare", "--run", run, *SMALL_RUN)
    assert prepared.returncode == 0, prepared.stderr[-3000:]

    def job(script, *args):
        return cluster.ray("job", "submit", "--address", cluster.dashboard, "--working-dir", str(REPO), "--",
                           "python", script, "--run", run, "--workers", 2, *args)

    trained = job("jobs/train.py", "--epochs", 2, "--batch-size", 512, "--history", 20, "--features", "timestamp",
                  "--profile-epoch", 2)
    assert trained.returncode == 0, trained.stdout[-4000:]
    assert storage.read_commit(f"{run}/model") is not None
    # Each worker's trace of epoch 2 went through the store (the second node's worker cannot write to the head's
    # disk), and the driver committed the profile with the run.
    profile_dir = tmp_path / "profile"
    storage.fetch_dir(f"{run}/metrics/profile", profile_dir)
    profile = json.loads((profile_dir / "profile.json").read_text())
    assert [w["worker"] for w in profile["workers"]] == [0, 1] and profile["epoch"] == 2
    assert list((profile_dir / "worker-1").rglob("*.xplane.pb"))
    assert json.loads(storage.read_bytes(f"{run}/metrics/train.json"))["backend"] == "ray"
    storage.fetch_dir(f"{run}/data", tmp_path / "data")
    storage.fetch_dir(f"{run}/model", tmp_path / "model")
    dataset = Dataset(tmp_path / "data")
    query = Towers.load(tmp_path / "model", dataset).query
    stored = next(layer for layer in query.layers if layer.name == "history_codes").table.numpy()
    np.testing.assert_array_equal(stored, history_table(dataset, 20))
    buckets = next(layer for layer in query.layers if layer.name == "timestamp_feature").boundaries
    np.testing.assert_allclose(buckets, timestamp_table(dataset.files("train"), dataset.users).boundaries)

    def submit(*args):
        return job("jobs/embed_index.py", "--part-rows", 30, *args)

    first = submit("--max-parts", 2)
    assert first.returncode == 0, first.stdout[-4000:]
    assert "stopped after 2 more parts as asked" in first.stdout
    partial = storage.list_files(f"{run}/.embeddings.partial")
    assert {"part-00000.json", "part-00001.json"} <= set(partial) and "part-00002.json" not in partial
    second = submit("--export", "scann")
    out = second.stdout + second.stderr
    assert second.returncode == 0, out[-4000:]
    assert "resuming: 2 of 4 parts (60 candidates) already embedded" in out
    assert "4 copied within the store" in out  # the actors' parts, not uploaded a second time by the driver
    assert storage.read_commit(f"{run}/export/scann") is not None
    assert not storage.list_files(f"{run}/.embeddings.partial")


def test_a_local_run_the_other_node_cannot_see_is_refused_before_any_work_and_a_shared_one_trains(two_nodes,
                                                                                                  tmp_path):
    """A run on the head's disk alone (under its temp directory, which the second node's tmpfs hides): both jobs
    refuse it naming what the other node cannot see, before starting a worker, where training failed inside Ray
    Train with a worker's "not a prepared dataset ... run `scaleout prepare` first". A run in a directory both
    nodes see trains on both."""
    cluster, hidden = two_nodes

    def job(script, run, *args):
        return cluster.ray("job", "submit", "--address", cluster.dashboard, "--working-dir", str(REPO), "--",
                           "python", script, "--run", run, "--workers", 2, *args)

    alone = hidden / "tmp" / "local-run"
    for args in (("prepare", "--run", alone, "--source", "synthetic", "--synthetic-interactions", 3000),
                 ("train", "--run", alone, "--epochs", 1)):  # in this process: one node's disk
        done = run_cli(*args)
        assert done.returncode == 0, done.stderr[-3000:]
    for script, what, path in (
            ("jobs/train.py", "the training data (or checkpoint directory)", alone / "data" / "manifest.json"),
            ("jobs/embed_index.py", "the model, candidates (or embeddings' folder)",
             alone / "model" / "candidate_tower" / "saved_model.pb")):
        refused = job(script, alone, *(("--epochs", 1) if script == "jobs/train.py" else ()))
        out = refused.stdout + refused.stderr
        assert refused.returncode != 0, out[-4000:]
        assert f"{script}: error: {what} {path} is on this machine's disk, and the Ray node " in out, out[-4000:]
        assert "cannot see it: workers placed there would not find it; on a cluster, give --run s3://" in out
        assert "RayTrainWorker" not in out and "PartEmbedder" not in out, out[-4000:]
    assert not list(alone.glob(".scaleout-node-check-*")) and not list(alone.rglob(".scaleout-node-check-*"))
    shared = tmp_path / "shared-run"  # outside the hidden directory: both nodes see it
    assert run_cli("prepare", "--run", shared, "--source", "synthetic", "--synthetic-interactions", 3000).returncode == 0
    trained = job("jobs/train.py", shared, "--epochs", 1)
    out = trained.stdout + trained.stderr
    assert trained.returncode == 0, out[-4000:]
    assert f"every one of the 2 Ray nodes sees {shared / 'data' / 'manifest.json'}, {shared / 'checkpoints'}" in out
    assert not list(shared.rglob(".scaleout-node-check-*"))
