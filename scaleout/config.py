"""Settings for each stage, as frozen dataclasses.

They cross process boundaries as ``dataclasses.asdict(cfg)`` and are rebuilt
with ``from_dict``, which refuses unknown keys instead of ignoring them.
"""

from __future__ import annotations

import dataclasses
import json
from typing import Any, Type, TypeVar

from scaleout.errors import ConfigError
from scaleout.names import BASELINES, INDEX_KINDS, SCANN

T = TypeVar("T")

SOURCES = ("movielens", "tfds", "generic", "synthetic", "prepared")
SPLITS = ("random", "temporal")
REPEATED_PAIRS = ("first", "all")  # generic source: keep one row per (user, item) pair, or every row
OPTIMIZERS = ("adagrad", "adam", "sgd")
LEARNING_RATE_SCHEDULES = ("constant", "cosine")
# Side features of the towers (see scaleout.train.features).
QUERY_FEATURES = ("age", "gender", "occupation", "zip", "timestamp")
CANDIDATE_FEATURES = ("genres", "title")
FEATURES = QUERY_FEATURES + CANDIDATE_FEATURES
HISTORY_TABLES = ("shared", "separate")  # the history pooled through the candidate tower's id embedding, or its own
NEGATIVES = ("in_batch", "full", "mixed")
ALLREDUCE_DTYPES = ("float32", "bfloat16")
ALLREDUCE_TRANSPORTS = ("tensorflow", "sockets")


def _at_least(cfg: Any, minimum: int, *names: str, note: str = "") -> None:
    """ConfigError naming the first of ``names`` below ``minimum``."""
    for name in names:
        value = getattr(cfg, name)
        if value < minimum:
            raise ConfigError(f"{name} must be {note or f'at least {minimum}'}, got {value}")


def from_dict(cls: Type[T], d: dict[str, Any]) -> T:
    """Rebuilds ``cls`` from ``dataclasses.asdict`` output, naming unknown keys."""
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(d) - names)
    if unknown:
        raise ConfigError(f"{cls.__name__}: unknown setting(s) {unknown}; expected some of {sorted(names)}")
    return cls(**d)


def defaults(cls: type, prefix: str = "") -> dict[str, Any]:
    """Each setting of ``cls`` with its default, as JSON gives it back (tuples as lists), keyed ``prefix`` + name:
    what ``errors.settings_differ`` takes a setting to have been where an artifact records none (one written
    before the setting existed)."""
    return json.loads(json.dumps({prefix + f.name: f.default for f in dataclasses.fields(cls)
                                  if f.default is not dataclasses.MISSING}))


@dataclasses.dataclass(frozen=True)
class DataConfig:
    """How ``scaleout prepare`` reads a source and writes the Parquet dataset.

    source: one of SOURCES.
    path: a MovieLens directory or zip (movielens), a CSV/Parquet file or
      directory (generic), a prepared dataset whose train split is read
      (prepared, for a validation split); unused for tfds and synthetic.
    tfds_name: the TFDS variant, e.g. ``100k`` for movielens/100k-ratings.
    """

    source: str = "tfds"
    path: str | None = None
    tfds_name: str = "100k"
    tfds_data_dir: str | None = None
    split: str = "random"
    test_fraction: float = 0.2
    seed: int = 42
    train_shards: int = 4
    test_shards: int = 1
    row_group_size: int = 65_536
    # Rows processed at a time; the random split is drawn per chunk, so the
    # chunk size is part of what makes a split reproducible.
    chunk_rows: int = 1_000_000
    # synthetic source only
    synthetic_users: int = 10_000
    synthetic_items: int = 5_000
    synthetic_interactions: int = 200_000
    synthetic_zipf: float = 1.1
    # generic and synthetic sources: "first" keeps the first row of each (user, item) pair, so that a pair
    # never lands in both train and test (synthetic: draws until that many distinct pairs); "all" keeps
    # repeated rows (repeat interactions as data)
    repeated_pairs: str = "first"

    def __post_init__(self) -> None:
        if self.source not in SOURCES:
            raise ConfigError(f"unknown source {self.source!r}; expected one of {', '.join(SOURCES)}")
        if self.split not in SPLITS:
            raise ConfigError(f"unknown split {self.split!r}; expected one of {', '.join(SPLITS)}")
        if self.repeated_pairs not in REPEATED_PAIRS:
            raise ConfigError(f"unknown repeated_pairs {self.repeated_pairs!r}; expected one of "
                              f"{', '.join(REPEATED_PAIRS)}")
        if not 0.0 < self.test_fraction < 1.0:
            raise ConfigError(f"test_fraction must be in (0, 1), got {self.test_fraction}")
        _at_least(self, 1, "train_shards", "test_shards", "row_group_size", "chunk_rows")
        if self.source in ("movielens", "generic", "prepared") and not self.path:
            raise ConfigError(f"source {self.source!r} needs a path (a directory or file to read)")
        if self.source == "synthetic":
            _at_least(self, 1, "synthetic_users", "synthetic_items", "synthetic_interactions")
            if self.synthetic_zipf <= 0:
                raise ConfigError(f"synthetic_zipf must be positive, got {self.synthetic_zipf}")


