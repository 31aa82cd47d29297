"""The two-tower retrieval model: the TFRS tutorial's id towers, with optional side features and loss options.

Query tower: ``{"user_id": [b] str, "timestamp": [b] int64}`` -> ``[b, dim]``; a
timestamp below 0 means "not given" and the user's latest training timestamp is
used (see scaleout.features). Candidate tower: ``[b]`` movie ids -> ``[b, dim]``.
Each tower looks its ids up (one extra row for ids outside the vocabulary) and
embeds them; each side feature is coded per vocabulary row in a constant table
held by the tower, so a tower needs nothing but ids (and, optionally, the
interaction's timestamp). Feature embeddings are summed with the id embedding,
or, with ``deep_layers``, concatenated and passed through ReLU layers and a
final linear layer. With no features and no deep layers this is exactly the
tutorial's model.

The loss is ``tfrs.tasks.Retrieval``'s in-batch softmax, with the options of
ModelConfig: temperature, sampling-bias (logQ) correction from the candidates'
training counts, removal of accidental hits (the same candidate elsewhere in
the batch) and hard negatives. Under a multi-replica strategy every option sees
the global batch (see ``global_batch``).
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

from scaleout.config import ModelConfig
from scaleout.errors import ConfigError
from scaleout.features import FeatureTables, Timestamps
from scaleout.tfenv import import_tensorflow

tf = import_tensorflow()
import tensorflow_recommenders as tfrs  # noqa: E402  (needs tf with Keras 2 first)

QUERY_FEATURE = "user_id"
CANDIDATE_FEATURE = "movie_id"
TIMESTAMP_FEATURE = "timestamp"
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


def global_batch(values: tf.Tensor) -> tf.Tensor:
    """The rows of every replica's batch, this replica's first: ``[b, ...]`` -> ``[b * replicas, ...]``.

    Retrieval scores query i against every candidate and takes candidate i as
    its positive, so this replica's own rows must come first; the others are
    extra negatives. Every replica must hold the same number of rows.
    all_gather's gradient sends each replica's share back to it, so the
    gradients summed across replicas are those of the single-process loss over
    the global batch. Outside a multi-replica strategy this returns ``values``.
    """
    context = tf.distribute.get_replica_context()
    if context is None or context.num_replicas_in_sync == 1:
        return values
    gathered = context.all_gather(values, axis=0)  # replica-major order
    own_start = context.replica_id_in_sync_group * tf.shape(values)[0]
    return tf.roll(gathered, shift=-own_start, axis=0)


def sampling_probabilities(counts: np.ndarray) -> np.ndarray:
    """Q of each candidate row (row 0: ids outside the candidates): training counts + 1, normalised."""
    counts = np.concatenate([[0], np.asarray(counts, np.float64)]) + 1.0
    return (counts / counts.sum()).astype(np.float32)


class TwoTowerModel(tfrs.Model):
    """Overrides only ``compute_loss``, as TFRS models do."""

    def __init__(self, query_tower: tf.keras.Model, candidate_tower: tf.keras.Model, candidate_ids: Sequence[str],
                 cfg: ModelConfig, candidate_counts: np.ndarray | None = None):
        super().__init__()
        self.query_tower = query_tower
        self.candidate_tower = candidate_tower
        self.cfg = cfg
        if cfg.logq_correction and candidate_counts is None:
            raise ConfigError("logq_correction needs the candidates' training counts (train_count in "
                              "candidates.parquet)")
        self.candidate_row = tf.keras.layers.StringLookup(vocabulary=np.asarray(candidate_ids, dtype=object),
                                                          mask_token=None)
        # The dataset columns compute_loss reads.
        self.columns = (QUERY_FEATURE, CANDIDATE_FEATURE) + \
            ((TIMESTAMP_FEATURE,) if uses_timestamp(query_tower) else ())
        self.features = {"used": [], "left_out": {}}
        self.sampling_q = None if candidate_counts is None else tf.constant(sampling_probabilities(candidate_counts))
        self.task = tfrs.tasks.Retrieval(
            metrics=tfrs.metrics.FactorizedTopK(
                candidates=candidate_embeddings_dataset(candidate_tower, candidate_ids), ks=cfg.top_ks),
            **self._loss_options(cfg),
        )
        # With accidental hits removed, the loss needs candidate ids; given them, FactorizedTopK would
        # match retrieved ids instead of scoring by value, so that loss has a task of its own.
        self.hits_task = tfrs.tasks.Retrieval(remove_accidental_hits=True, **self._loss_options(cfg)) \
            if cfg.remove_accidental_hits else None

    @staticmethod
    def _loss_options(cfg: ModelConfig) -> dict:
        return {"temperature": None if cfg.temperature == 1.0 else cfg.temperature,
                "num_hard_negatives": cfg.hard_negatives or None}

    def compute_loss(self, features: dict[str, tf.Tensor], training: bool = False) -> tf.Tensor:
        """features: ``user_id`` and ``movie_id`` (``[batch]`` strings), ``timestamp`` (int64) when there is one."""
        query = query_embeddings(self.query_tower, features[QUERY_FEATURE], features.get(TIMESTAMP_FEATURE),
                                 training=training)
        own = self.candidate_tower(features[CANDIDATE_FEATURE])
        candidate, rows = own, self.candidate_row(features[CANDIDATE_FEATURE])
        if self.cfg.global_negatives:
            candidate, rows = global_batch(candidate), global_batch(rows)
        extra = {}
        if self.cfg.logq_correction:
            # Retrieval subtracts log(p) from each candidate's logit.
            extra["candidate_sampling_probability"] = tf.gather(self.sampling_q, rows)
        if self.cfg.remove_accidental_hits:
            extra["candidate_ids"] = rows
        compute_metrics = self.cfg.train_metrics or not training
        if self.hits_task is None:
            loss = self.task(query, candidate, compute_metrics=compute_metrics, **extra)
        else:
            loss = self.hits_task(query, candidate, compute_metrics=False, **extra)
            if compute_metrics:
                self.task(query, own, compute_metrics=True)
        return loss + self.l2_penalty() if self.cfg.l2 else loss

    def l2_penalty(self) -> tf.Tensor:
        """l2 x the squared norm of every embedding table, this replica's share of it.

        The replicas' gradients are summed, so each adds 1 / replicas of the
        penalty (a Keras regularizer would be counted once per replica).
        """
        tables = [v for v in self.trainable_variables if "embeddings" in v.name]
        context = tf.distribute.get_replica_context()
        replicas = 1 if context is None else context.num_replicas_in_sync
        return self.cfg.l2 / replicas * tf.add_n([tf.reduce_sum(tf.square(v)) for v in tables])


def make_optimizer(cfg: ModelConfig) -> tf.keras.optimizers.Optimizer:
    cls = {"adagrad": tf.keras.optimizers.Adagrad, "adam": tf.keras.optimizers.Adam,
           "sgd": tf.keras.optimizers.SGD}[cfg.optimizer]
    return cls(learning_rate=cfg.learning_rate)


def build_model(cfg: ModelConfig, user_vocabulary: Sequence[str], candidate_ids: Sequence[str],
                tables: FeatureTables | None = None, candidate_counts: np.ndarray | None = None) -> TwoTowerModel:
    """A compiled, freshly initialised model (seeded by ``cfg.seed``)."""
    tf.keras.utils.set_random_seed(cfg.seed)
    model = TwoTowerModel(query_tower(cfg, user_vocabulary, tables), candidate_tower(cfg, candidate_ids, tables),
                          candidate_ids, cfg, candidate_counts)
    model.compile(optimizer=make_optimizer(cfg))
    return model


def build_for_dataset(cfg: ModelConfig, dataset) -> TwoTowerModel:
    """``build_model`` with the dataset's vocabularies, the features ``cfg`` asks for and the candidates' counts."""
    from scaleout.features import build_tables

    tables = build_tables(dataset, cfg.features)
    model = build_model(cfg, dataset.vocabulary(QUERY_FEATURE), dataset.vocabulary(CANDIDATE_FEATURE), tables,
                        candidate_counts(dataset))
    model.features = {"used": tables.used, "left_out": tables.left_out}
    return model


def candidate_counts(dataset) -> np.ndarray | None:
    """The candidates' training counts (candidates.parquet's train_count), in candidate order."""
    columns = dataset.candidates.column_names
    return dataset.candidates.column("train_count").to_numpy() if "train_count" in columns else None


def from_towers(cfg: ModelConfig, query, candidate, candidate_ids: Sequence[str],
                candidate_counts: np.ndarray | None = None) -> TwoTowerModel:
    """A model around already trained towers, for evaluation."""
    model = TwoTowerModel(query, candidate, candidate_ids, cfg, candidate_counts)
    model.compile(optimizer=make_optimizer(cfg))
    return model
