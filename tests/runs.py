"""Helpers of the tests that work on a trained run: copies of it, answers from its exports and indexes."""

import json
import shutil
import subprocess
import sys

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

FRESH_SCANN_QUERY = """
import sys, json
import scann  # registers ScaNN's TensorFlow ops; neither scaleout nor TFRS is imported
import tensorflow as tf
serve = tf.saved_model.load(sys.argv[1] + "/saved_model").signatures["serving_default"]
out = serve(user_id=tf.constant(sys.argv[2].split(",")))
print(json.dumps({"ids": [[m.decode() for m in row] for row in out["movie_id"].numpy()],
                  "titles": [t.decode() for t in out["movie_title"].numpy()[0]],
                  "signature_k": serve.structured_outputs["scores"].shape.as_list()[1]}))
"""

NO_SCANN = """
import sys
sys.modules["scann"] = None  # as where ScaNN is not installed: `import scann` raises ImportError
from scaleout.cli import main
sys.exit(main(sys.argv[1:]))
"""

USERS = [str(u) for u in range(1, 60)]


def top3(stdout):
    lines = [line for line in stdout.splitlines() if line.startswith("  ")]
    return [line.split(". ", 1)[1].rsplit("  (movie_id", 1)[0] for line in lines]


def fresh_query(export_dir, users):
    fresh = subprocess.run([sys.executable, "-c", FRESH_SCANN_QUERY, str(export_dir), ",".join(users)],
                           capture_output=True, text=True)
    assert fresh.returncode == 0, fresh.stderr[-3000:]
    return json.loads(fresh.stdout)


def in_process_answers(root, users, k=10):
    from scaleout.embed.embedding_set import EmbeddingSet
    from scaleout.index.build import open_index
    from scaleout.rundir import RunDir
    from scaleout.train.saved import Towers
    from scaleout.train.towers import embed_users

    run = RunDir(root)
    index = open_index(run, "scann", EmbeddingSet(run.embeddings))
    queries = embed_users(Towers.load(run.model, None).query, users)
    return index, index.search(queries, k)[1].tolist()


def copy_trained(src, dst):
    for part in ("data", "model"):
        shutil.copytree(src / part, dst / part)
    return dst


def write_embeddings(path, ids, vectors):
    pq.write_table(pa.table({"movie_id": pa.array(ids, pa.string()),
                             "embedding": pa.array([list(map(float, v)) for v in vectors], pa.list_(pa.float32()))}),
                   path)


def read_scalars(directory):
    """{tag: {step: value}} of the TensorBoard event files in ``directory``."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    from scaleout.tfenv import tf

    events = EventAccumulator(str(directory), size_guidance={"tensors": 0})
    events.Reload()
    return {tag: {e.step: float(tf.make_ndarray(e.tensor_proto)) for e in events.Tensors(tag)}
            for tag in events.Tags()["tensors"]}


def trained_and_indexed(pipeline_run, root, train_args):
    """The main job's prepared data copied to ``root``, trained with ``train_args``, embedded, indexed (ScaNN
    forced into a tree) and exported (ScaNN and brute force)."""
    from conftest import run_cli  # (conftest imports this module)

    shutil.copytree(pipeline_run[0] / "data", root / "data")
    for args in (("train", *train_args),
                 ("index", "--scann-mode", "tree", "--num-leaves", 40, "--leaves-fraction", 0.5, "--no-eval",
                  "--export", "scann", "brute_force")):
        result = run_cli(args[0], "--run", root, *args[1:])
        assert result.returncode == 0, result.stderr[-3000:]
    return root


def top10(ids, scores):
    """Each row's 10 best ids by ``scores``, ties in id order."""
    return [[ids[j] for j in np.argsort(-row, kind="stable")[:10]] for row in scores]