@dataclasses.dataclass(frozen=True)
class ModelConfig:
    """The two-tower model; defaults are the TFRS basic retrieval tutorial's."""

    embedding_dim: int = 32
    optimizer: str = "adagrad"
    learning_rate: float = 0.1
    # "constant", or "cosine": epoch e of E (from 0) trains at learning_rate x (1 + cos(pi (e + 0.5) / E)) / 2,
    # from nearly the full rate down to nearly 0, set as each epoch begins (scaleout.train.callbacks), so a resumed
    # run and every Ray worker train each epoch at the rate the uninterrupted run does.
    learning_rate_schedule: str = "constant"
    # Training-time FactorizedTopK is slow and the tutorial advises against it.
    train_metrics: bool = False
    top_ks: tuple[int, ...] = (1, 5, 10, 50, 100)
    seed: int = 42
    # With several replicas, score each query against the candidates of the whole
    # global batch (gathered across replicas), as one process with that batch does.
    global_negatives: bool = True
    # Side features (names from FEATURES) and ReLU layers above them; none: the tutorial's id towers.
    features: tuple[str, ...] = ()
    deep_layers: tuple[int, ...] = ()
    # Loss options (see scaleout.train.model): softmax temperature (logits / t), sampling-bias correction
    # with the candidates' training counts, accidental hits removed, hard negatives kept per query (0: all).
    temperature: float = 1.0
    # Each tower's output scaled to unit length, so a score is the cosine of the two (logits / temperature
    # in training; the order served is the same, the exports' dot product being of unit vectors).
    cosine: bool = False
    logq_correction: bool = False
    remove_accidental_hits: bool = False
    hard_negatives: int = 0
    l2: float = 0.0  # weight of the L2 penalty on the embedding rows each step's batch touches
    # The user's history in the query tower (see scaleout.train.towers): the ``history`` most recent training
    # items of the user (0: none), mean-pooled through the candidate id embedding ("shared") or a table of its
    # own ("separate"), each item dropped with probability ``history_dropout`` while training; the example's
    # own item is never in its history. ``user_embedding``: add the user id's embedding to it.
    history: int = 0
    history_table: str = "shared"
    history_dropout: float = 0.0
    user_embedding: bool = True
    # Negatives of the softmax: "in_batch" (the batch's candidates, global across workers), "full" (every
    # candidate, while the catalogue has at most ``full_softmax_max``), "mixed" (in-batch plus
    # ``sampled_negatives`` drawn uniformly from the catalogue each step, each part with its own logQ).
    negatives: str = "in_batch"
    full_softmax_max: int = 100_000
    sampled_negatives: int = 0
    # A popularity prior served with the scores: ``q . c + popularity_prior x log(1 + the candidate's training
    # count)`` at evaluation and serving, one more dimension of each tower's output (0: none). Training's scores
    # are the towers' dot product alone (logQ correction takes popularity out of the loss; this puts it back).
    popularity_prior: float = 0.0
    # iALS's factors beside the towers' (see scaleout.train.towers): ``q . c + ials_weight x u . v`` at evaluation
    # and serving, where u and v are the user's and the candidate's factors of implicit's ALS fitted once on the
    # training split (``ials_factors`` dimensions, weight ``ials_alpha`` on the observed entries, L2 ``ials_l2``,
    # 15 iterations), ``ials_factors`` more dimensions of each tower's output (0: none). Training's scores are the
    # towers' dot product alone; the factors are constants of the towers, saved with them.
    ials_weight: float = 0.0
    ials_factors: int = 128
    ials_alpha: float = 3.0
    ials_l2: float = 30.0
    # The embedding tables' initial values: 0 draws them from Keras' default, uniform in [-0.05, 0.05] (a
    # standard deviation of 0.029; every model before 2026-12-05); above 0, from a normal distribution with this
    # standard deviation. Smaller starts fit each user's training items later (benchmarks/quality_cuts.py).
    init_stddev: float = 0.0

    @property
    def ials(self) -> dict | None:
        """iALS's setting (scaleout.train.ials), or None without ``ials_weight``."""
        return ({"factors": self.ials_factors, "alpha": self.ials_alpha, "regularization": self.ials_l2}
                if self.ials_weight else None)

    def __post_init__(self) -> None:
        _at_least(self, 1, "embedding_dim")
        _at_least(self, 0, "history", note="0 (no history) or more items")
        _at_least(self, 0, "sampled_negatives", note="0 or more")
        _at_least(self, 1, "full_softmax_max")
        _at_least(self, 0, "popularity_prior", note="0 (none) or more")
        _at_least(self, 0, "init_stddev", note="0 (Keras' uniform in [-0.05, 0.05]) or more")
        _at_least(self, 0, "ials_weight", note="0 (none) or more")
        _at_least(self, 1, "ials_factors")
        if not self.ials_alpha > 0 or self.ials_l2 < 0:
            raise ConfigError(f"ials_alpha must be positive and ials_l2 0 or more, got {self.ials_alpha} and "
                              f"{self.ials_l2}")
        if self.ials_weight and not self.user_embedding:
            raise ConfigError("ials_weight needs the user embedding: iALS's user factors are fitted per training "
                              "user, and a tower without user ids serves users from their items alone")
        if self.history_table not in HISTORY_TABLES:
            raise ConfigError(f"unknown history_table {self.history_table!r}; expected one of "
                              f"{', '.join(HISTORY_TABLES)}")
        if not 0.0 <= self.history_dropout < 1.0:
            raise ConfigError(f"history_dropout must be in [0, 1), got {self.history_dropout}")
        if not self.history and not self.user_embedding:
            raise ConfigError("user_embedding is off and history is 0: the query tower would have no input; "
                              "give history > 0 or keep the user embedding")
        if self.negatives not in NEGATIVES:
            raise ConfigError(f"unknown negatives {self.negatives!r}; expected one of {', '.join(NEGATIVES)}")
        if self.negatives == "mixed" and not self.sampled_negatives:
            raise ConfigError("negatives 'mixed' needs sampled_negatives > 0 (uniform negatives per step)")
        if self.negatives == "full" and (self.hard_negatives or self.remove_accidental_hits or self.logq_correction):
            raise ConfigError("negatives 'full' scores each candidate once, unsampled: hard_negatives, "
                              "remove_accidental_hits and logq_correction apply to sampled negatives only")
        _at_least(self, 0, "hard_negatives", note="0 (all in-batch negatives) or more")
        for name in ("features", "deep_layers"):
            object.__setattr__(self, name, tuple(getattr(self, name)))
        unknown = [f for f in self.features if f not in FEATURES]
        if unknown:
            raise ConfigError(f"unknown feature(s) {unknown}; expected some of {', '.join(FEATURES)}")
        if len(set(self.features)) != len(self.features):
            raise ConfigError(f"features lists a feature twice: {self.features}")
        if any(int(w) < 1 for w in self.deep_layers):
            raise ConfigError(f"deep_layers must be positive widths, got {self.deep_layers}")
        object.__setattr__(self, "deep_layers", tuple(int(w) for w in self.deep_layers))
        if not self.temperature > 0:
            raise ConfigError(f"temperature must be positive, got {self.temperature}")
        if self.l2 < 0:
            raise ConfigError(f"l2 must be 0 or more, got {self.l2}")
        if self.optimizer not in OPTIMIZERS:
            raise ConfigError(f"unknown optimizer {self.optimizer!r}; expected one of {', '.join(OPTIMIZERS)}")
        if self.learning_rate <= 0:
            raise ConfigError(f"learning_rate must be positive, got {self.learning_rate}")
        if self.learning_rate_schedule not in LEARNING_RATE_SCHEDULES:
            raise ConfigError(f"unknown learning_rate_schedule {self.learning_rate_schedule!r}; expected one of "
                              f"{', '.join(LEARNING_RATE_SCHEDULES)}")
        # Lists arrive from JSON; keep the dataclass hashable and comparable.
        object.__setattr__(self, "top_ks", tuple(int(k) for k in self.top_ks))
        if not self.top_ks or min(self.top_ks) < 1:
            raise ConfigError(f"top_ks must be positive integers, got {self.top_ks}")


