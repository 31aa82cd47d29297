"""A trained model on disk: RUN/model's two Keras SavedModels and model.json, written and loaded back."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

from scaleout import __version__
from scaleout.config import ModelConfig, TrainConfig, from_dict
from scaleout.data.dataset import Dataset
from scaleout.errors import ArtifactError
from scaleout.fsutil import atomic_dir, write_json
from scaleout.tfenv import tf
from scaleout.train.model import candidate_counts, from_towers
from scaleout.train.towers import CANDIDATE_FEATURE, QUERY_FEATURE

MODEL_JSON = "model.json"


def save_model(model, model_dir: Path, model_cfg: ModelConfig, train_cfg: TrainConfig, dataset: Dataset) -> None:
    """Writes the two towers and model.json into ``model_dir``, atomically."""
    with atomic_dir(model_dir) as tmp:
        model.query_tower.save(tmp / "query_tower")
        model.candidate_tower.save(tmp / "candidate_tower")
        write_json(tmp / MODEL_JSON, {
            "scaleout_version": __version__,
            "model": dataclasses.asdict(model_cfg),
            "train": dataclasses.asdict(train_cfg),
            "dataset": str(dataset.path.resolve()),
            "dataset_created": dataset.manifest["created"],
            "features": model.features,
            "vocab_sizes": {QUERY_FEATURE: len(dataset.vocabulary(QUERY_FEATURE)),
                            CANDIDATE_FEATURE: len(dataset.vocabulary(CANDIDATE_FEATURE))},
        })


@dataclasses.dataclass(frozen=True)
class Towers:
    """Trained towers loaded from a model directory."""

    query: object
    candidate: object
    model_cfg: ModelConfig
    info: dict

    @classmethod
    def load(cls, model_dir: str | Path) -> "Towers":
        model_dir = Path(model_dir)
        meta = model_dir / MODEL_JSON
        if not meta.is_file():
            raise ArtifactError(f"{model_dir}: no trained model here (no {MODEL_JSON}); run `scaleout train` first")
        info = json.loads(meta.read_text())
        towers = []
        for name in ("query_tower", "candidate_tower"):
            try:
                towers.append(tf.keras.models.load_model(model_dir / name, compile=False))
            except (OSError, ValueError) as exc:
                raise ArtifactError(f"{model_dir / name}: cannot load the saved tower ({exc})") from exc
        return cls(towers[0], towers[1], from_dict(ModelConfig, info["model"]), info)

    def as_model(self, dataset: Dataset):
        return from_towers(self.model_cfg, self.query, self.candidate, dataset.vocabulary(CANDIDATE_FEATURE),
                           candidate_counts(dataset))
