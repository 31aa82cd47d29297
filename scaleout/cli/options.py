"""Options shared by the ``scaleout`` command and the Ray jobs (jobs/*.py), and the configs they make.

Each ``*_args`` function adds a group of options to a parser; the matching
function turns the parsed options into a frozen config (presets first, then
the flags given). Every default comes from its config.
"""

from __future__ import annotations

import argparse
import os

from scaleout.config import (ALLREDUCE_DTYPES, ALLREDUCE_TRANSPORTS, BACKENDS, CHECKPOINT_UPLOADS, FEATURES,
                             HISTORY_TABLES, INDEX_MODES, LEARNING_RATE_SCHEDULES, NEGATIVES, OPTIMIZERS,
                             REORDER_DTYPES, REPEATED_PAIRS, SOURCES, SKIPPABLE_STAGES, SPLITS, DataConfig,
                             EmbedConfig, IndexConfig, IndexJobConfig, ModelConfig, PipelineConfig, TrainConfig)
from scaleout.names import BASELINES, INDEX_KINDS
from scaleout.train.presets import DEFAULT as DEFAULT_PRESET
from scaleout.train.presets import PRESETS
from scaleout.train.presets import configs as preset_configs

MOVIELENS_DIR_ENV = "SCALEOUT_MOVIELENS_DIR"


def positive(text: str) -> int:
    """An argparse type: a count of at least 1 (refused at parse time, with the option's name)."""
    return _count(text, 1)


def non_negative(text: str) -> int:
    """An argparse type: 0 (automatic, or none) or more."""
    return _count(text, 0)


def _count(text: str, minimum: int) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if value < minimum:
        raise argparse.ArgumentTypeError(f"{value} is below {minimum}")
    return value


def data_args(p: argparse.ArgumentParser) -> None:
    d = DataConfig()
    g = p.add_argument_group("data")
    g.add_argument("--source", choices=SOURCES,
                   help=f"where interactions come from (default: movielens from ${MOVIELENS_DIR_ENV} when set, "
                        "else tfds)")
    g.add_argument("--path", help="MovieLens directory or zip (movielens); CSV/Parquet file or directory (generic); "
                                  "a prepared dataset whose train split is read (prepared)")
    g.add_argument("--tfds-name", default=d.tfds_name, help="TFDS MovieLens variant: 100k, 1m, 20m, 25m (default %(default)s)")
    g.add_argument("--tfds-data-dir", default=None, help="TFDS data directory")
    g.add_argument("--split", choices=SPLITS, default=d.split, help="random (default) or temporal")
    g.add_argument("--test-fraction", type=float, default=d.test_fraction, help="default %(default)s")
    g.add_argument("--seed", type=int, default=d.seed, help="split seed (default %(default)s)")
    g.add_argument("--train-shards", type=positive, default=d.train_shards, help="default %(default)s")
    g.add_argument("--test-shards", type=positive, default=d.test_shards, help="default %(default)s")
    g.add_argument("--row-group-size", type=positive, default=d.row_group_size, help="default %(default)s")
    g.add_argument("--chunk-rows", type=positive, default=d.chunk_rows, help="rows processed at a time (default %(default)s)")
    g.add_argument("--synthetic-users", type=positive, default=d.synthetic_users)
    g.add_argument("--synthetic-items", type=positive, default=d.synthetic_items)
    g.add_argument("--synthetic-interactions", type=positive, default=d.synthetic_interactions)
    g.add_argument("--synthetic-zipf", type=float, default=d.synthetic_zipf, help="item popularity exponent")
    g.add_argument("--repeated-pairs", choices=REPEATED_PAIRS, default=d.repeated_pairs,
                   help="generic and synthetic: first keeps one row per (user, item) pair, so a pair never lands "
                        "in both train and test (synthetic draws until it has that many distinct pairs); all keeps "
                        "repeated rows (default %(default)s)")


def data_config(a: argparse.Namespace) -> DataConfig:
    source, path = a.source, a.path
    if source is None:
        env_dir = os.environ.get(MOVIELENS_DIR_ENV)
        source, path = ("movielens", path or env_dir) if env_dir else ("tfds", path)
    return DataConfig(
        source=source, path=path, tfds_name=a.tfds_name, tfds_data_dir=a.tfds_data_dir, split=a.split,
        test_fraction=a.test_fraction, seed=a.seed, train_shards=a.train_shards, test_shards=a.test_shards,
        row_group_size=a.row_group_size, chunk_rows=a.chunk_rows, synthetic_users=a.synthetic_users,
        synthetic_items=a.synthetic_items, synthetic_interactions=a.synthetic_interactions,
        synthetic_zipf=a.synthetic_zipf, repeated_pairs=a.repeated_pairs,
    )


