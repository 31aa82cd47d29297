"""The training step under two replicas: the replicas' gradients and logged values summed in one packed
all-reduce (sparse gradients of small tables made dense, larger ones left sparse), global negatives by
gathering candidate rows or by sending the next batch's rows ahead in that all-reduce, several steps per
tf.function call. After two calls (of one or two steps) the weights and the epoch's summed loss are the
single process's over the same global batches. Runs in a fresh process (tests/two_replicas.py)."""

import json

import pytest
from two_replicas import run_on_two_cpus

SCRIPT = r"""
import json
import sys
import numpy as np

from scaleout.config import ModelConfig
from scaleout.train.model import build_model

OPTIONS, DENSE_BYTES, STEPS_PER_CALL, AHEAD = json.loads(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
SLOTS, DTYPE = sys.argv[5] == "slots", sys.argv[6]
users, items = [f"u{i}" for i in range(20)], [f"i{i}" for i in range(30)]
counts = np.arange(30) * 3 + 1
rng = np.random.default_rng(0)
rows = {"user_id": rng.choice(users, 16).astype(object), "movie_id": rng.choice(items[:6], 16).astype(object)}


def data():  # two global batches of 8; under the strategy each replica takes 4 rows of each
    return tf.data.Dataset.from_tensor_slices(rows).batch(8, drop_remainder=True)  # static shapes, as on Ray


def ahead():  # the same batches, endless, each with the next one's candidate ids (as tfdata's lookahead gives)
    following = data().repeat().skip(1).map(lambda b: b["movie_id"])
    if AHEAD == "wrong":  # ids that are not the next batch's
        following = following.map(lambda ids: tf.roll(ids, 1, axis=0))
    return tf.data.Dataset.zip((data().repeat(), following)).map(lambda b, n: {**b, "next_movie_id": n})


cfg = ModelConfig(embedding_dim=4, **OPTIONS)
single = build_model(cfg, users, items, candidate_counts=counts)
start = [w.copy() for w in single.get_weights()]
STEPS = 2 * STEPS_PER_CALL  # two calls of the train function: with rows sent ahead, the first gathers them
want = single.fit(data().repeat(), epochs=1, steps_per_epoch=STEPS, verbose=0).history
strategy = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])
with strategy.scope():
    model = build_model(cfg, users, items, candidate_counts=counts, steps_per_execution=STEPS_PER_CALL)
model.dense_gradient_bytes = DENSE_BYTES
model.slot_sparse_gradients = SLOTS
model.allreduce_dtype = DTYPE
model.set_weights(start)
try:
    got = model.fit(ahead() if AHEAD != "no" else data().repeat(), epochs=1, steps_per_epoch=STEPS, verbose=0).history
except tf.errors.InvalidArgumentError as exc:
    print(json.dumps({"error": exc.message}))
    sys.exit(0)
print(json.dumps({
    "loss_sum": got["loss_sum"], "want_loss_sum": want["loss_sum"], "global_rows_by": model.global_rows_by,
    "forms": sorted({f for n, f in model.gradient_forms.items() if "embeddings" in n}),
    "collective_dtypes": sorted({c["dtype"] for c in json.loads(model.collectives_json)}),
    "weight_diff": max(float(np.abs(g - w).max()) for g, w in zip(model.get_weights(), single.get_weights())),
    "moved": max(float(np.abs(w.numpy() - s).max()) for w, s in zip(single.weights, start) if w.trainable),
    "metrics": {k: v[-1] for k, v in got.items() if k.startswith("factorized_top_k/")},
    "want_metrics": {k: v[-1] for k, v in want.items() if k.startswith("factorized_top_k/")},
}))
"""

ALL_OPTIONS = {"logq_correction": True, "remove_accidental_hits": True, "temperature": 0.5, "l2": 0.01}


