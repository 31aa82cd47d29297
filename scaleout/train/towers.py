"""The two towers: the TFRS tutorial's id towers, with optional side features.

Query tower: ``{"user_id": [b] str, "timestamp": [b] int64}`` -> ``[b, dim]``; a
timestamp below 0 means "not given" and the user's latest training timestamp is
used (see scaleout.train.features). Candidate tower: ``[b]`` movie ids -> ``[b, dim]``.
Each tower looks its ids up (one extra row for ids outside the vocabulary) and
embeds them; each side feature is coded per vocabulary row in a constant table
held by the tower, so a tower needs nothing but ids (and, optionally, the
interaction's timestamp). Feature embeddings are summed with the id embedding,
or, with ``deep_layers``, concatenated and passed through ReLU layers and a
final linear layer. With no features and no deep layers these are exactly the
tutorial's towers.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

from scaleout.config import ModelConfig
from scaleout.names import MOVIE_ID, TIMESTAMP, USER_ID
from scaleout.tfenv import tf
from scaleout.train.features import FeatureTables, Timestamps

QUERY_FEATURE = USER_ID
CANDIDATE_FEATURE = MOVIE_ID
TIMESTAMP_FEATURE = TIMESTAMP
CANDIDATE_BATCH = 4096


@tf.keras.utils.register_keras_serializable("scaleout")
class CodeTable(tf.keras.layers.Layer):
    """A constant table read by vocabulary row: ``[b]`` rows -> ``[b, width]``.

    Its values live in a non-trainable weight, so they are saved with the tower
    (and restored from checkpoints) rather than written into its config.
    """

    def __init__(self, rows: int, width: int, table_dtype: str = "int32", **kwargs):
        super().__init__(**kwargs)
        self.rows, self.width, self.table_dtype = rows, width, table_dtype

    def build(self, input_shape):
        self.table = self.add_weight(name="table", shape=(self.rows, self.width), dtype=self.table_dtype,
                                     initializer="zeros", trainable=False)

    def call(self, rows):
        return tf.gather(self.table, rows)

    def get_config(self):
        return {**super().get_config(), "rows": self.rows, "width": self.width, "table_dtype": self.table_dtype}


@tf.keras.utils.register_keras_serializable("scaleout")
class PooledEmbedding(tf.keras.layers.Layer):
    """Codes ``[b, width]`` (0: missing or padding) -> the mean of their embeddings ``[b, dim]`` (zeros if none)."""

    def __init__(self, size: int, dim: int, **kwargs):
        super().__init__(**kwargs)
        self.size, self.dim = size, dim

    def build(self, input_shape):
        self.embeddings = self.add_weight(name="embeddings", shape=(self.size + 1, self.dim), initializer="uniform",
                                          trainable=True)

    def call(self, codes):
        present = tf.cast(codes > 0, self.compute_dtype)
        summed = tf.reduce_sum(tf.gather(self.embeddings, codes) * present[..., None], axis=1)
        return summed / tf.maximum(tf.reduce_sum(present, axis=1, keepdims=True), 1.0)

    def get_config(self):
        return {**super().get_config(), "size": self.size, "dim": self.dim}


@tf.keras.utils.register_keras_serializable("scaleout")
class TimestampFeature(tf.keras.layers.Layer):
    """(timestamp ``[b]`` int64, user row ``[b]``) -> (bucket ``[b]`` int32, normalised ``[b, 1]``).

    A timestamp below 0 is replaced by the user's latest training timestamp.
    """

    def __init__(self, boundaries: Sequence[float], mean: float, std: float, rows: int, **kwargs):
        super().__init__(**kwargs)
        self.boundaries, self.mean, self.std, self.rows = [float(b) for b in boundaries], float(mean), float(std), rows

    def build(self, input_shape):
        self.user_last = self.add_weight(name="user_last", shape=(self.rows,), dtype="float32", initializer="zeros",
                                         trainable=False)

    def call(self, inputs):
        timestamp, row = inputs
        value = tf.where(timestamp < 0, tf.gather(self.user_last, row), tf.cast(timestamp, tf.float32))
        bucket = tf.raw_ops.Bucketize(input=value, boundaries=self.boundaries)
        return bucket, ((value - self.mean) / self.std)[:, None]

    def get_config(self):
        return {**super().get_config(), "boundaries": self.boundaries, "mean": self.mean, "std": self.std,
                "rows": self.rows}


def _embedding(rows: int, cfg: ModelConfig, name: str):
    return tf.keras.layers.Embedding(rows, cfg.embedding_dim, name=name)


def _coded(codes: np.ndarray, rows, name: str):
    layer = CodeTable(codes.shape[0], codes.shape[1], name=f"{name}_codes")
    out = layer(rows)
    layer.table.assign(codes)
    return out


def _feature_part(f, rows, cfg: ModelConfig):
    return PooledEmbedding(f.size, cfg.embedding_dim, name=f"{f.name}_embedding")(_coded(f.codes, rows, f.name))


def _id_and_coded_parts(ids, vocabulary: Sequence[str], coded: list, cfg: ModelConfig, name: str):
    """(vocabulary rows, [id embedding, one pooled embedding per coded feature]) of the ``ids`` input."""
    rows = tf.keras.layers.StringLookup(vocabulary=np.asarray(vocabulary, dtype=object), mask_token=None,
                                        name=f"{name}_row")(ids)
    parts = [_embedding(len(vocabulary) + 1, cfg, f"{name}_embedding")(rows)]
    return rows, parts + [_feature_part(f, rows, cfg) for f in coded]


def _combine(parts: list, cfg: ModelConfig, name: str):
    if not cfg.deep_layers:
        return parts[0] if len(parts) == 1 else tf.keras.layers.Add(name=f"{name}_sum")(parts)
    x = parts[0] if len(parts) == 1 else tf.keras.layers.Concatenate(name=f"{name}_concat")(parts)
    for i, width in enumerate(cfg.deep_layers):
        x = tf.keras.layers.Dense(width, activation="relu", name=f"{name}_dense_{i}")(x)
    return tf.keras.layers.Dense(cfg.embedding_dim, name=f"{name}_output")(x)


def query_tower(cfg: ModelConfig, vocabulary: Sequence[str], tables: FeatureTables | None = None) -> tf.keras.Model:
    """``{"user_id", "timestamp"}`` -> ``[b, dim]`` (see module doc)."""
    tables = tables or FeatureTables()
    user_id = tf.keras.Input(shape=(), dtype=tf.string, name=QUERY_FEATURE)
    timestamp = tf.keras.Input(shape=(), dtype=tf.int64, name=TIMESTAMP_FEATURE)
    rows, parts = _id_and_coded_parts(user_id, vocabulary, tables.query, cfg, "user")
    if tables.timestamp is not None:
        parts.extend(_timestamp_parts(tables.timestamp, timestamp, rows, cfg))
    return tf.keras.Model({QUERY_FEATURE: user_id, TIMESTAMP_FEATURE: timestamp}, _combine(parts, cfg, "query"),
                          name="query_tower")


def _timestamp_parts(ts: Timestamps, timestamp, rows, cfg: ModelConfig) -> list:
    layer = TimestampFeature(ts.boundaries, ts.mean, ts.std, len(ts.user_last), name="timestamp_feature")
    bucket, normalised = layer([timestamp, rows])
    layer.user_last.assign(ts.user_last.astype(np.float32))
    return [_embedding(len(ts.boundaries) + 1, cfg, "timestamp_bucket_embedding")(bucket),
            tf.keras.layers.Dense(cfg.embedding_dim, use_bias=False, name="timestamp_projection")(normalised)]


def candidate_tower(cfg: ModelConfig, candidate_ids: Sequence[str], tables: FeatureTables | None = None):
    """``[b]`` movie ids -> ``[b, dim]`` (see module doc)."""
    tables = tables or FeatureTables()
    movie_id = tf.keras.Input(shape=(), dtype=tf.string, name=CANDIDATE_FEATURE)
    _, parts = _id_and_coded_parts(movie_id, candidate_ids, tables.candidate, cfg, "candidate")
    return tf.keras.Model(movie_id, _combine(parts, cfg, "candidate"), name="candidate_tower")


def id_tower(vocabulary: Sequence[str], dim: int, name: str) -> tf.keras.Model:
    """The tutorial's tower: string id -> StringLookup -> Embedding, ``[b]`` in, ``[b, dim]`` out."""
    return tf.keras.Sequential(
        [
            tf.keras.Input(shape=(), dtype=tf.string, name=f"{name}_id"),
            tf.keras.layers.StringLookup(vocabulary=np.asarray(vocabulary, dtype=object), mask_token=None),
            tf.keras.layers.Embedding(len(vocabulary) + 1, dim),
        ],
        name=name,
    )


