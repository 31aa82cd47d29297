"""Embedding tables read by rows under a distribution strategy (scaleout.train.rows): the training step of the
model under two replicas gathers no row from a whole read of a variable (a copy of the table each step, once
the table is updated by rows), as in one process; RowEmbedding and RowAdagrad give Keras' Embedding's and
Adagrad's values bit for bit. Runs in a fresh process (tests/two_replicas.py)."""

from two_replicas import run_on_two_cpus

SCRIPT = r"""
import json
import numpy as np

from scaleout.config import ModelConfig
from scaleout.train.model import build_model
from scaleout.train.rows import RowAdagrad, RowEmbedding, read_rows


def whole_reads_gathered(graph_def) -> list[str]:
    # The gathers (GatherV2) whose table is a whole read of a variable (ReadVariableOp, through Identity), in
    # the graph and every function of its library (the while loops' bodies).
    found = []
    for nodes in [graph_def.node, *(f.node_def for f in graph_def.library.function)]:
        by_name = {n.name: n for n in nodes}
        source = lambda ref: by_name.get(ref.lstrip("^").split(":")[0])
        for node in nodes:
            if node.op != "GatherV2":
                continue
            params = source(node.input[0])
            while params is not None and params.op == "Identity":
                params = source(params.input[0])
            if params is not None and params.op == "ReadVariableOp":
                found.append(node.name)
    return found


def op_count(graph_def, op) -> int:
    return sum(n.op == op for nodes in [graph_def.node, *(f.node_def for f in graph_def.library.function)]
               for n in nodes)


strategy = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])
out = {}

# The detector sees what tf.gather does to a mirrored variable, so that finding nothing below means something.
with strategy.scope():
    table = tf.Variable(tf.zeros([50, 4]))
ids_spec = tf.TensorSpec([6], tf.int32)
plain = tf.function(lambda ids: strategy.run(lambda i: tf.gather(table, i), args=(ids,)))
rows = tf.function(lambda ids: strategy.run(lambda i: read_rows(table, i), args=(ids,)))
out["tf_gather"] = len(whole_reads_gathered(plain.get_concrete_function(ids_spec).graph.as_graph_def()))
rows_graph = rows.get_concrete_function(ids_spec).graph.as_graph_def()
out["read_rows"] = len(whole_reads_gathered(rows_graph))
out["read_rows_resource_gathers"] = op_count(rows_graph, "ResourceGather")

# The model's training step under the strategy, every feature whose table is gathered by rows on.
users, items = [f"u{i}" for i in range(20)], [f"i{i}" for i in range(30)]
rng = np.random.default_rng(0)
batch = {"user_id": rng.choice(users, 8).astype(object), "movie_id": rng.choice(items, 8).astype(object)}
cfg = ModelConfig(embedding_dim=4, l2=0.01, logq_correction=True, remove_accidental_hits=True)
with strategy.scope():
    model = build_model(cfg, users, items, candidate_counts=np.arange(30) + 1)
model.dense_gradient_bytes = 0  # the tables' gradients as rows, as a large table's are
data = tf.data.Dataset.from_tensors(batch).repeat()
model.fit(data, epochs=1, steps_per_epoch=1, verbose=0)
out["optimizer"] = type(model.optimizer).__name__
step = tf.function(lambda b: strategy.run(model.train_step, args=(b,)))
spec = {k: tf.TensorSpec([8], tf.string) for k in batch}
step_graph = step.get_concrete_function(spec).graph.as_graph_def()
out["model_step"] = whole_reads_gathered(step_graph)
out["model_step_resource_gathers"] = op_count(step_graph, "ResourceGather")

# Bit for bit: RowEmbedding against Keras' Embedding, RowAdagrad against Keras' Adagrad (sparse updates).
ids = tf.constant([[1, 3], [3, 7]])
keras_layer, row_layer = tf.keras.layers.Embedding(10, 4), RowEmbedding(10, 4)
keras_layer.build(None), row_layer.build(None)
row_layer.set_weights(keras_layer.get_weights())
out["embedding_same"] = bool(np.array_equal(keras_layer(ids).numpy(), row_layer(ids).numpy()))
clone = RowEmbedding.from_config(row_layer.get_config())
out["embedding_config"] = clone.get_config() == row_layer.get_config()
start = np.random.default_rng(1).normal(size=(10, 4)).astype(np.float32)
finals = []
for cls in (tf.keras.optimizers.Adagrad, RowAdagrad):
    variable = tf.Variable(start)
    optimizer = cls(learning_rate=0.1)
    for k in range(3):
        grad = tf.IndexedSlices(tf.constant(np.full((3, 4), k + 1.5, np.float32)), tf.constant([1, 4, 4]),
                                tf.constant([10, 4]))
        optimizer.apply_gradients([(grad, variable)])
    optimizer.apply_gradients([(tf.ones([10, 4]), variable)])  # a dense gradient: Keras' own update
    finals.append(variable.numpy())
out["adagrad_same"] = bool(np.array_equal(*finals))
out["adagrad_moved"] = float(np.abs(finals[1] - start).max())
print(json.dumps(out))
"""


def test_tables_are_read_by_rows_under_a_strategy_with_keras_values():
    out = run_on_two_cpus(SCRIPT)
    assert out["tf_gather"] == 2  # tf.gather reads the mirrored table whole, once per replica
    assert out["read_rows"] == 0 and out["read_rows_resource_gathers"] == 2
    # The model's step: every table (towers, the row L2, Adagrad's accumulators) read by rows.
    assert out["optimizer"] == "RowAdagrad"
    assert out["model_step"] == [], out["model_step"]
    assert out["model_step_resource_gathers"] >= 2 * 4  # per replica: 2 tables, their L2 rows, 2 accumulators
    assert out["embedding_same"] and out["embedding_config"]
    assert out["adagrad_same"] and out["adagrad_moved"] > 0.1
