"""The two-tower retrieval model: TFRS's Retrieval task over the towers of scaleout.train.towers.

The loss is ``tfrs.tasks.Retrieval``'s in-batch softmax (computed by
``in_batch_softmax`` of scaleout.train.logits as each row's logsumexp less its
diagonal: the same loss without Retrieval's B x B label matrix, large logits a
block of queries at a time; Retrieval itself with hard negatives),
with the options of ModelConfig: temperature, sampling-bias (logQ) correction
from the candidates' training counts, removal of accidental hits (the same
candidate elsewhere in the batch) and hard negatives. Under a multi-replica strategy every option sees
the global batch, and a step sends as little between replicas as it can (see
scaleout.train.replicas).
"""

from __future__ import annotations

import json
from typing import Sequence

import numpy as np

from scaleout.config import ModelConfig
from scaleout.data.tfdata import NEXT
from scaleout.errors import ConfigError
from scaleout.names import TRAIN_COUNT
from scaleout.tfenv import cpu_allocator, tf, tfrs
from scaleout.train.features import FeatureTables, build_tables
from scaleout.train.logits import in_batch_softmax, model_scores, softmax_loss
from scaleout.train.ranking import RankTopK
from scaleout.train.replicas import (DENSE_GRADIENT_BYTES, all_reduce_step, allreduce_dtype, global_batch,
                                     gradient_form, own_first, replicas_in_sync, rows_from_floats, slot_rows,
                                     traced_collectives)
from scaleout.train.rows import RowAdagrad, read_rows
from scaleout.train.towers import (CANDIDATE_FEATURE, QUERY_FEATURE, TIMESTAMP_FEATURE, ItemEmbedding,
                                   candidate_tower, item_embedding, query_embeddings, query_tower, uses_history,
                                   uses_timestamp)