def add_train_args(p: argparse.ArgumentParser, backend: bool = True) -> None:
    """Model and training options, shared by the `scaleout` command and jobs/train.py.

    Options left out take the preset's value (see scaleout.train.presets), so their
    defaults are None here.
    """
    t = TrainConfig()
    g = p.add_argument_group("model and training (defaults: the preset's; see scaleout/presets.py)")
    g.add_argument("--preset", choices=sorted(PRESETS), default=DEFAULT_PRESET,
                   help="quality: the settings of the documented search; history: its best query tower built "
                        "from the user's items (serves new users from --items); tutorial: the TFRS tutorial's "
                        "(default %(default)s)")
    if backend:
        g.add_argument("--backend", choices=BACKENDS, default=t.backend,
                       help="local: this process; ray: Ray Train workers (default %(default)s)")
    g.add_argument("--embedding-dim", type=positive)
    g.add_argument("--optimizer", choices=OPTIMIZERS)
    g.add_argument("--learning-rate", type=float)
    g.add_argument("--learning-rate-schedule", choices=LEARNING_RATE_SCHEDULES,
                   help="constant, or cosine: each epoch's rate decays from the learning rate towards 0")
    g.add_argument("--batch-size", type=positive, help="global batch")
    g.add_argument("--epochs", type=positive)
    g.add_argument("--features", nargs="*", choices=FEATURES, metavar="FEATURE",
                   help=f"side features of the towers, some of: {', '.join(FEATURES)} (none: ids only)")
    g.add_argument("--deep-layers", nargs="*", type=positive, metavar="WIDTH", help="ReLU layers above the features")
    g.add_argument("--temperature", type=float, help="softmax temperature (logits / t)")
    g.add_argument("--cosine", action=argparse.BooleanOptionalAction,
                   help="unit-length tower outputs: scores are cosines (use with a temperature under 1)")
    g.add_argument("--logq-correction", action=argparse.BooleanOptionalAction,
                   help="correct the in-batch softmax for sampling bias with the candidates' training counts")
    g.add_argument("--remove-accidental-hits", action=argparse.BooleanOptionalAction,
                   help="do not count the positive's other copies in the batch as negatives")
    g.add_argument("--hard-negatives", type=non_negative, help="keep only this many hardest in-batch negatives (0: all)")
    g.add_argument("--l2", type=float, help="L2 penalty on the embedding rows each batch touches")
    g.add_argument("--init-stddev", type=float,
                   help="the embedding tables' initial values: normal with this standard deviation (0: Keras' "
                        "uniform in [-0.05, 0.05])")
    g.add_argument("--history", type=non_negative, metavar="ITEMS",
                   help="the user's most recent training items pooled into the query tower (0: none)")
    g.add_argument("--history-table", choices=HISTORY_TABLES,
                   help="pool the history through the candidate tower's id embedding (shared) or its own (separate)")
    g.add_argument("--history-dropout", type=float, help="drop each history item with this probability in training")
    g.add_argument("--user-embedding", action=argparse.BooleanOptionalAction,
                   help="add the user id's embedding to the query (off: the query is the history alone)")
    g.add_argument("--negatives", choices=NEGATIVES,
                   help="in_batch, full (every candidate) or mixed (in-batch + --sampled-negatives uniform ones)")
    g.add_argument("--sampled-negatives", type=non_negative, help="uniform negatives per step (negatives mixed)")
    g.add_argument("--full-softmax-max", type=positive, help="the most candidates negatives full may score a step")
    g.add_argument("--popularity-prior", type=float, metavar="BETA",
                   help="served scores add BETA x log(1 + the candidate's training count); training's do not "
                        "(0: none)")
    g.add_argument("--ials-weight", type=float, metavar="W",
                   help="served scores add W x the dot product of the user's and the candidate's iALS factors, "
                        "fitted on the training split; training's do not (0: none)")
    g.add_argument("--ials-factors", type=positive, help="iALS's dimensions under --ials-weight")
    g.add_argument("--ials-alpha", type=float, help="iALS's weight on the observed entries under --ials-weight")
    g.add_argument("--ials-l2", type=float, help="iALS's L2 under --ials-weight")
    g.add_argument("--shuffle-buffer", type=non_negative, help=f"rows (default {t.shuffle_buffer})")
    g.add_argument("--steps-per-execution", type=positive,
                   help=f"training steps per tf.function call (default {t.steps_per_execution})")
    g.add_argument("--profile-epoch", type=positive, metavar="N",
                   help="trace epoch N with TensorFlow's profiler in every training process: RUN/metrics/profile")
    g.add_argument("--train-metrics", action="store_true", default=None,
                   help="compute FactorizedTopK during training too (slow; off as the tutorial advises)")
    g.add_argument("--model-seed", type=int, help="initialisation and shuffle seed (default 42)")
    g.add_argument("--no-global-negatives", dest="global_negatives", action="store_false", default=None,
                   help="backend ray: score each query only against its own worker's batch")
    c = p.add_argument_group("Checkpoints (both backends; the local backend's are removed once its model is saved)")
    c.add_argument("--checkpoint-every", type=positive, default=t.checkpoint_every, help="epochs (default %(default)s)")
    c.add_argument("--checkpoint-min-interval", type=float, default=t.checkpoint_min_interval, metavar="SECONDS",
                   help="at least this long between checkpoints, the last epoch's always kept; 0: every "
                        "--checkpoint-every epochs (default %(default)s)")
    c.add_argument("--storage", default=None, help="checkpoint storage: a path or s3:// gs:// URI (default RUN/checkpoints)")
    c.add_argument("--resume", action="store_true",
                   help="continue a stopped run from its newest checkpoint under --storage (pipeline: on its prepared "
                        "data, or with the model it saved)")
    r = p.add_argument_group("Ray backend")
    r.add_argument("--address", default=None,
                   help="Ray cluster address (default: $RAY_ADDRESS, else the cluster on this machine, else a new local one)")
    r.add_argument("--workers", type=positive, default=t.workers, help="training workers (default %(default)s)")
    r.add_argument("--cpus-per-worker", type=positive, default=t.cpus_per_worker, help="default %(default)s")
    r.add_argument("--no-pin-cpus", dest="pin_cpus", action="store_false",
                   help="leave the workers to the OS scheduler rather than each on CPUs of its own")
    r.add_argument("--allreduce-dtype", choices=ALLREDUCE_DTYPES,
                   help="the step's one all-reduce: float32, or bfloat16 for half the bytes, the gradients rounded "
                        f"to 8 significant bits (default: the preset's, else {t.allreduce_dtype})")
    r.add_argument("--allreduce-transport", choices=ALLREDUCE_TRANSPORTS,
                   help="how the step's all-reduce travels: tensorflow (its collective) or sockets (a ring of TCP "
                        f"sockets between the workers) (default: the preset's, else {t.allreduce_transport})")
    r.add_argument("--checkpoint-every-steps", type=int, default=t.checkpoint_every_steps, metavar="STEPS",
                   help="also a checkpoint within an epoch every STEPS steps, resumed at its step after a failure "
                        "(0: at epochs' ends only; default %(default)s)")
    r.add_argument("--checkpoint-upload", choices=CHECKPOINT_UPLOADS, default=t.checkpoint_upload,
                   help="async: the store upload runs while the next epoch trains; sync: training waits for it "
                        "(default %(default)s)")
    r.add_argument("--max-failures", type=int, default=t.max_failures,
                   help="worker failures survived by restarting from the last checkpoint; -1: no limit (default %(default)s)")


