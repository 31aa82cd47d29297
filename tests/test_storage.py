"""Object storage against a real S3-compatible server (moto on 127.0.0.1): committed directories, the guarantees
of a rename kept without one, one-line errors before any work, and every stage on an s3:// run."""

import json
import signal
import time

import pytest

from conftest import SMALL_RUN, run_cli
from raycluster import free_port
from s3server import local_s3, with_s3_env
from test_kill import start
from scaleout import storage
from scaleout.train.checkpoints import RUN_NAME, STATE, latest_checkpoint_state
from scaleout.train.local import PREFIX
from scaleout.errors import ArtifactError, ScaleoutError
from scaleout.rundir import opened
from scaleout.runlock import LOCK


@pytest.fixture(scope="module")
def s3():
    with local_s3() as (env, make_bucket):
        undo = with_s3_env(env)
        try:
            yield env, make_bucket
        finally:
            undo()


@pytest.fixture
def bucket(s3, request):
    name = "t-" + request.node.name.replace("_", "-")[:50].strip("-").lower()
    return s3[1](name)


def tree(root, files):
    for name, text in files.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text(text)
    return root


def test_a_committed_directory_comes_back_whole_and_checked(bucket, tmp_path):
    src = tree(tmp_path / "src", {"manifest.json": "{}", "a/b.bin": "bytes"})
    record = storage.commit_dir(src, f"{bucket}/run/data", "test")
    assert set(record["files"]) == {"manifest.json", "a/b.bin"}
    storage.fetch_dir(f"{bucket}/run/data", tmp_path / "back")
    assert (tmp_path / "back" / "a" / "b.bin").read_text() == "bytes"
    # An object changed behind the record is refused, by name.
    storage.write_bytes(f"{bucket}/run/data/{record['generation']}/a/b.bin", b"other")
    with pytest.raises(ArtifactError, match=r"a/b.bin: checksum differs"):
        storage.fetch_dir(f"{bucket}/run/data", tmp_path / "again")


def test_a_failed_upload_leaves_the_previous_output_and_the_next_one_clears_it(bucket, tmp_path, monkeypatch):
    uri = f"{bucket}/run/model"
    first = storage.commit_dir(tree(tmp_path / "v1", {"model.json": "1", "w.bin": "one"}), uri, "test")
    calls = []
    real = storage.upload_file

    def failing(local, target):
        calls.append(target)
        if len(calls) == 2:
            raise OSError("connection reset (injected)")
        real(local, target)

    monkeypatch.setattr(storage, "upload_file", failing)
    with pytest.raises(OSError, match="injected"):
        storage.commit_dir(tree(tmp_path / "v2", {"model.json": "2", "w.bin": "two"}), uri, "test")
    monkeypatch.setattr(storage, "upload_file", real)
    assert storage.read_commit(uri) == first  # readers still see version 1, whole
    storage.fetch_dir(uri, tmp_path / "read")
    assert (tmp_path / "read" / "w.bin").read_text() == "one"
    generations = {name.split("/")[0] for name in storage.list_files(uri) if name.startswith("g-")}
    assert len(generations) == 2  # the half-written one is there, unnamed by the record
    third = storage.commit_dir(tree(tmp_path / "v3", {"model.json": "3", "w.bin": "three"}), uri, "test")
    assert {name.split("/")[0] for name in storage.list_files(uri) if name.startswith("g-")} == {third["generation"]}


def test_objects_scaleout_did_not_write_are_never_replaced(bucket, tmp_path):
    storage.write_bytes(f"{bucket}/theirs/data/notes.txt", b"keep me")
    src = tree(tmp_path / "src", {"manifest.json": "{}"})
    with pytest.raises(ArtifactError, match=r"not written by scaleout \(no _scaleout.json; it holds notes.txt\)"):
        storage.commit_dir(src, f"{bucket}/theirs/data", "test")
    assert storage.read_bytes(f"{bucket}/theirs/data/notes.txt") == b"keep me"
    result = run_cli("prepare", "--run", f"{bucket}/theirs", *SMALL_RUN)
    assert result.returncode == 1 and "not written by scaleout" in result.stderr
    assert storage.read_bytes(f"{bucket}/theirs/data/notes.txt") == b"keep me"


def test_a_missing_bucket_or_an_unreachable_store_is_one_line_before_any_work(s3, tmp_path):
    missing = run_cli("train", "--run", "s3://no-such-bucket/runs/x")
    assert missing.returncode == 1
    assert missing.stderr.strip().splitlines()[-1] == (
        "scaleout train: error: s3://no-such-bucket/runs/x: the bucket 'no-such-bucket' does not exist "
        "(create it first)")
    started = time.monotonic()
    port = free_port()
    unreachable = run_cli("prepare", "--run", "s3://bucket/runs/x", *SMALL_RUN,
                          env={"AWS_ENDPOINT_URL_S3": f"http://127.0.0.1:{port}"})
    assert unreachable.returncode == 1
    last = unreachable.stderr.strip().splitlines()[-1]
    assert last == (f"scaleout prepare: error: s3://bucket/runs/x: the store cannot be reached "
                    f"(endpoint http://127.0.0.1:{port})"), unreachable.stderr[-2000:]
    assert "Traceback" not in unreachable.stderr
    assert time.monotonic() - started < 120  # bounded retries, not a hang