BACKENDS = ("local", "ray")
CHECKPOINT_UPLOADS = ("async", "sync")


@dataclasses.dataclass(frozen=True)
class TrainConfig:
    """How a model is fitted: batch, epochs, input pipeline, and (backend ray) workers.

    batch_size is the global batch: with N workers each takes batch_size / N
    examples per step, and with global negatives the step computes the same
    loss and gradient as one process with batch_size (see README).
    """

    batch_size: int = 8192
    eval_batch_size: int = 4096
    epochs: int = 3
    shuffle_buffer: int = 100_000
    seed: int = 42
    # Training steps per tf.function call: each call costs a round trip to Python and a wait for its
    # result; callbacks (the epoch's loss, the divergence check) then see every Nth step. 8 measured
    # faster than 1 in one process and on 2 Ray workers (benchmarks/ray_scaling.py).
    steps_per_execution: int = 8
    profile_epoch: int = 0  # trace this epoch (1..epochs) in every process that trains: RUN/metrics/profile
    backend: str = "local"
    # backend "ray" only
    workers: int = 2
    cpus_per_worker: int = 1
    pin_cpus: bool = True  # each worker on CPUs of its own where that is safe (scaleout.train.cpus)
    # The step's packed all-reduce: "float32", or "bfloat16" for half the bytes, its gradients rounded to 8
    # significant bits (row ids and logged values still exact; scaleout.train.replicas). The quality preset's is
    # bfloat16 (scaleout.train.presets).
    allreduce_dtype: str = "float32"
    # How it travels: "sockets", a ring of plain TCP sockets between the workers (scaleout.train.ring), or
    # "tensorflow", its collective over its gRPC worker service: the same sums, the sockets' cheaper a step on CPU
    # hosts (benchmarks/ray_scaling.py, 2026-12-07: 2 workers' examples/s 1.13-1.23x by round at the default preset).
    allreduce_transport: str = "sockets"
    # Checkpoints, both backends (the local backend's removed once its model is saved; scaleout.train.local)
    checkpoint_every: int = 1
    # At least this many seconds between checkpoints (the last epoch's is always kept): Ray Train's controller
    # takes one report per health check (RAY_TRAIN_HEALTH_CHECK_INTERVAL_S, 2 s by default), so epochs shorter
    # than that queued their checkpoints behind each other and the last one waited for all of them.
    checkpoint_min_interval: float = 2.0
    # Also a checkpoint within an epoch every this many steps (0: at epochs' ends only; subject to the least
    # interval above), for epochs long enough that a failure should not lose one: a run resumes at its step.
    # Backend ray only, as are checkpoint_upload and max_failures.
    checkpoint_every_steps: int = 0
    # "async": rank 0 hands the written checkpoint to Ray Train, which uploads it to the storage in a thread
    # while the next epoch trains; "sync": the workers wait for the upload (ray.train.report's upload modes).
    checkpoint_upload: str = "async"
    max_failures: int = 3
    storage: str | None = None  # local path or URI (s3://, gs://); default RUN/checkpoints
    resume: bool = False

    def __post_init__(self) -> None:
        _at_least(self, 1, "batch_size", "eval_batch_size", "epochs", "workers", "cpus_per_worker", "checkpoint_every",
                  "steps_per_execution")
        _at_least(self, 0, "shuffle_buffer", "checkpoint_min_interval", "checkpoint_every_steps", note="0 or more")
        if not 0 <= self.profile_epoch <= self.epochs:
            raise ConfigError(f"profile_epoch must be 0 (none) or an epoch from 1 to {self.epochs}, "
                              f"got {self.profile_epoch}")
        if self.max_failures < -1:
            raise ConfigError(f"max_failures must be -1 (no limit) or more, got {self.max_failures}")
        if self.backend not in BACKENDS:
            raise ConfigError(f"unknown backend {self.backend!r}; expected one of {', '.join(BACKENDS)}")
        if self.allreduce_dtype not in ALLREDUCE_DTYPES:
            raise ConfigError(f"unknown allreduce_dtype {self.allreduce_dtype!r}; expected one of "
                              f"{', '.join(ALLREDUCE_DTYPES)}")
        if self.allreduce_transport not in ALLREDUCE_TRANSPORTS:
            raise ConfigError(f"unknown allreduce_transport {self.allreduce_transport!r}; expected one of "
                              f"{', '.join(ALLREDUCE_TRANSPORTS)}")
        if self.checkpoint_upload not in CHECKPOINT_UPLOADS:
            raise ConfigError(f"unknown checkpoint_upload {self.checkpoint_upload!r}; expected one of "
                              f"{', '.join(CHECKPOINT_UPLOADS)}")
        if self.backend == "ray" and self.batch_size % self.workers:
            raise ConfigError(f"batch_size {self.batch_size} is not divisible by {self.workers} workers; "
                              "the global batch is split evenly over the workers")