_MODEL_FLAGS = {"embedding_dim": "embedding_dim", "optimizer": "optimizer", "learning_rate": "learning_rate",
                "learning_rate_schedule": "learning_rate_schedule",
                "features": "features", "deep_layers": "deep_layers", "temperature": "temperature",
                "cosine": "cosine",
                "logq_correction": "logq_correction", "remove_accidental_hits": "remove_accidental_hits",
                "hard_negatives": "hard_negatives", "l2": "l2", "init_stddev": "init_stddev",
                "train_metrics": "train_metrics",
                "model_seed": "seed", "global_negatives": "global_negatives", "history": "history",
                "history_table": "history_table", "history_dropout": "history_dropout",
                "user_embedding": "user_embedding", "negatives": "negatives",
                "sampled_negatives": "sampled_negatives", "full_softmax_max": "full_softmax_max",
                "popularity_prior": "popularity_prior", "ials_weight": "ials_weight",
                "ials_factors": "ials_factors", "ials_alpha": "ials_alpha", "ials_l2": "ials_l2"}
_TRAIN_FLAGS = {"batch_size": "batch_size", "epochs": "epochs", "shuffle_buffer": "shuffle_buffer",
                "model_seed": "seed", "steps_per_execution": "steps_per_execution",
                "profile_epoch": "profile_epoch", "allreduce_dtype": "allreduce_dtype",
                "allreduce_transport": "allreduce_transport"}