def test_a_run_in_use_is_refused_and_a_dead_holders_lock_is_taken_over(bucket):
    run = f"{bucket}/runs/locked"
    with opened(run, "scaleout train"):
        holder = json.loads(storage.read_bytes(f"{run}/{LOCK}"))
        with pytest.raises(ScaleoutError, match=rf"is in use by pid {holder['pid']} .*\(scaleout train, started"):
            with opened(run, "scaleout index"):
                pass
    assert not storage.exists(f"{run}/{LOCK}")  # released
    storage.write_bytes(f"{run}/{LOCK}", json.dumps({"pid": 1, "host": "gone", "renewed": time.time() - 3600})
                        .encode())
    with opened(run, "scaleout index"):  # a lock not renewed for an hour is stale
        pass


@pytest.mark.slow
def test_every_stage_runs_on_an_s3_run_directory(bucket, tmp_path, ml100k):
    run = f"{bucket}/runs/small"
    for f in ml100k.iterdir():  # a source in the store too
        if f.is_file():
            storage.upload_file(f, f"{bucket}/sources/ml-100k/{f.name}")
    steps = [
        ("prepare", "--out", f"{bucket}/datasets/ml-100k", "--source", "movielens", "--path",
         f"{bucket}/sources/ml-100k"),
        ("prepare", "--run", run, *SMALL_RUN),
        ("train", "--run", run, "--epochs", 1, "--batch-size", 512),
        ("evaluate", "--run", run),
        ("index", "--run", run, "--scann-mode", "ah", "--part-rows", 50, "--export", "brute_force", "scann"),
        ("evaluate", "--run", run, "--indexes", "brute_force", "scann"),
        ("quality", "--run", run),
        ("export", "--run", run, "--kind", "brute_force", "--out", f"{bucket}/exports/bf", "-k", 5),
        ("prepare", "--out", f"{bucket}/datasets/small", *SMALL_RUN),
    ]
    for args in steps:
        result = run_cli(*args)
        assert result.returncode == 0, (args, result.stderr[-3000:])
    listed = storage.list_files(run)
    for stage in ("data", "model", "embeddings", "index/brute_force", "index/scann", "export/brute_force",
                  "export/scann"):
        assert f"{stage}/{storage.COMMIT}" in listed
    for name in ("train", "eval", "index_eval", "quality"):
        assert f"metrics/{name}.json" in listed
    assert "artifacts.json" in listed and LOCK not in listed
    embeddings = storage.read_commit(f"{run}/embeddings")
    assert sum(name.startswith("part-") for name in embeddings["files"]) == 3  # 120 candidates, 50 a part

    ml = storage.read_commit(f"{bucket}/datasets/ml-100k")
    assert json.loads(storage.read_bytes(f"{bucket}/datasets/ml-100k/{ml['generation']}/manifest.json"))[
        "counts"]["interactions"] == 100_000

    by_run = run_cli("recommend", "--run", run, "--user", "5", "-k", 3, "--index", "scann")
    by_export = run_cli("recommend", "--saved-model", f"{bucket}/exports/bf", "--user", "5", "-k", 3)
    assert by_run.returncode == 0 and by_export.returncode == 0, by_run.stderr[-2000:] + by_export.stderr[-2000:]
    assert by_export.stdout.count("movie_id") == 3
    verified = run_cli("verify", "--run", run)
    assert verified.returncode == 0 and "ok  embeddings" in verified.stdout, verified.stdout + verified.stderr

    # Candidates and embeddings from the store too: the indexes rebuilt from the run's own embeddings, exported.
    emb = storage.read_commit(f"{run}/embeddings")
    parts = f"{run}/embeddings/{emb['generation']}"
    again = run_cli("index", "--run", run, "--embeddings", parts, "--candidates",
                    f"{run}/data/{storage.read_commit(run + '/data')['generation']}/candidates.parquet")
    assert again.returncode == 0, again.stderr[-3000:]
    assert json.loads(again.stdout)["embeddings"]["candidates"] == 120