def uses_timestamp(tower: tf.keras.Model) -> bool:
    return any(isinstance(layer, TimestampFeature) for layer in tower.layers)


def query_inputs(user_ids, timestamps=None) -> dict:
    """The query tower's inputs for ``user_ids``; without timestamps each user's latest training one is used."""
    user_ids = tf.convert_to_tensor(user_ids, tf.string)
    if timestamps is None:
        timestamps = tf.fill(tf.shape(user_ids), tf.constant(-1, tf.int64))
    return {QUERY_FEATURE: user_ids, TIMESTAMP_FEATURE: tf.cast(timestamps, tf.int64)}


def query_embeddings(tower: tf.keras.Model, user_ids, timestamps=None, training: bool = False) -> tf.Tensor:
    """``[b, dim]`` from the query tower; a tower saved before features existed takes the ids alone."""
    if len(tower.inputs) == 1:
        return tower(tf.convert_to_tensor(user_ids, tf.string), training=training)
    return tower(query_inputs(user_ids, timestamps), training=training)


def embed_users(tower: tf.keras.Model, user_ids, timestamps=None) -> np.ndarray:
    """``[len(user_ids), dim]`` NumPy query embeddings, each user at their latest training timestamp by default."""
    return query_embeddings(tower, np.asarray(user_ids, dtype=object), timestamps).numpy()


def candidate_embeddings_dataset(tower: tf.keras.Model, candidate_ids: Sequence[str]):
    """All candidates through the candidate tower: a dataset of ``[batch, dim]`` embeddings."""
    ids = tf.data.Dataset.from_tensor_slices(np.asarray(candidate_ids, dtype=object))
    return ids.batch(CANDIDATE_BATCH).map(tower)