def configs_from_args(a: argparse.Namespace, backend: str | None = None) -> tuple[ModelConfig, TrainConfig]:
    """The preset's settings with every flag given on the command line over them."""
    model = {field: getattr(a, flag) for flag, field in _MODEL_FLAGS.items() if getattr(a, flag) is not None}
    train = {field: getattr(a, flag) for flag, field in _TRAIN_FLAGS.items() if getattr(a, flag) is not None}
    train.update(backend=backend or a.backend, workers=a.workers, cpus_per_worker=a.cpus_per_worker,
                 pin_cpus=a.pin_cpus, checkpoint_every=a.checkpoint_every,
                 checkpoint_min_interval=a.checkpoint_min_interval, checkpoint_every_steps=a.checkpoint_every_steps,
                 checkpoint_upload=a.checkpoint_upload,
                 max_failures=a.max_failures, storage=a.storage, resume=a.resume)
    return preset_configs(a.preset, model, train)


def index_args(p: argparse.ArgumentParser) -> None:
    """Options of the embed-and-index job, shared by `scaleout index` and jobs/embed_index.py."""
    c, e, j = IndexConfig(), EmbedConfig(), IndexJobConfig()
    p.add_argument("--candidates", help="candidate table: Parquet file or directory of shards "
                                        "(default RUN/data/candidates.parquet)")
    p.add_argument("--embeddings", help="index these embeddings (Parquet: movie_id, embedding [, movie_title]) "
                                        "instead of embedding with RUN/model; checked against the candidates")
    p.add_argument("--part-rows", type=positive, default=e.part_rows,
                   help="candidates per output part, the unit of work and of resuming (default %(default)s)")
    p.add_argument("--max-parts", type=positive, default=e.max_parts,
                   help="embed at most this many parts in this run, then stop (run again to continue)")
    p.add_argument("--indexes", nargs="+", choices=INDEX_KINDS, default=list(j.kinds),
                   help="indexes to build (default: all)")
    p.add_argument("--no-eval", dest="evaluate", action="store_false",
                   help="skip FactorizedTopK through each index on the test split")
    p.add_argument("--export", nargs="*", choices=INDEX_KINDS, default=list(j.export),
                   help="then export these retrieval SavedModels to RUN/export/KIND")
    p.add_argument("--export-k", type=positive, default=j.export_k, help="k of the exports (default %(default)s)")
    g = p.add_argument_group("ScaNN (0: scale with the number of candidates)")
    g.add_argument("--scann-mode", choices=INDEX_MODES, default=c.mode,
                   help="auto: exact below %s candidates, hashing below %s, else tree + hashing"
                        % (f"{c.brute_force_below:,}", f"{c.tree_below:,}"))
    g.add_argument("--num-leaves", type=non_negative, default=c.num_leaves,
                   help="tree leaves (default --leaves-per-sqrt x sqrt(N))")
    g.add_argument("--leaves-per-sqrt", type=float, default=c.leaves_per_sqrt,
                   help="tree leaves per sqrt(N) when --num-leaves is 0 (default %(default)s)")
    rows = "; ".join(f"k <= {r[0]}: {r[1]:g}, {r[2]}, {r[3]}" for r in c.search_by_k)
    g.add_argument("--leaves-to-search", type=non_negative, default=c.leaves_to_search,
                   help="leaves searched, whatever k (default: by the k searched for: enough to visit "
                        "points-per-result x k candidates and at least leaves-fraction of the leaves; "
                        f"leaves-fraction, points-per-result, reorder-per-k by k: {rows})")
    g.add_argument("--leaves-fraction", type=float, default=c.leaves_fraction,
                   help="search this share of the leaves, whatever k (default 0: by k, as above)")
    g.add_argument("--points-per-result", type=non_negative, default=c.points_per_result,
                   help="with --leaves-fraction, also enough leaves to visit this many candidates per result "
                        "(default 0: by k, as above)")
    g.add_argument("--reorder", type=non_negative, default=c.reorder,
                   help=f"candidates rescored exactly (default max(reorder-per-k x k, {c.reorder_min}))")
    g.add_argument("--reorder-per-k", type=non_negative, default=c.reorder_per_k,
                   help="candidates rescored exactly per result asked for (default 0: by k, as above)")
    g.add_argument("--dims-per-block", type=positive, default=c.dims_per_block, help="default %(default)s")
    g.add_argument("--soar-lambda", type=float, default=c.soar_lambda,
                   help="SOAR spilling: each candidate also in a second leaf (about 1 to 1.5; default 0: off; "
                        "a ScaNN SavedModel cannot carry it)")
    g.add_argument("--reorder-dtype", choices=REORDER_DTYPES, default=c.reorder_dtype,
                   help="the copy rescored exactly (default %(default)s; int8 takes a quarter of the memory; "
                        "a ScaNN SavedModel cannot carry bfloat16)")
    g.add_argument("--anisotropic-threshold", type=float, default=c.anisotropic_threshold, help="default %(default)s")
    g.add_argument("--training-sample-size", type=non_negative, default=c.training_sample_size,
                   help="tree training sample (default min(N, 250k))")
    r = p.add_argument_group("Ray backend")
    r.add_argument("--workers", type=positive, default=e.workers, help="embedding actors (default %(default)s)")
    r.add_argument("--cpus-per-worker", type=positive, default=e.cpus_per_worker, help="default %(default)s")


