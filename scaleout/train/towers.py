"""The two towers: the TFRS tutorial's id towers, with optional side features.

Query tower: ``{"user_id": [b] str, "timestamp": [b] int64}`` -> ``[b, dim]``; a
timestamp below 0 means "not given" and the user's latest training timestamp is
used (see scaleout.train.features). Candidate tower: ``[b]`` movie ids -> ``[b, dim]``.
Each tower looks its ids up (one extra row for ids outside the vocabulary) and
embeds them (a user outside the vocabulary, whose row no example trains, is
given the average training interaction's user row when the model is saved:
``scaleout.train.unknown_user``); each side feature is coded per vocabulary row in a constant table
held by the tower, so a tower needs nothing but ids (and, optionally, the
interaction's timestamp). Feature embeddings are summed with the id embedding,
or, with ``deep_layers``, concatenated and passed through ReLU layers and a
final linear layer. With no features and no deep layers these are exactly the
tutorial's towers.

With a history (``ModelConfig.history``), the query tower also holds each
user's most recent training items (a constant table, like the side features)
and adds their mean embedding, taken through the candidate tower's own id
embedding (``history_table="shared"``) or a table of its own. It then takes
two more inputs: ``history``, items given with the request (a user outside the
training vocabulary is embedded from these alone; a known user's stored
history is extended by them), and ``exclude_item``, an item kept out of the
history (in training, the example's own item, so the target never predicts
itself). Without the user id embedding (``user_embedding=False``) the tower is
a function of the history alone, and a new user needs no retraining.

With a popularity prior (``ModelConfig.popularity_prior``, beta), each tower's
output has one more column: the candidate's log(1 + its training count), the
query's beta at evaluation and serving and 0 in training. The dot product the
exports, the embedding job and the indexes already compute then adds beta x
log(1 + count) to every served score, while training's scores stay the towers'
own.

With iALS's factors (``ModelConfig.ials_weight``, W), each tower's output has ``ials_factors`` more columns:
the candidate's iALS item factors, and the user's iALS user factors times W at evaluation and serving (0 in
training), both constant tables fitted on the training split (scaleout.train.features). The dot product then
serves ``q . c + W x u . v``, the towers' score plus iALS's, while training's scores stay the towers' own.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

from scaleout.config import ModelConfig
from scaleout.errors import ConfigError
from scaleout.names import MOVIE_ID, TIMESTAMP, USER_ID
from scaleout.tfenv import tf
from scaleout.train.features import FeatureTables, Timestamps
from scaleout.train.initializers import TableInitializer
from scaleout.train.rows import RowEmbedding, read_rows
from scaleout.train.served_columns import ServingFactors, ServingPrior, log_popularity

QUERY_FEATURE = USER_ID
CANDIDATE_FEATURE = MOVIE_ID
TIMESTAMP_FEATURE = TIMESTAMP
HISTORY_FEATURE = "history"  # [b, n] candidate ids given with the request ("" pads); added to the stored history
EXCLUDE_FEATURE = "exclude_item"  # [b] a candidate id kept out of the history (training: the example's own)
IALS_USER_FACTORS = "ials_user_factors"  # the constant tables of iALS's factors (ModelConfig.ials_weight)
IALS_ITEM_FACTORS = "ials_item_factors"


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
        return read_rows(self.table, rows)

    def get_config(self):
        return {**super().get_config(), "rows": self.rows, "width": self.width, "table_dtype": self.table_dtype}


@tf.keras.utils.register_keras_serializable("scaleout")
class PooledEmbedding(tf.keras.layers.Layer):
    """Codes ``[b, width]`` (0: missing or padding) -> the mean of their embeddings ``[b, dim]`` (zeros if none)."""

    def __init__(self, size: int, dim: int, init_stddev: float = 0.0, **kwargs):
        super().__init__(**kwargs)
        self.size, self.dim, self.init_stddev = size, dim, init_stddev

    def build(self, input_shape):
        self.embeddings = self.add_weight(name="embeddings", shape=(self.size + 1, self.dim),
                                          initializer=initializer(self.init_stddev), trainable=True)

    def call(self, codes):
        present = tf.cast(codes > 0, self.compute_dtype)
        summed = tf.reduce_sum(read_rows(self.embeddings, codes) * present[..., None], axis=1)
        return summed / tf.maximum(tf.reduce_sum(present, axis=1, keepdims=True), 1.0)

    def get_config(self):
        return {**super().get_config(), "size": self.size, "dim": self.dim, "init_stddev": self.init_stddev}


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
        value = tf.where(timestamp < 0, read_rows(self.user_last, row), tf.cast(timestamp, tf.float32))
        bucket = tf.raw_ops.Bucketize(input=value, boundaries=self.boundaries)
        return bucket, ((value - self.mean) / self.std)[:, None]

    def get_config(self):
        return {**super().get_config(), "boundaries": self.boundaries, "mean": self.mean, "std": self.std,
                "rows": self.rows}


@tf.keras.utils.register_keras_serializable("scaleout")
class ItemEmbedding(tf.keras.layers.Layer):
    """An item embedding table used two ways: rows ``[b]`` -> ``[b, dim]`` (the candidate tower's lookup), and
    (rows ``[b, n]``, keep ``[b, n]`` bool) -> the mean embedding of each row's kept items ``[b, dim]`` (where
    none is kept: zeros in training, row 0 otherwise), gathering only the kept ones. With
    ``history_table="shared"`` one layer serves both towers, so the history is pooled through the candidate
    embeddings themselves."""

    def __init__(self, rows: int, dim: int, init_stddev: float = 0.0, **kwargs):
        super().__init__(**kwargs)
        self.rows, self.dim, self.init_stddev = rows, dim, init_stddev

    def build(self, input_shape):
        self.embeddings = self.add_weight(name="embeddings", shape=(self.rows, self.dim),
                                          initializer=initializer(self.init_stddev), trainable=True)

    def call(self, inputs, training=None):
        if not isinstance(inputs, (list, tuple)):
            return read_rows(self.embeddings, inputs)
        rows, keep = inputs
        at = tf.where(keep)  # [nnz, 2]: (batch row, position)
        segment = tf.cast(at[:, 0], tf.int32)
        b = tf.shape(rows)[0]
        summed = tf.math.unsorted_segment_sum(read_rows(self.embeddings, tf.gather_nd(rows, at)), segment, b)
        count = tf.math.unsorted_segment_sum(tf.ones_like(segment, self.compute_dtype), segment, b)
        pooled = summed / tf.maximum(count, 1.0)[:, None]
        if training:
            return pooled
        # Out of training, a row with nothing kept (an unknown user who gives no items) pools row 0, which no id
        # looks up (the catalogue's ids are all in the vocabulary; 0 is padding): settle_unknown_user sets it to
        # the users' mean history.
        return tf.where((count > 0)[:, None], pooled, self.embeddings[0][None])

    def get_config(self):
        return {**super().get_config(), "rows": self.rows, "dim": self.dim, "init_stddev": self.init_stddev}


@tf.keras.utils.register_keras_serializable("scaleout")
class HistoryMask(tf.keras.layers.Layer):
    """(stored ``[b, L]``, given ``[b, n]``, excluded ``[b]`` candidate rows; 0: none) -> (rows ``[b, L + n]``,
    keep ``[b, L + n]``): every stored and given item but the excluded one, each dropped with probability
    ``dropout`` while training."""

    def __init__(self, dropout: float = 0.0, **kwargs):
        super().__init__(**kwargs)
        self.dropout = float(dropout)

    def call(self, inputs, training=None):
        stored, given, excluded = inputs
        rows = tf.concat([stored, tf.cast(given, stored.dtype)], axis=1)
        keep = (rows > 0) & (rows != tf.cast(excluded, stored.dtype)[:, None])
        if training and self.dropout:
            keep &= tf.random.uniform(tf.shape(rows)) >= self.dropout
        return rows, keep

    def get_config(self):
        return {**super().get_config(), "dropout": self.dropout}


def initializer(stddev: float) -> TableInitializer:
    """An embedding table's initial values (``ModelConfig.init_stddev``): 0, Keras' default (uniform in
    [-0.05, 0.05]); above 0, normal with that standard deviation. Drawn without full-size temporaries."""
    return TableInitializer(stddev)


def _embedding(rows: int, cfg: ModelConfig, name: str):
    return RowEmbedding(rows, cfg.embedding_dim, name=name, embeddings_initializer=initializer(cfg.init_stddev))


def _constant(table: np.ndarray, rows, name: str, dtype: str = "int32"):
    """``table``'s rows read by vocabulary row, from a constant table the tower holds (a ``CodeTable`` named
    ``name``)."""
    layer = CodeTable(table.shape[0], table.shape[1], table_dtype=dtype, name=name)
    out = layer(rows)
    layer.table.assign(table)
    return out


def _coded(codes: np.ndarray, rows, name: str):
    return _constant(codes, rows, f"{name}_codes")


def _feature_part(f, rows, cfg: ModelConfig):
    return PooledEmbedding(f.size, cfg.embedding_dim, cfg.init_stddev, name=f"{f.name}_embedding")(
        _coded(f.codes, rows, f.name))


def _lookup(vocabulary: Sequence[str], name: str):
    return tf.keras.layers.StringLookup(vocabulary=np.asarray(vocabulary, dtype=object), mask_token=None, name=name)


def _id_and_coded_parts(ids, vocabulary: Sequence[str], coded: list, cfg: ModelConfig, name: str,
                        id_embedding=None, use_id: bool = True):
    """(vocabulary rows, [id embedding (``id_embedding`` when given; none without ``use_id``), one pooled
    embedding per coded feature]) of the ``ids`` input."""
    rows = _lookup(vocabulary, f"{name}_row")(ids)
    embedding = id_embedding or _embedding(len(vocabulary) + 1, cfg, f"{name}_embedding")
    parts = [embedding(rows)] if use_id else []
    return rows, parts + [_feature_part(f, rows, cfg) for f in coded]


def item_embedding(cfg: ModelConfig, candidate_ids: Sequence[str], name: str = "candidate_embedding"):
    """The layer a history-aware model pools its history through (and, shared, the candidate tower's ids)."""
    return ItemEmbedding(len(candidate_ids) + 1, cfg.embedding_dim, cfg.init_stddev, name=name)


def _combine(parts: list, cfg: ModelConfig, name: str):
    if not cfg.deep_layers:
        x = parts[0] if len(parts) == 1 else tf.keras.layers.Add(name=f"{name}_sum")(parts)
    else:
        x = parts[0] if len(parts) == 1 else tf.keras.layers.Concatenate(name=f"{name}_concat")(parts)
        for i, width in enumerate(cfg.deep_layers):
            x = tf.keras.layers.Dense(width, activation="relu", name=f"{name}_dense_{i}")(x)
        x = tf.keras.layers.Dense(cfg.embedding_dim, name=f"{name}_output")(x)
    # Cosine scores: every output of unit length, in the tower itself, so that the exports, the embedding
    # job and the indexes score cosines with the dot product they already use.
    return tf.keras.layers.UnitNormalization(name=f"{name}_unit")(x) if cfg.cosine else x


def query_tower(cfg: ModelConfig, vocabulary: Sequence[str], tables: FeatureTables | None = None,
                candidate_ids: Sequence[str] | None = None, history_embedding=None) -> tf.keras.Model:
    """``{"user_id", "timestamp"}`` (and, with a history, ``"history"`` and ``"exclude_item"``) -> ``[b, dim]``
    (see module doc). A history needs ``tables.history``, the ``candidate_ids`` and the layer it is pooled
    through (``history_embedding``: the candidate tower's, or one of its own)."""
    tables = tables or FeatureTables()
    user_id = tf.keras.Input(shape=(), dtype=tf.string, name=QUERY_FEATURE)
    timestamp = tf.keras.Input(shape=(), dtype=tf.int64, name=TIMESTAMP_FEATURE)
    inputs = {QUERY_FEATURE: user_id, TIMESTAMP_FEATURE: timestamp}
    rows, parts = _id_and_coded_parts(user_id, vocabulary, tables.query, cfg, "user", use_id=cfg.user_embedding)
    if tables.timestamp is not None:
        parts.extend(_timestamp_parts(tables.timestamp, timestamp, rows, cfg))
    if tables.history is not None:
        inputs[HISTORY_FEATURE] = tf.keras.Input(shape=(None,), dtype=tf.string, name=HISTORY_FEATURE)
        inputs[EXCLUDE_FEATURE] = tf.keras.Input(shape=(), dtype=tf.string, name=EXCLUDE_FEATURE)
        item_row = _lookup(candidate_ids, "history_item_row")
        stored = _coded(tables.history, rows, "history")
        kept = HistoryMask(cfg.history_dropout, name="history_mask")(
            [stored, item_row(inputs[HISTORY_FEATURE]), item_row(inputs[EXCLUDE_FEATURE])])
        parts.append(history_embedding(kept))
    out = _combine(parts, cfg, "query")
    if cfg.popularity_prior:
        out = ServingPrior(cfg.popularity_prior, name="popularity_prior")(out)
    if cfg.ials_weight:
        factors = _factors(tables.ials_users, rows, IALS_USER_FACTORS)
        out = ServingFactors(cfg.ials_weight, name="ials_user")([out, factors])
    return tf.keras.Model(inputs, out, name="query_tower")


def _factors(table: np.ndarray | None, rows, name: str):
    """iALS's factors by vocabulary row, from a constant table held by the tower."""
    if table is None:
        raise ConfigError("ials_weight needs iALS's factors, fitted on the training split (build_tables with "
                          "ModelConfig.ials)")
    return _constant(table, rows, name, "float32")


def _timestamp_parts(ts: Timestamps, timestamp, rows, cfg: ModelConfig) -> list:
    layer = TimestampFeature(ts.boundaries, ts.mean, ts.std, len(ts.user_last), name="timestamp_feature")
    bucket, normalised = layer([timestamp, rows])
    layer.user_last.assign(ts.user_last.astype(np.float32))
    return [_embedding(len(ts.boundaries) + 1, cfg, "timestamp_bucket_embedding")(bucket),
            tf.keras.layers.Dense(cfg.embedding_dim, use_bias=False, name="timestamp_projection")(normalised)]


def candidate_tower(cfg: ModelConfig, candidate_ids: Sequence[str], tables: FeatureTables | None = None,
                    id_embedding=None, counts: np.ndarray | None = None):
    """``[b]`` movie ids -> ``[b, dim]`` (see module doc); ``id_embedding``: a layer shared with the query tower.
    Under a popularity prior, ``[b, dim + 1]``: the last column log(1 + the candidate's training count, from
    ``counts`` in candidate order); with iALS's factors, those ``f`` columns after it."""
    tables = tables or FeatureTables()
    movie_id = tf.keras.Input(shape=(), dtype=tf.string, name=CANDIDATE_FEATURE)
    rows, parts = _id_and_coded_parts(movie_id, candidate_ids, tables.candidate, cfg, "candidate", id_embedding)
    out = _combine(parts, cfg, "candidate")
    if cfg.popularity_prior:
        if counts is None:
            raise ConfigError("popularity_prior needs the candidates' training counts (train_count in "
                              "candidates.parquet; prepare the data again with this version)")
        column = _constant(log_popularity(counts), rows, "popularity_log_count", "float32")
        out = tf.keras.layers.Concatenate(name="candidate_with_popularity")([out, column])
    if cfg.ials_weight:
        factors = _factors(tables.ials_items, rows, IALS_ITEM_FACTORS)
        out = tf.keras.layers.Concatenate(name="candidate_with_ials")([out, factors])
    return tf.keras.Model(movie_id, out, name="candidate_tower")


def id_tower(vocabulary: Sequence[str], dim: int, name: str) -> tf.keras.Model:
    """The tutorial's tower: string id -> StringLookup -> Embedding, ``[b]`` in, ``[b, dim]`` out."""
    return tf.keras.Sequential(
        [
            tf.keras.Input(shape=(), dtype=tf.string, name=f"{name}_id"),
            tf.keras.layers.StringLookup(vocabulary=np.asarray(vocabulary, dtype=object), mask_token=None),
            RowEmbedding(len(vocabulary) + 1, dim, embeddings_initializer=TableInitializer()),
        ],
        name=name,
    )


def uses_timestamp(tower: tf.keras.Model) -> bool:
    return any(isinstance(layer, TimestampFeature) for layer in tower.layers)


def uses_history(tower: tf.keras.Model) -> bool:
    """Whether the query tower reads the user's history (and so takes ``history`` and ``exclude_item``)."""
    return any(isinstance(layer, HistoryMask) for layer in tower.layers)


def query_inputs(user_ids, timestamps=None, history=None, exclude=None, with_history: bool = False) -> dict:
    """The query tower's inputs for ``user_ids``; without timestamps each user's latest training one is used.
    ``with_history``: also ``history`` (``[b, n]`` candidate ids given with the request, "" padding; none by
    default) and ``exclude`` (``[b]`` an id kept out of the history; none by default)."""
    user_ids = tf.convert_to_tensor(user_ids, tf.string)
    if timestamps is None:
        timestamps = tf.fill(tf.shape(user_ids), tf.constant(-1, tf.int64))
    inputs = {QUERY_FEATURE: user_ids, TIMESTAMP_FEATURE: tf.cast(timestamps, tf.int64)}
    if with_history:
        inputs[HISTORY_FEATURE] = (tf.fill(tf.stack([tf.size(user_ids), 0]), "") if history is None
                                   else tf.convert_to_tensor(history, tf.string))
        inputs[EXCLUDE_FEATURE] = (tf.fill(tf.shape(user_ids), "") if exclude is None
                                   else tf.convert_to_tensor(exclude, tf.string))
    return inputs


def query_embeddings(tower: tf.keras.Model, user_ids, timestamps=None, training: bool = False, history=None,
                     exclude=None) -> tf.Tensor:
    """``[b, dim]`` from the query tower; a tower saved before features existed takes the ids alone. ``history``
    and ``exclude`` reach a history-aware tower (see ``query_inputs``); any other tower refuses a history."""
    if len(tower.inputs) == 1:
        inputs = tf.convert_to_tensor(user_ids, tf.string)
    else:
        inputs = query_inputs(user_ids, timestamps, history, exclude, with_history=HISTORY_FEATURE in tower.input_names)
    if history is not None and HISTORY_FEATURE not in inputs:
        raise ConfigError("this query tower has no history input (trained without --history); it answers user ids "
                         "only")
    return tower(inputs, training=training)


def embed_users(tower: tf.keras.Model, user_ids, timestamps=None, history=None) -> np.ndarray:
    """``[len(user_ids), dim]`` NumPy query embeddings, each user at their latest training timestamp by default;
    ``history``: ``[b, n]`` item ids added to each user's stored history (a history-aware tower only)."""
    return query_embeddings(tower, np.asarray(user_ids, dtype=object), timestamps, history=history).numpy()

