"""Named model and training settings: ``scaleout train --preset NAME`` (and pipeline, jobs/train.py).

  quality   the best settings of the documented search (benchmarks/quality_search.py,
            results in benchmarks/results/quality/search.json, report in
            benchmarks/reports/quality/): chosen on a validation cut of ml-100k's
            training split, never on its test split. The default.
  history   the same search's best among the towers whose query is built from the user's
            items alone (no user id embedding): users not seen in training are served
            from their items, without retraining (``scaleout recommend --items``).
  tutorial  the TFRS basic retrieval tutorial, for reproducing it: id towers,
            plain in-batch softmax, batch 8192, 3 epochs.

Flags given on the command line override the preset's values.
"""

from __future__ import annotations

from scaleout.config import ModelConfig, TrainConfig
from scaleout.errors import ConfigError

PRESETS: dict[str, dict[str, dict]] = {
    "tutorial": {"model": {}, "train": {"batch_size": 8192, "epochs": 3}},
    "quality": {
        "model": {"logq_correction": True, "remove_accidental_hits": True, "l2": 0.1, "embedding_dim": 128},
        # The 2 workers' all-reduce in bfloat16: half the bytes of the step's one collective, the gradients
        # rounded to 8 significant bits. benchmarks/quality_preset.py measured the same recall@10 / @100 on 2
        # Ray workers as with float32 (0.18005 / 0.64465 against 0.1801 / 0.64455), and benchmarks/ray_scaling.py
        # the faster step in five runs of six (README, "A bfloat16 all-reduce"). One process has no
        # all-reduce: nothing changes there.
        "train": {"batch_size": 1024, "epochs": 14, "allreduce_dtype": "bfloat16"},
    },
    "history": {
        "model": {"history": 1000, "history_table": "shared", "history_dropout": 0.5, "user_embedding": False,
                  "negatives": "full", "optimizer": "adam", "learning_rate": 0.001, "temperature": 0.2,
                  "embedding_dim": 128, "l2": 0.0007},
        "train": {"batch_size": 1024, "epochs": 30},
    },
}
DEFAULT = "quality"


def configs(name: str, model: dict | None = None, train: dict | None = None) -> tuple[ModelConfig, TrainConfig]:
    """The preset's ModelConfig and TrainConfig, with ``model``/``train`` values (set explicitly) over them."""
    if name not in PRESETS:
        raise ConfigError(f"unknown preset {name!r}; expected one of {', '.join(PRESETS)}")
    preset = PRESETS[name]
    return (ModelConfig(**{**preset["model"], **(model or {})}),
            TrainConfig(**{**preset["train"], **(train or {})}))


def describe(name: str) -> str:
    preset = PRESETS[name]
    base_m, base_t = ModelConfig(), TrainConfig()
    changed = {k: v for k, v in preset["model"].items() if getattr(base_m, k) != v}
    changed.update({k: v for k, v in preset["train"].items() if getattr(base_t, k) != v})
    return ", ".join(f"{k}={v}" for k, v in changed.items()) or "the tutorial's settings"