def index_job_config(a: argparse.Namespace, backend: str) -> IndexJobConfig:
    embed = EmbedConfig(backend=backend, workers=a.workers, cpus_per_worker=a.cpus_per_worker, part_rows=a.part_rows,
                        max_parts=a.max_parts)
    index = IndexConfig(mode=a.scann_mode, num_leaves=a.num_leaves, leaves_per_sqrt=a.leaves_per_sqrt,
                        leaves_to_search=a.leaves_to_search, reorder=a.reorder, dims_per_block=a.dims_per_block,
                        leaves_fraction=a.leaves_fraction, points_per_result=a.points_per_result,
                        reorder_per_k=a.reorder_per_k, soar_lambda=a.soar_lambda, reorder_dtype=a.reorder_dtype,
                        anisotropic_threshold=a.anisotropic_threshold, training_sample_size=a.training_sample_size)
    return IndexJobConfig(embed=embed, index=index, kinds=tuple(a.indexes), candidates=a.candidates,
                          embeddings=a.embeddings, evaluate=a.evaluate, export=tuple(a.export), export_k=a.export_k)


def pipeline_args(p: argparse.ArgumentParser) -> None:
    c = PipelineConfig()
    p.add_argument("--user", default=c.user, help="user to recommend for (default %(default)s)")
    p.add_argument("-k", type=positive, default=c.k, help="recommendations to print (default %(default)s)")
    p.add_argument("--export-k", type=positive, default=c.export_k, help="k of the exported SavedModel (default %(default)s)")
    p.add_argument("--exclude-seen", action="store_true",
                   help="recommendations and exports leave out each user's training items")
    p.add_argument("--sample-users", type=non_negative, default=c.sample_users,
                   help="evaluate through the indexes and report quality on the test rows of this many test "
                        "users drawn at random, with 95%% intervals (default 0: every test row)")
    p.add_argument("--sample-seed", type=int, default=c.sample_seed, help="seed of --sample-users (default %(default)s)")
    p.add_argument("--skip", nargs="+", choices=SKIPPABLE_STAGES, default=[], metavar="STAGE",
                   help=f"leave out these stages ({', '.join(SKIPPABLE_STAGES)}); prepare, train and the "
                        "embedding and index always run")
    baseline_args(p)


def no_evaluate_arg(p: argparse.ArgumentParser) -> None:
    """``--no-evaluate`` of `scaleout train` and jobs/train.py."""
    p.add_argument("--no-evaluate", action="store_true",
                   help="leave out the evaluation on the test split (no RUN/metrics/eval.json; `scaleout evaluate` "
                        "does it later)")


def baseline_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--baselines", nargs="*", choices=BASELINES, default=list(BASELINES),
                   help="baselines of the quality report, on the same split (default: all; none: the model only)")


def pipeline_config(a: argparse.Namespace) -> PipelineConfig:
    model, train = configs_from_args(a)
    return PipelineConfig(data=data_config(a), model=model, train=train, user=a.user, k=a.k, export_k=a.export_k,
                          exclude_seen=a.exclude_seen, baselines=tuple(a.baselines), sample_users=a.sample_users,
                          sample_seed=a.sample_seed, skip=tuple(a.skip))