@dataclasses.dataclass(frozen=True)
class EmbedConfig:
    """How the embedding job runs (scaleout.embed.job): backend, workers, and the parts it cuts the candidates into.

    part_rows: candidates per output part, the unit of work and of resuming.
    max_parts: embed at most this many parts in one run, then stop (run again to continue).
    """

    backend: str = "local"
    workers: int = 2  # actors, backend ray only
    cpus_per_worker: int = 1
    part_rows: int = 500_000
    max_parts: int | None = None

    def __post_init__(self) -> None:
        if self.backend not in BACKENDS:
            raise ConfigError(f"unknown backend {self.backend!r}; expected one of {', '.join(BACKENDS)}")
        _at_least(self, 1, "workers", "cpus_per_worker", "part_rows")
        if self.max_parts is not None and self.max_parts < 1:
            raise ConfigError(f"max_parts must be at least 1, got {self.max_parts}")


INDEX_MODES = ("auto", "brute_force", "ah", "tree")
REORDER_DTYPES = ("float32", "bfloat16", "int8")


@dataclasses.dataclass(frozen=True)
class IndexConfig:
    """How the ScaNN index is built; 0 means "scale with the catalogue" (see scaleout.index.scann.Scann).

    The mode follows ScaNN's rules of thumb: fewer than ``brute_force_below``
    candidates are scored exhaustively, fewer than ``tree_below`` are scored
    with anisotropic hashing and reordered, larger catalogues are partitioned
    into a tree of about sqrt(N) leaves first.
    """

    mode: str = "auto"  # or brute_force, ah, tree
    num_leaves: int = 0  # 0: leaves_per_sqrt x sqrt(N)
    # The tree and search defaults are the ANN benchmark tuner's choice (benchmarks/reports/cpu;
    # tests/bench/test_bench.py checks the two agree): per k served, the one setting of its grid reaching
    # recall@k >= 0.95 on every synthetic catalogue of 100K to 10M at the lowest latency.
    leaves_per_sqrt: float = 2.0
    training_sample_size: int = 0
    dims_per_block: int = 1
    anisotropic_threshold: float = 0.2
    brute_force_below: int = 20_000
    tree_below: int = 100_000
    # ScaNN's newer options, in the benchmark grid (benchmarks/reports/cpu says what they cost and give):
    soar_lambda: float = 0.0  # > 0: SOAR spilling, each candidate also in a second leaf (dot product; ~1.0-1.5)
    reorder_dtype: str = "float32"  # the copy rescored exactly: float32, bfloat16 or int8 (a quarter the memory)
    # Default search settings (each search call may override them). A search for k results looks in
    # enough leaves to visit points_per_result x k candidates, and at least leaves_fraction of the leaves,
    # then rescores reorder_per_k x k exactly: one row of search_by_k, the first whose k is >= the k asked
    # for (the last beyond it). A non-zero field below replaces that row's value for every k.
    search_by_k: tuple = ((10, 0.02, 1000, 6), (100, 0.02, 500, 3), (1000, 0.02, 300, 3))
    leaves_to_search: int = 0  # 0: from the k searched for (search_by_k)
    leaves_fraction: float = 0.0  # 0: search_by_k's; else this share of the leaves, whatever k
    points_per_result: int = 0  # 0: search_by_k's
    reorder: int = 0  # 0: max(reorder_per_k * k, reorder_min)
    reorder_per_k: int = 0  # 0: search_by_k's
    reorder_min: int = 30  # a floor for small k

    def search_row(self, k: int) -> tuple[float, int, int]:
        """(leaves_fraction, points_per_result, reorder_per_k) for a search for k results: the row of
        search_by_k for k, with the fields set on this config in its place. A leaves_fraction set here means
        that share of the leaves alone (as before the rows existed): points_per_result then applies only if
        set too."""
        row = next((r for r in self.search_by_k if k <= r[0]), self.search_by_k[-1])
        fraction, per_result, per_k = row[1], row[2], row[3]
        if self.leaves_fraction:
            fraction, per_result = self.leaves_fraction, self.points_per_result
        elif self.points_per_result:
            per_result = self.points_per_result
        return fraction, per_result, self.reorder_per_k or per_k

    def __post_init__(self) -> None:
        _at_least(self, 0, "num_leaves", "training_sample_size", "brute_force_below", "tree_below",
                  "leaves_to_search", "reorder", note="0 (automatic) or more")
        _at_least(self, 0, "points_per_result", "reorder_per_k", note="0 (by k, search_by_k) or more")
        _at_least(self, 1, "dims_per_block", "reorder_min")
        rows = tuple(tuple(r) for r in self.search_by_k)
        object.__setattr__(self, "search_by_k", rows)  # lists from JSON or YAML, kept as tuples
        if not rows or any(len(r) != 4 for r in rows) or [r[0] for r in rows] != sorted({r[0] for r in rows}) \
                or any(not (r[0] >= 1 and 0.0 < r[1] <= 1.0 and r[2] >= 0 and r[3] >= 1) for r in rows):
            raise ConfigError(f"search_by_k {rows!r}: expected rows (k, leaves_fraction in (0, 1], "
                              "points_per_result >= 0, reorder_per_k >= 1) in increasing k")
        if self.soar_lambda < 0.0:
            raise ConfigError(f"soar_lambda must be 0 (off) or positive, got {self.soar_lambda}")
        if self.reorder_dtype not in REORDER_DTYPES:
            raise ConfigError(f"reorder_dtype {self.reorder_dtype!r}: expected one of {', '.join(REORDER_DTYPES)}")
        if self.mode not in INDEX_MODES:
            raise ConfigError(f"unknown ScaNN mode {self.mode!r}; expected one of {', '.join(INDEX_MODES)}")
        if not self.leaves_per_sqrt > 0.0:
            raise ConfigError(f"leaves_per_sqrt must be positive, got {self.leaves_per_sqrt}")
        if not 0.0 <= self.leaves_fraction <= 1.0:
            raise ConfigError(f"leaves_fraction must be in (0, 1] (or 0: by k), got {self.leaves_fraction}")
        if not 0.0 <= self.anisotropic_threshold < 1.0:
            raise ConfigError(f"anisotropic_threshold must be in [0, 1), got {self.anisotropic_threshold}")


