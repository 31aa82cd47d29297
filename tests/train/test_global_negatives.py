"""Two replicas with global in-batch negatives compute the single-process loss and gradient
over the global batch, with the plain loss and with every loss option on (logQ correction,
accidental hits removed, temperature, hard negatives). Runs in a fresh process
(tests/two_replicas.py)."""

import json

import pytest
from two_replicas import run_on_two_cpus

SCRIPT = r"""
import json
import sys
import numpy as np

from scaleout.config import ModelConfig
from scaleout.train.features import FeatureTables
from scaleout.train.model import build_model

OPTIONS = json.loads(sys.argv[1])
blocks = []
if OPTIONS.pop("blocks", False):  # logits of a query's row a block: the loss in blocks at this tiny size
    import scaleout.train.logits as logits
    logits.BLOCK_BYTES, logits.MIN_BLOCK_ROWS = 16, 1
    blocked = logits.blocked_softmax_loss
    logits.blocked_softmax_loss = lambda *args: (blocks.append(args[3]), blocked(*args))[1]
tables = None
if OPTIONS.get("history"):  # a stored history of up to 6 of the 30 items per user (0: padding)
    tables = FeatureTables(history=np.random.default_rng(1).integers(0, 31, (21, OPTIONS["history"])).astype(np.int32))
users, items = [f"u{i}" for i in range(20)], [f"i{i}" for i in range(30)]
counts = np.arange(30) * 3 + 1
rng = np.random.default_rng(0)
# Few distinct items, so the global batch holds repeats (accidental hits) across the two halves.
batch = {"user_id": rng.choice(users, 8).astype(object), "movie_id": rng.choice(items[:5], 8).astype(object)}


def loss_and_grads(model, features):
    with tf.GradientTape() as tape:
        loss = model.compute_loss(features, training=True)
    return loss, [tf.convert_to_tensor(g) for g in tape.gradient(loss, model.trainable_variables)]


single = build_model(ModelConfig(embedding_dim=4, **OPTIONS), users, items, tables, candidate_counts=counts)
want_loss, want_grads = loss_and_grads(single, {k: tf.constant(v) for k, v in batch.items()})
strategy = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])
out = {}
for global_negatives in (True, False):
    with strategy.scope():
        model = build_model(ModelConfig(embedding_dim=4, global_negatives=global_negatives, **OPTIONS), users, items,
                            tables, candidate_counts=counts)
    model.set_weights(single.get_weights())
    halves = strategy.experimental_distribute_values_from_function(
        lambda ctx: {k: tf.constant(v[ctx.replica_id_in_sync_group * 4:][:4]) for k, v in batch.items()})
    loss, grads = strategy.run(loss_and_grads, args=(model, halves))
    loss = strategy.reduce(tf.distribute.ReduceOp.SUM, loss, axis=None)
    grads = [strategy.reduce(tf.distribute.ReduceOp.SUM, g, axis=None) for g in grads]
    out[str(global_negatives)] = {
        "loss": float(loss), "want_loss": float(want_loss),
        "grad_diff": max(float(tf.reduce_max(tf.abs(g - w))) for g, w in zip(grads, want_grads)),
        "grad_scale": max(float(tf.reduce_max(tf.abs(w))) for w in want_grads),
    }
out["blocked_calls"] = len(blocks)
print(json.dumps(out))
"""


ALL_OPTIONS = {"logq_correction": True, "remove_accidental_hits": True, "temperature": 0.5, "hard_negatives": 3,
               "l2": 0.01}
# The history-aware tower (the example's own item left out of its history) with each table.
HISTORY = {**ALL_OPTIONS, "history": 6, "history_table": "separate"}
# Unit-length tower outputs (cosine scores) with every loss option.
COSINE = {**ALL_OPTIONS, "cosine": True}
FULL = {"history": 6, "user_embedding": False, "negatives": "full", "temperature": 0.5, "l2": 0.01}
# The loss a block of queries at a time (scaleout.train.logits; as at large batches), every option of it on.
BLOCKED = {"logq_correction": True, "remove_accidental_hits": True, "temperature": 0.5, "l2": 0.01, "blocks": True}


@pytest.mark.parametrize("options", [{}, ALL_OPTIONS, HISTORY, COSINE, BLOCKED],
                         ids=["plain", "all-options", "history", "cosine", "blocked"])
def test_two_replicas_train_the_single_process_objective(options):
    out = run_on_two_cpus(SCRIPT, json.dumps(options))
    # In blocks: one process's loss and every replica's, with global negatives and without.
    assert (out.pop("blocked_calls") >= 3) == ("blocks" in options)
    with_global = out["True"]
    assert abs(with_global["loss"] - with_global["want_loss"]) < 1e-4 * abs(with_global["want_loss"])
    assert with_global["grad_diff"] < 1e-5 * with_global["grad_scale"] + 1e-6
    # Without gathering, each replica's softmax sees only its own 4 candidates: another objective.
    local_only = out["False"]
    assert local_only["loss"] < with_global["loss"] - 1.0
    assert local_only["grad_diff"] > 1e-3


@pytest.mark.parametrize("blocks", [False, True])
def test_the_full_softmax_under_two_replicas_is_the_single_process_objective(blocks):
    """Every replica scores its queries against the whole catalogue: nothing to gather, the same sum either way."""
    out = run_on_two_cpus(SCRIPT, json.dumps({**FULL, "blocks": blocks}))
    assert (out.pop("blocked_calls") >= 3) == blocks
    for run in out.values():
        assert abs(run["loss"] - run["want_loss"]) < 1e-4 * abs(run["want_loss"])
        assert run["grad_diff"] < 1e-5 * run["grad_scale"] + 1e-6