NEXT_CANDIDATES = NEXT + CANDIDATE_FEATURE  # the next batch's candidate ids, given by the input's lookahead


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
        self.reads_history = uses_history(query_tower)
        # iALS's columns (ModelConfig.ials_weight) are the query's zeros in training: the loss leaves them out
        self.served_only = cfg.ials_factors if cfg.ials_weight else 0
        # Candidate id by StringLookup row (row 0, ids outside the candidates: "", outside them too).
        self.row_ids = tf.constant(np.asarray([""] + list(candidate_ids), dtype=object))
        self.n_candidates = len(candidate_ids)
        if cfg.negatives == "full" and self.n_candidates > cfg.full_softmax_max:
            raise ConfigError(f"negatives 'full' scores all {self.n_candidates:,} candidates every step, above "
                              f"full_softmax_max={cfg.full_softmax_max:,}; raise it, or use negatives 'mixed' "
                              "(in-batch + sampled_negatives uniform ones)")
        self.task = tfrs.tasks.Retrieval(
            metrics=RankTopK(lambda: candidate_tower(self.row_ids[1:]), self.n_candidates, ks=cfg.top_ks),
            **self._loss_options(cfg),
        )
        # With accidental hits removed, the loss needs candidate ids; given them, FactorizedTopK would
        # match retrieved ids instead of scoring by value, so that loss has a task of its own.
        self.hits_task = tfrs.tasks.Retrieval(remove_accidental_hits=True, **self._loss_options(cfg)) \
            if cfg.remove_accidental_hits else None
        # The epoch's loss so far, summed over steps (reset by fit each epoch, see reset_metrics): with several
        # steps per tf.function call (steps_per_execution) callbacks see only every Nth step's logs. Every
        # replica adds the same global loss; a Keras metric would all-reduce its result every step.
        self.loss_sum = tf.Variable(0.0, dtype=tf.float64, trainable=False, name="epoch_loss_sum",
                                    aggregation=tf.VariableAggregation.ONLY_FIRST_REPLICA)
        # train_step reduces what it logs itself, in the one collective of its gradients (see train_step).
        self.distribute_reduction_method = "first"
        self.dense_gradient_bytes = DENSE_GRADIENT_BYTES
        self.slot_sparse_gradients = True  # see replicas.all_reduce_step (tests turn it off to test the rest)
        self.allreduce_dtype = "float32"  # of the packed all-reduce (TrainConfig.allreduce_dtype; set before fit)
        self.ring = None  # a connected scaleout.train.ring.Ring: the packed all-reduce over its sockets
        self.gradient_forms: dict = {}
        self.fitting = False
        # What one training step sends between replicas, as JSON (a list attribute would be tracked by Keras).
        self.collectives_json = "[]"
        # Where its CPU tensors were allocated while it trained (scaleout.tfenv.cpu_allocator) and its CPU
        # pinning: this process's, or, restored from a Ray run, its first worker's (scaleout.train.ray_backend).
        self.trained_allocator, self.trained_pinning = cpu_allocator(), "one process: not pinned"
        # Under several replicas with global negatives, given the next batch's candidate ids (NEXT_CANDIDATES,
        # see scaleout.data.tfdata's lookahead), each step sends the next batch's rows in its packed all-reduce
        # and keeps them here, replica-major, for the step after: one collective a step instead of two. Kept
        # out of Keras' tracking (it is a step's scratch, not a weight: not in checkpoints or get_weights).
        object.__setattr__(self, "sent_rows", tf.Variable(
            tf.zeros([0], tf.int64), shape=tf.TensorShape([None]), trainable=False, name="sent_rows",
            aggregation=tf.VariableAggregation.ONLY_FIRST_REPLICA))
        self.global_rows_by = None
        self.rows_sent_before = False  # read when a step is traced: the step uses sent_rows (see make_train_function)

    @staticmethod
    def _loss_options(cfg: ModelConfig) -> dict:
        return {"temperature": None if cfg.temperature == 1.0 else cfg.temperature,
                "num_hard_negatives": cfg.hard_negatives or None}

    def compute_loss(self, features: dict[str, tf.Tensor], training: bool = False) -> tf.Tensor:
        """features: ``user_id`` and ``movie_id`` (``[batch]`` strings), ``timestamp`` (int64) when there is one."""
        return self.loss_and_rows(features, training)[0]

    def loss_and_rows(self, features: dict[str, tf.Tensor], training: bool = False) -> tuple:
        """(the loss, the global batch's candidate rows, this replica's first, where the replicas exchange them;
        else None): see compute_loss."""
        global_rows = None
        # In training a history-aware tower leaves the example's own item out of the user's history.
        exclude = features[CANDIDATE_FEATURE] if self.reads_history and training else None
        whole_query = query_embeddings(self.query_tower, features[QUERY_FEATURE], features.get(TIMESTAMP_FEATURE),
                                       training=training, exclude=exclude)
        whole_own = self.candidate_tower(features[CANDIDATE_FEATURE])
        query, own = self.trained(whole_query, training), self.trained(whole_own, training)
        compute_metrics = self.cfg.train_metrics or not training
        if self.cfg.negatives == "full":
            loss = self.full_softmax(query, features[CANDIDATE_FEATURE], training)
            if compute_metrics:
                self.task(whole_query, whole_own, candidate_ids=self.own_rows(features), compute_metrics=True)
            return loss, global_rows
        candidate, rows = own, self.candidate_row(features[CANDIDATE_FEATURE])
        if self.exchanges_rows and replicas_in_sync() > 1:
            # The replicas gather the candidates' rows, not their embeddings, and each embeds the global batch
            # with its own copy of the candidate tower: its loss's gradient then reaches the tower's weights
            # here, and the all-reduce of the weights' gradients sums what every replica's queries contributed.
            # No collective of embeddings and their gradient; the rows were sent by the step before (in its
            # packed all-reduce) or, at a fit's first step, gathered here. (The tower is deterministic, so
            # each copy computes the same embeddings.)
            sent = training and self.rows_sent_before and NEXT_CANDIDATES in features
            rows = own_first(self.sent_rows.read_value(), rows) if sent else global_batch(rows)
            self.global_rows_by = "sent ahead" if sent else "gathered"  # by the step traced last (tests read it)
            global_rows = rows  # train_step sends the candidate table's gradient by them (candidate_rows_in_common)
            candidate = self.trained(self.candidate_tower(tf.gather(self.row_ids, rows)), training)
        extra = {}
        if self.cfg.logq_correction:
            # Retrieval subtracts log(p) from each candidate's logit.
            extra["candidate_sampling_probability"] = tf.gather(self.sampling_q, rows)
        if self.cfg.negatives == "mixed":
            candidate, rows, extra = self.with_sampled(candidate, rows, extra, training)
        if self.cfg.remove_accidental_hits:
            extra["candidate_ids"] = rows
        if self.cfg.hard_negatives:
            if self.hits_task is None and not (training and self.served_only):  # the metric's positives: the
                # first rows, this replica's own (with iALS's columns left out, below from the whole outputs)
                return self.task(query, candidate, compute_metrics=compute_metrics,
                                 candidate_ids=tf.cast(rows, tf.int32) - 1, **extra), global_rows
            loss = (self.hits_task or self.task)(query, candidate, compute_metrics=False, **extra)
        else:
            loss = in_batch_softmax(query, candidate, self.cfg.temperature, **extra)
        if compute_metrics:  # FactorizedTopK of the own candidates (the task's loss, computed again, unused)
            self.task(whole_query, whole_own, candidate_ids=self.own_rows(features), compute_metrics=True)
        return loss, global_rows

    def trained(self, embeddings: tf.Tensor, training: bool) -> tf.Tensor:
        """A tower's output as training scores it: without iALS's columns, which are the query's zeros there
        (``ServingFactors``), so the loss costs what the towers' own dimensions do."""
        return embeddings[:, :-self.served_only] if training and self.served_only else embeddings

    def own_rows(self, features: dict[str, tf.Tensor]) -> tf.Tensor:
        """Each example's candidate row, -1 outside the candidates (RankTopK leaves it out of its rank)."""
        return tf.cast(self.candidate_row(features[CANDIDATE_FEATURE]), tf.int32) - 1

    def full_softmax(self, query: tf.Tensor, positive_ids: tf.Tensor, training: bool = False) -> tf.Tensor:
        """Softmax cross-entropy of each query over every candidate (summed over the batch, as Retrieval's loss
        is), the candidates embedded by the tower each step."""
        everything = self.trained(self.candidate_tower(self.row_ids[1:]), training)  # [n_candidates, dim]
        labels = tf.cast(self.candidate_row(positive_ids), tf.int32) - 1  # StringLookup row 0 is the unknown id

        def one_piece():
            logits = model_scores(query, everything)
            if self.cfg.temperature != 1.0:
                logits /= self.cfg.temperature
            return tf.reduce_sum(tf.nn.sparse_softmax_cross_entropy_with_logits(labels, logits))

        # A block of queries at a time (scaleout.train.logits)
        return softmax_loss(query, everything, labels, one_piece, self.cfg.temperature)

    def with_sampled(self, candidate: tf.Tensor, rows: tf.Tensor, extra: dict, training: bool = False):
        """The in-batch candidates followed by ``sampled_negatives`` drawn uniformly from the catalogue (this
        replica's own draw). With logQ correction each part's logits are corrected by its own expected count
        of the candidate: in-batch, (batch rows) x its training frequency; sampled, draws / candidates.
        (Correcting every column by its item's expected count under the mixture, the sum of the two, measured
        worse on ml-100k's validation cut: recall@10 0.098 against 0.121 at epoch 23.)"""
        drawn = tf.random.uniform([self.cfg.sampled_negatives], 0, self.n_candidates, dtype=tf.int32)
        sampled = self.trained(self.candidate_tower(tf.gather(self.row_ids, drawn + 1)), training)
        if "candidate_sampling_probability" in extra:
            in_batch = extra["candidate_sampling_probability"] * tf.cast(tf.shape(rows)[0], tf.float32)
            uniform = tf.fill([self.cfg.sampled_negatives], self.cfg.sampled_negatives / self.n_candidates)
            extra = {**extra, "candidate_sampling_probability": tf.concat([in_batch, uniform], axis=0)}
        rows = tf.concat([rows, tf.cast(drawn, rows.dtype) + 1], axis=0)
        return tf.concat([candidate, sampled], axis=0), rows, extra

    @property
    def exchanges_rows(self) -> bool:
        """Whether a step under several replicas needs the global batch's candidate rows (global negatives
        over the batch; the full softmax scores every candidate instead)."""
        return self.cfg.global_negatives and self.cfg.negatives != "full"

    def make_train_function(self, force=False):
        """Keras' train function; under several replicas with rows sent ahead, two of them: the first call on a
        new input iterator gathers each batch's rows itself (nothing was sent before it), later calls use the
        rows the step before sent. Each is traced with its own ``rows_sent_before``."""
        if self.train_function is not None and not force:
            return self.train_function
        if self.distribute_strategy.num_replicas_in_sync == 1 or not self.exchanges_rows:
            return super().make_train_function(force)
        first, then = super().make_train_function(True), super().make_train_function(True)
        started: list = [None]  # the iterator the rows were sent ahead on

        def train_function(iterator):
            sent = started[0] is iterator
            started[0] = iterator
            self.rows_sent_before = sent
            return (then if sent else first)(iterator)

        self.train_function = train_function
        return train_function

    def train_step(self, inputs):
        """One step: TFRS's, with the replicas' gradients and logged values summed in one collective
        (scaleout.train.replicas). Keras would all-reduce each logged value on its own, every step, and the
        optimizer each sparse gradient on its own; on a CPU cluster every collective costs milliseconds.
        Given the next batch's candidate ids (NEXT_CANDIDATES), the same collective sends their rows ahead."""
        with tf.GradientTape() as tape:
            loss, global_rows = self.loss_and_rows(inputs, training=True)
            regularization = tf.add_n([tf.reduce_sum(x) for x in self.losses]) if self.losses else tf.zeros([])
            total = loss + regularization
        variables = self.trainable_variables
        gradients = tape.gradient(total, variables)
        metrics = self.metrics if self.cfg.train_metrics else []
        shown = {"loss": loss, "regularization_loss": regularization,
                 **{m.name: tf.cast(m.result(), tf.float32) for m in metrics}}
        replicas = replicas_in_sync()
        if replicas > 1:
            # Summed, as one process's over the global batch would be; metric results averaged (every replica
            # counts as many examples). How each gradient travels is kept, as traced (tests read it).
            gradients, same_rows = self.candidate_rows_in_common(gradients, variables, global_rows)
            self.gradient_forms = {v.name: gradient_form(g, v, replicas, self.dense_gradient_bytes,
                                                         self.slot_sparse_gradients, i in same_rows)
                                   for i, (g, v) in enumerate(zip(gradients, variables))}
            ahead = self.exchanges_rows and NEXT_CANDIDATES in inputs
            dtype = allreduce_dtype(self.allreduce_dtype)
            carry = slot_rows(self.candidate_row(inputs[NEXT_CANDIDATES]), dtype) if ahead else None
            gradients, shown, carried = all_reduce_step(gradients, variables, shown, self.dense_gradient_bytes,
                                                        averaged=frozenset(m.name for m in metrics), carry=carry,
                                                        slots=self.slot_sparse_gradients, same_rows=same_rows,
                                                        dtype=dtype, ring=self.ring)
            if ahead:
                self.sent_rows.assign(rows_from_floats(carried, dtype))
        if self.cfg.l2:
            gradients, penalty = self.with_row_l2(gradients, variables)
            shown["regularization_loss"] += penalty
        self.optimizer.apply_gradients(zip(gradients, variables), skip_gradients_aggregation=replicas > 1)
        self.loss_sum.assign_add(tf.cast(shown["loss"], tf.float64))
        self.collectives_json = json.dumps(traced_collectives())
        return {**shown, "total_loss": shown["loss"] + shown["regularization_loss"],
                "loss_sum": self.loss_sum.read_value()}

    def candidate_rows_in_common(self, gradients: list, variables: list, rows) -> tuple[list, frozenset]:
        """(gradients, indices of those every replica holds with the same rows in the same order).

        Under global negatives every replica embeds the whole global batch's candidates, so the candidate id
        table's gradient has the global batch's rows on every replica, this replica's first (``rows``; None
        where the replicas do not exchange them).
        Turned back to replica-major order it has the same rows everywhere, and only its values need to
        travel (``all_reduce_step``'s "same rows"): the global batch's rows x dim floats, whatever the
        number of replicas, where each replica's rows in a slot of their own cost replicas x rows x (dim + 2).
        Each step checks that the gradient's rows are the batch's (a tower that looks the table up again,
        as a history pooled through it does, has more rows and keeps the other forms). Only where the values
        are fewer floats than the table and the slots are allowed (``slot_sparse_gradients``)."""
        out, same = list(gradients), set()
        table = self._candidate_id_table()
        if rows is None or table is None or not self.slot_sparse_gradients or rows.shape[0] is None:
            return out, frozenset()
        context = tf.distribute.get_replica_context()
        for i, (g, v) in enumerate(zip(gradients, variables)):
            if v.name != table.name or not isinstance(g, tf.IndexedSlices) or g.indices.shape[0] != rows.shape[0]:
                continue
            floats = g.values.shape.num_elements()
            if floats is None or floats >= v.shape.num_elements():  # the table made dense is no larger
                continue
            check = tf.debugging.assert_equal(
                tf.cast(g.indices, tf.int64), tf.cast(rows, tf.int64),
                message="the candidate table's gradient is not over the global batch's candidate rows")
            before = context.replica_id_in_sync_group * (rows.shape[0] // context.num_replicas_in_sync)
            with tf.control_dependencies([check]):
                out[i] = tf.IndexedSlices(tf.roll(g.values, before, axis=0), tf.roll(g.indices, before, axis=0),
                                          g.dense_shape)
            same.add(i)
        return out, frozenset(same)

    def _candidate_id_table(self):
        """The candidate tower's id embedding table: its layer named candidate_embedding, or its one table."""
        layers = [layer for layer in self.candidate_tower.layers
                  if isinstance(layer, (tf.keras.layers.Embedding, ItemEmbedding))]
        named = [layer for layer in layers if layer.name == "candidate_embedding"]
        layer = named[0] if named else layers[0] if len(layers) == 1 else None
        return None if layer is None else layer.embeddings

    @property
    def step_collectives(self) -> list[dict]:
        """The collective ops of one training step (op, dtype, elements, bytes), as traced; [] in one process."""
        return json.loads(self.collectives_json)

    def fit(self, *args, **kwargs):
        self.fitting = True  # see get_metrics_result
        try:
            return super().fit(*args, **kwargs)
        finally:
            self.fitting = False

    def get_metrics_result(self):
        """The metrics' results, but nothing while fitting: Keras reads them after each epoch's steps only to
        put them in the epoch's logs when the step logged the same names, which this model's training step
        never does; under several workers each read all-reduces every metric variable, one eager collective
        at a time (75-125 ms an epoch on 2 Ray workers here, inside the epoch's time)."""
        return {} if self.fitting else super().get_metrics_result()

    def reset_metrics(self):
        super().reset_metrics()
        self.loss_sum.assign(0.0)

    def with_row_l2(self, gradients: list, variables: list) -> tuple[list, tf.Tensor]:
        """(gradients, penalty): each embedding table's gradient plus that of l2 x the squared norm of the rows
        this step's global batch touched (rows whose summed gradient is not zero), and the penalty's value.

        Applied to the summed gradients, once, it costs what the batch's rows cost: a penalty on whole tables
        made every step's gradient dense, an update of every row of every table (the user table alone is
        10M x dim at 100M interactions). Rows no batch touches keep their values, as they keep their
        optimizer state, until a batch touches them again.
        """
        out, penalty = list(gradients), []
        for i, (g, v) in enumerate(zip(gradients, variables)):
            if g is None or "embeddings" not in v.name:
                continue
            if isinstance(g, tf.IndexedSlices):
                rows, where = tf.unique(g.indices)
                summed = tf.math.unsorted_segment_sum(g.values, where, tf.size(rows))
                touched = tf.cast(tf.reduce_any(tf.not_equal(summed, 0.0), axis=1, keepdims=True), v.dtype)
                weights = read_rows(v, rows) * touched
                out[i] = tf.IndexedSlices(summed + 2.0 * self.cfg.l2 * weights, rows, g.dense_shape)
            else:
                touched = tf.cast(tf.reduce_any(tf.not_equal(g, 0.0), axis=1, keepdims=True), v.dtype)
                weights = v * touched
                out[i] = g + 2.0 * self.cfg.l2 * weights
            penalty.append(tf.reduce_sum(tf.square(weights)))
        return out, self.cfg.l2 * tf.add_n(penalty) if penalty else tf.zeros([])


def make_optimizer(cfg: ModelConfig) -> tf.keras.optimizers.Optimizer:
    cls = {"adagrad": RowAdagrad, "adam": tf.keras.optimizers.Adam,
           "sgd": tf.keras.optimizers.SGD}[cfg.optimizer]
    return cls(learning_rate=cfg.learning_rate)


def build_model(cfg: ModelConfig, user_vocabulary: Sequence[str], candidate_ids: Sequence[str],
                tables: FeatureTables | None = None, candidate_counts: np.ndarray | None = None,
                steps_per_execution: int = 1) -> TwoTowerModel:
    """A compiled, freshly initialised model (seeded by ``cfg.seed``)."""
    tf.keras.utils.set_random_seed(cfg.seed)
    shared = history = None
    if tables is not None and tables.history is not None:
        history = item_embedding(cfg, candidate_ids, "history_embedding" if cfg.history_table == "separate"
                                 else "candidate_embedding")
        shared = history if cfg.history_table == "shared" else None
    model = TwoTowerModel(query_tower(cfg, user_vocabulary, tables, candidate_ids, history),
                          candidate_tower(cfg, candidate_ids, tables, shared, candidate_counts), candidate_ids, cfg,
                          candidate_counts)
    model.compile(optimizer=make_optimizer(cfg), steps_per_execution=steps_per_execution)
    return model


def build_for_dataset(cfg: ModelConfig, dataset, tables: FeatureTables | None = None,
                      steps_per_execution: int = 1) -> TwoTowerModel:
    """``build_model`` with the dataset's vocabularies, the features ``cfg`` asks for and the candidates' counts.
    ``tables``: the coded features and history, built once by the caller (a Ray worker that holds only its own
    train shards must not build them from those)."""
    tables = tables if tables is not None else build_tables(dataset, cfg.features, cfg.history, cfg.ials)
    model = build_model(cfg, dataset.vocabulary(QUERY_FEATURE), dataset.vocabulary(CANDIDATE_FEATURE), tables,
                        candidate_counts(dataset), steps_per_execution)
    model.features = {"used": tables.used, "left_out": tables.left_out}
    return model


def candidate_counts(dataset) -> np.ndarray | None:
    """The candidates' training counts (candidates.parquet's train_count), in candidate order."""
    columns = dataset.candidates.column_names
    return dataset.candidates.column(TRAIN_COUNT).to_numpy() if TRAIN_COUNT in columns else None


def from_towers(cfg: ModelConfig, query, candidate, candidate_ids: Sequence[str],
                candidate_counts: np.ndarray | None = None) -> TwoTowerModel:
    """A model around already trained towers, for evaluation."""
    model = TwoTowerModel(query, candidate, candidate_ids, cfg, candidate_counts)
    model.compile(optimizer=make_optimizer(cfg))
    return model