@pytest.mark.parametrize("options, dense_bytes, steps_per_call, ahead, sparse, forms", [
    # the embedding tables' gradients: made dense, in the one packed all-reduce
    ({}, 1 << 20, 1, "no", "no-slots", ["made dense"]),
    # left sparse (the strategy's own all-reduce of them); two steps in one call
    ({}, 0, 2, "no", "no-slots", ["sparse"]),
    # the user table: every replica's rows and values in its slot of the packed all-reduce (fewer floats than
    # the table); the candidate table: the values alone, its rows the global batch's on every replica
    ({}, 1 << 20, 1, "no", "slots", ["same rows", "slots"]),
    (ALL_OPTIONS, 1 << 20, 2, "no", "slots", ["same rows", "slots"]),  # every loss option (L2 sums repeated rows)
    ({"train_metrics": True, "top_ks": [1, 5]}, 1 << 20, 1, "no", "slots", ["same rows", "slots"]),  # averaged
    # rows sent ahead: the first call gathers, the calls after use what was sent
    ({}, 1 << 20, 1, "yes", "slots", ["same rows", "slots"]),
    (ALL_OPTIONS, 0, 2, "yes", "no-slots", ["sparse"]),
], ids=["made-dense", "sparse-2-steps-a-call", "slots", "slots-all-options", "train-metrics", "rows-ahead",
        "rows-ahead-all-options-sparse"])
def test_two_replicas_take_the_single_process_steps(options, dense_bytes, steps_per_call, ahead, sparse, forms):
    out = run_script(options, dense_bytes, steps_per_call, ahead, sparse)
    assert out["moved"] > 1e-3  # the steps changed the weights, so equal weights mean equal steps
    assert out["weight_diff"] < 1e-5 * out["moved"] + 1e-6, out
    assert out["loss_sum"] == pytest.approx(out["want_loss_sum"], rel=1e-5)
    assert out["global_rows_by"] == ("sent ahead" if ahead == "yes" else "gathered")  # by the last step traced
    assert out["forms"] == forms
    assert out["metrics"].keys() == out["want_metrics"].keys()
    for k, v in out["want_metrics"].items():
        assert out["metrics"][k] == pytest.approx(v, abs=1e-6), k


@pytest.mark.parametrize("options, dense_bytes, ahead, sparse", [
    ({}, 1 << 20, "yes", "slots"),  # rows sent ahead (an error unless they arrive exact), the slotted user rows
    (ALL_OPTIONS, 1 << 20, "no", "no-slots"),  # every loss option, both tables' gradients made dense
], ids=["rows-ahead-slots", "all-options-made-dense"])
def test_a_bfloat16_all_reduce_takes_nearly_the_single_process_steps(options, dense_bytes, ahead, sparse):
    """--allreduce-dtype bfloat16: the packed all-reduce is bfloat16. The gradients arrive rounded to 8
    significant bits, so the weights follow the single process's to about 2^-8 of how far they moved; the rows
    (sent ahead, slotted) and the logged loss arrive exact, so the step runs and logs the same loss."""
    out = run_script(options, dense_bytes, 2, ahead, sparse, "bfloat16")
    # the packed all-reduce, and without rows sent ahead the gather of the batch's rows (int64)
    assert out["collective_dtypes"] == ["bfloat16"] + (["int64"] if ahead == "no" else [])
    assert out["moved"] > 1e-3
    assert 0 < out["weight_diff"] < 2 ** -7 * out["moved"], out  # rounded, not summed exactly
    assert out["loss_sum"] == pytest.approx(out["want_loss_sum"], rel=1e-3)
    assert out["global_rows_by"] == ("sent ahead" if ahead == "yes" else "gathered")


def test_rows_sent_ahead_for_another_batch_stop_the_step():
    """Each step checks that the rows sent ahead hold its own batch's in its slot: a misaligned input fails
    rather than training on wrong negatives."""
    out = run_script({}, 1 << 20, 1, "wrong", "slots")
    assert "the candidate rows sent ahead by the previous step do not match this batch" in out["error"]


def run_script(options: dict, dense_bytes: int, steps_per_call: int, ahead: str, sparse: str,
               dtype: str = "float32") -> dict:
    return run_on_two_cpus(SCRIPT, json.dumps(options), str(dense_bytes), str(steps_per_call), ahead, sparse, dtype)