@dataclasses.dataclass(frozen=True)
class IndexJobConfig:
    """The embed-and-index job (``scaleout index``, jobs/embed_index.py): embed, build, evaluate, export.

    candidates: a candidate table to embed instead of RUN/data/candidates.parquet.
    embeddings: embeddings made elsewhere to index instead of embedding with RUN/model.
    kinds: the indexes to build; export: the retrieval SavedModels to write after them, with k ``export_k``.
    """

    embed: EmbedConfig = EmbedConfig()
    index: IndexConfig = IndexConfig()
    kinds: tuple[str, ...] = INDEX_KINDS
    candidates: str | None = None
    embeddings: str | None = None
    evaluate: bool = True
    export: tuple[str, ...] = ()
    export_k: int = 10

    def __post_init__(self) -> None:
        # Nested configs arrive as dicts from dataclasses.asdict.
        if isinstance(self.embed, dict):
            object.__setattr__(self, "embed", from_dict(EmbedConfig, self.embed))
        if isinstance(self.index, dict):
            object.__setattr__(self, "index", from_dict(IndexConfig, self.index))
        for name in ("kinds", "export"):
            values = tuple(getattr(self, name))
            object.__setattr__(self, name, values)
            unknown = [v for v in values if v not in INDEX_KINDS]
            if unknown:
                raise ConfigError(f"unknown index kind(s) {unknown} in {name}; "
                                  f"expected some of {', '.join(INDEX_KINDS)}")
        if not self.kinds:
            raise ConfigError(f"kinds is empty; expected some of {', '.join(INDEX_KINDS)}")
        _at_least(self, 1, "export_k")
        uncarried = [o for o, on in (("soar_lambda", self.index.soar_lambda),
                                     ("reorder_dtype=bfloat16", self.index.reorder_dtype == "bfloat16")) if on]
        if SCANN in self.export and uncarried:
            raise ConfigError(f"a ScaNN SavedModel cannot carry {' or '.join(uncarried)}: ScaNN's TensorFlow ops "
                              "have no place for their files; drop the option or the scann export")


