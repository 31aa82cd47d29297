"""The two-tower retrieval model of the TFRS basic retrieval tutorial.

Query tower: user id -> StringLookup -> Embedding; candidate tower: movie id ->
StringLookup -> Embedding. Each lookup has one extra row for ids outside its
vocabulary. The loss is ``tfrs.tasks.Retrieval``'s in-batch softmax; its
``FactorizedTopK`` metric ranks every candidate.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

from scaleout.config import ModelConfig
from scaleout.tfenv import import_tensorflow

tf = import_tensorflow()
import tensorflow_recommenders as tfrs  # noqa: E402  (needs tf with Keras 2 first)

QUERY_FEATURE = "user_id"
CANDIDATE_FEATURE = "movie_id"
CANDIDATE_BATCH = 4096


def id_tower(vocabulary: Sequence[str], dim: int, name: str) -> tf.keras.Model:
    """String id -> embedding; ``[batch]`` strings in, ``[batch, dim]`` floats out.

    Ids outside ``vocabulary`` share one extra embedding row (index 0).
    """
    return tf.keras.Sequential(
        [
            tf.keras.Input(shape=(), dtype=tf.string, name=f"{name}_id"),
            tf.keras.layers.StringLookup(vocabulary=np.asarray(vocabulary, dtype=object), mask_token=None),
            tf.keras.layers.Embedding(len(vocabulary) + 1, dim),
        ],
        name=name,
    )


def candidate_embeddings_dataset(candidate_tower: tf.keras.Model, candidate_ids: Sequence[str]):
    """All candidates through the candidate tower: a dataset of ``[batch, dim]`` embeddings."""
    ids = tf.data.Dataset.from_tensor_slices(np.asarray(candidate_ids, dtype=object))
    return ids.batch(CANDIDATE_BATCH).map(candidate_tower)


def global_batch_candidates(candidate: tf.Tensor) -> tf.Tensor:
    """The candidates of every replica's batch, this replica's first: ``[b, d]`` -> ``[b * replicas, d]``.

    Retrieval scores query i against every candidate and takes candidate i as
    its positive, so this replica's own rows must come first; the others are
    extra negatives. Every replica must hold the same number of rows.
    all_gather's gradient sends each replica's share back to it, so the
    gradients summed across replicas are those of the single-process loss over
    the global batch. Outside a multi-replica strategy this returns ``candidate``.
    """
    context = tf.distribute.get_replica_context()
    if context is None or context.num_replicas_in_sync == 1:
        return candidate
    gathered = context.all_gather(candidate, axis=0)  # replica-major order
    own_start = context.replica_id_in_sync_group * tf.shape(candidate)[0]
    return tf.roll(gathered, shift=-own_start, axis=0)


class TwoTowerModel(tfrs.Model):
    """Overrides only ``compute_loss``, as TFRS models do."""

    def __init__(self, query_tower: tf.keras.Model, candidate_tower: tf.keras.Model, candidate_ids: Sequence[str],
                 cfg: ModelConfig):
        super().__init__()
        self.query_tower = query_tower
        self.candidate_tower = candidate_tower
        self.train_metrics = cfg.train_metrics
        self.global_negatives = cfg.global_negatives
        self.task = tfrs.tasks.Retrieval(
            metrics=tfrs.metrics.FactorizedTopK(
                candidates=candidate_embeddings_dataset(candidate_tower, candidate_ids), ks=cfg.top_ks
            )
        )

    def compute_loss(self, features: dict[str, tf.Tensor], training: bool = False) -> tf.Tensor:
        """features: ``user_id`` and ``movie_id``, each ``[batch]`` strings."""
        query = self.query_tower(features[QUERY_FEATURE])
        candidate = self.candidate_tower(features[CANDIDATE_FEATURE])
        if self.global_negatives:
            candidate = global_batch_candidates(candidate)
        return self.task(query, candidate, compute_metrics=self.train_metrics or not training)


def make_optimizer(cfg: ModelConfig) -> tf.keras.optimizers.Optimizer:
    cls = {"adagrad": tf.keras.optimizers.Adagrad, "adam": tf.keras.optimizers.Adam,
           "sgd": tf.keras.optimizers.SGD}[cfg.optimizer]
    return cls(learning_rate=cfg.learning_rate)


def build_model(cfg: ModelConfig, user_vocabulary: Sequence[str], candidate_ids: Sequence[str]) -> TwoTowerModel:
    """A compiled, freshly initialised model (seeded by ``cfg.seed``)."""
    tf.keras.utils.set_random_seed(cfg.seed)
    model = TwoTowerModel(
        id_tower(user_vocabulary, cfg.embedding_dim, "query_tower"),
        id_tower(candidate_ids, cfg.embedding_dim, "candidate_tower"),
        candidate_ids,
        cfg,
    )
    model.compile(optimizer=make_optimizer(cfg))
    return model


def from_towers(cfg: ModelConfig, query_tower, candidate_tower, candidate_ids: Sequence[str]) -> TwoTowerModel:
    """A model around already trained towers, for evaluation."""
    model = TwoTowerModel(query_tower, candidate_tower, candidate_ids, cfg)
    model.compile(optimizer=make_optimizer(cfg))
    return model