def test_refused_credentials_and_a_read_only_policy_are_one_line_before_any_work(tmp_path):
    import boto3

    # moto checks credentials and IAM policies after the 4 set-up requests below.
    with local_s3(authenticate_after=4) as (env, _):
        endpoint = env["AWS_ENDPOINT_URL_S3"]
        admin = {"endpoint_url": endpoint, "region_name": "us-east-1", "aws_access_key_id": "test",
                 "aws_secret_access_key": "test"}
        boto3.client("s3", **admin).create_bucket(Bucket="guarded")
        iam = boto3.client("iam", **admin)
        iam.create_user(UserName="reader")
        iam.put_user_policy(UserName="reader", PolicyName="read-only", PolicyDocument=json.dumps({
            "Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": ["s3:GetObject", "s3:ListBucket"],
                                                     "Resource": ["arn:aws:s3:::guarded", "arn:aws:s3:::guarded/*"]}]}))
        key = iam.create_access_key(UserName="reader")["AccessKey"]

        wrong = run_cli("train", "--run", "s3://guarded/runs/x", env={**env, "AWS_ACCESS_KEY_ID": "AKIAWRONGWRONGWRONG1",
                                                                      "AWS_SECRET_ACCESS_KEY": "nope"})
        assert wrong.returncode == 1 and "Traceback" not in wrong.stderr
        assert wrong.stderr.strip().splitlines()[-1] == (
            "scaleout train: error: s3://guarded/runs/x: access to s3://guarded/runs/x is denied (check the "
            "credentials or the instance profile's policy)"), wrong.stderr[-2000:]

        reader = run_cli("prepare", "--run", "s3://guarded/runs/x", *SMALL_RUN,
                         env={**env, "AWS_ACCESS_KEY_ID": key["AccessKeyId"],
                              "AWS_SECRET_ACCESS_KEY": key["SecretAccessKey"]})
        assert reader.returncode == 1 and "Traceback" not in reader.stderr
        assert reader.stderr.strip().splitlines()[-1] == (
            "scaleout prepare: error: s3://guarded/runs/x: access to s3://guarded/runs/x is denied (check the "
            "credentials or the instance profile's policy)"), reader.stderr[-2000:]
        assert "prepare: 4,000 interactions read" not in reader.stderr  # refused before any work


def test_files_already_in_the_store_are_copied_there_only_when_their_checksum_matches(bucket, tmp_path, caplog):
    import logging

    from scaleout.fsutil import sha256

    src = tree(tmp_path / "set", {"part-00000.parquet": "zero", "part-00001.parquet": "one", "embeddings.json": "{}"})
    storage.write_bytes(f"{bucket}/work/part-00000.parquet", b"zero")
    storage.write_bytes(f"{bucket}/work/part-00001.parquet", b"stale")  # its sidecar's checksum is not ours
    in_store = {"part-00000.parquet": (f"{bucket}/work/part-00000.parquet", sha256(src / "part-00000.parquet")),
                "part-00001.parquet": (f"{bucket}/work/part-00001.parquet", "0" * 64)}
    with caplog.at_level(logging.INFO, logger="scaleout.storage"):
        storage.commit_dir(src, f"{bucket}/run/embeddings", "test", in_store=in_store)
    assert "1 copied within the store" in caplog.text
    storage.fetch_dir(f"{bucket}/run/embeddings", tmp_path / "back")  # every file checked against the record
    assert (tmp_path / "back" / "part-00001.parquet").read_text() == "one"


def test_errors_name_the_store_never_the_local_mirror(bucket):
    result = run_cli("index", "--run", f"{bucket}/runs/empty")
    assert result.returncode == 1
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith(f"scaleout index: error: {bucket}/runs/empty/"), last
    assert "scaleout-scratch-" not in last


@pytest.mark.slow
def test_a_local_backend_main_job_in_the_store_resumes_from_its_checkpoint_there(bucket):
    """The local backend's checkpoints of a run on object storage go to the store (state.json last); a main job
    stopped there (SIGTERM, as a scheduler or `ray job stop` sends) continues with --resume on the data it
    committed (not prepared again) from the store's newest checkpoint, and removes them once its model is
    committed."""
    run = f"{bucket}/runs/resumed"
    train = ("pipeline", "--run", run, *SMALL_RUN, "--epochs", 30, "--batch-size", 64, "--checkpoint-min-interval",
             0, "--skip", "through_index", "export", "quality")
    process = start(*train)
    second = f"{run}/checkpoints/{RUN_NAME}/{PREFIX}000002/{STATE}"
    deadline = time.monotonic() + 120
    while not storage.exists(second):
        assert process.poll() is None and time.monotonic() < deadline, "no second epoch's checkpoint in the store"
        time.sleep(0.01)
    process.send_signal(signal.SIGTERM)
    process.communicate(timeout=120)
    assert process.returncode == 128 + signal.SIGTERM
    state = latest_checkpoint_state(f"{run}/checkpoints")
    assert state is not None and 2 <= state["epoch"] < 30 and f"model/{storage.COMMIT}" not in storage.list_files(run)
    data = storage.read_bytes(f"{run}/data/{storage.COMMIT}")
    resumed = run_cli(*train, "--resume")
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert "prepare: --resume continues on" in resumed.stderr
    assert storage.read_bytes(f"{run}/data/{storage.COMMIT}") == data
    assert f"resuming from the checkpoint of epoch {state['epoch']}/30" in resumed.stderr
    listed = storage.list_files(run)
    assert f"model/{storage.COMMIT}" in listed and not [name for name in listed if PREFIX in name]
    record = json.loads(storage.read_bytes(f"{run}/metrics/train.json"))
    assert record["resumed_at_epochs"] == [state["epoch"]] and len(record["epochs"]) == 30