# the stages of `scaleout pipeline` after prepare, train and embed-and-index, which a run may leave out
SKIPPABLE_STAGES = ("evaluate", "through_index", "export", "quality")


@dataclasses.dataclass(frozen=True)
class PipelineConfig:
    """The main job (``scaleout pipeline``): every stage's settings, and what it prints and exports at the end.

    The embedding job runs on the training backend, with its workers.
    """

    data: DataConfig = DataConfig()
    model: ModelConfig = ModelConfig()
    train: TrainConfig = TrainConfig()
    index: IndexConfig = IndexConfig()
    user: str = "42"  # recommendations printed for this user
    k: int = 3
    export_k: int = 10
    exclude_seen: bool = False
    baselines: tuple[str, ...] = BASELINES
    # the evaluation through the indexes and the quality report on the test rows of this many users drawn at
    # random with sample_seed, with 95% intervals (0: every test row)
    sample_users: int = 0
    sample_seed: int = 0
    skip: tuple[str, ...] = ()  # stages left out (SKIPPABLE_STAGES), e.g. every evaluation at 100M interactions

    def __post_init__(self) -> None:
        object.__setattr__(self, "baselines", tuple(self.baselines))
        object.__setattr__(self, "skip", tuple(self.skip))
        unknown = [b for b in self.baselines if b not in BASELINES]
        if unknown:
            raise ConfigError(f"unknown baseline(s) {unknown}; expected some of {', '.join(BASELINES)}")
        unknown = [s for s in self.skip if s not in SKIPPABLE_STAGES]
        if unknown:
            raise ConfigError(f"cannot skip stage(s) {unknown}; these can be skipped: {', '.join(SKIPPABLE_STAGES)}")
        _at_least(self, 1, "k", "export_k")
        _at_least(self, 0, "sample_users")
