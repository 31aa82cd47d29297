"""A trained model on disk: RUN/model's two Keras SavedModels and model.json, written and loaded back."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

from scaleout import __version__
from scaleout.config import ModelConfig, TrainConfig, from_dict
from scaleout.data.dataset import Dataset
from scaleout.errors import ArtifactError, first_line
from scaleout.fsutil import atomic_dir, checksums, first_changed, write_json
from scaleout.tfenv import quiet_saving, tf
from scaleout.train.model import candidate_counts, from_towers
from scaleout.train.towers import CANDIDATE_FEATURE, QUERY_FEATURE
from scaleout.train.unknown_user import settle_unknown_user

MODEL_JSON = "model.json"


def save_model(model, model_dir: Path, model_cfg: ModelConfig, train_cfg: TrainConfig, dataset: Dataset) -> None:
    """Writes the two towers and model.json into ``model_dir``, atomically. First sets the rows that users
    outside the vocabulary are answered from (``settle_unknown_user``), in ``model`` too, so that what is
    evaluated after saving is what was saved; model.json's ``unknown_user`` says what those rows hold."""
    user_counts = dataset.vocabulary_counts(QUERY_FEATURE)
    unknown_user = settle_unknown_user(model.query_tower, user_counts)
    with atomic_dir(model_dir, MODEL_JSON) as tmp, quiet_saving():
        model.query_tower.save(tmp / "query_tower")
        model.candidate_tower.save(tmp / "candidate_tower")
        write_json(tmp / MODEL_JSON, {
            "scaleout_version": __version__,
            "model": dataclasses.asdict(model_cfg),
            "train": dataclasses.asdict(train_cfg),
            "dataset": str(dataset.path.resolve()),
            "dataset_created": dataset.manifest["created"],
            "dataset_fingerprint": dataset.fingerprint,
            "features": model.features,
            "unknown_user": unknown_user,  # absent or None: a model saved before 2026-12-05
            "vocab_sizes": {QUERY_FEATURE: len(user_counts),
                            CANDIDATE_FEATURE: len(dataset.vocabulary(CANDIDATE_FEATURE))},
            "files": checksums(tmp),  # both towers' (check_tower_files); absent: a model saved before 2026-12-06
        })


@dataclasses.dataclass(frozen=True)
class Towers:
    """Trained towers loaded from a model directory."""

    query: object
    candidate: object
    model_cfg: ModelConfig
    info: dict

    @classmethod
    def load(cls, model_dir: str | Path, dataset: Dataset | None) -> "Towers":
        """The towers of ``model_dir``, refused unless they were trained on ``dataset`` (None: no data to check
        against, for callers that hold none)."""
        model_dir = Path(model_dir)
        info = model_info(model_dir)
        if dataset is not None:
            check_trained_on(model_dir, dataset, info)
        towers = []
        for name in ("query_tower", "candidate_tower"):
            check_tower_files(model_dir, name, info)
            try:
                towers.append(tf.keras.models.load_model(model_dir / name, compile=False))
            except (OSError, ValueError, tf.errors.OpError) as exc:  # OpError: TensorFlow's checksums (DataLossError)
                raise ArtifactError(f"{model_dir / name}: cannot load the saved tower ({first_line(exc)}); its files "
                                    "are damaged or incomplete: train again (`scaleout train`), or restore them") from exc
        return cls(towers[0], towers[1], from_dict(ModelConfig, info["model"]), info)

    def as_model(self, dataset: Dataset):
        """A TFRS model around the towers, with ``dataset``'s candidates (check it with ``load`` first)."""
        return from_towers(self.model_cfg, self.query, self.candidate, dataset.vocabulary(CANDIDATE_FEATURE),
                           candidate_counts(dataset))


def check_tower_files(model_dir: str | Path, tower: str, info: dict | None = None) -> None:
    """ArtifactError unless the files of ``tower`` (query_tower, candidate_tower) of ``model_dir`` are those
    model.json recorded when it was saved: TensorFlow checks the variables' own checksums, but a changed graph
    (saved_model.pb) may load and answer wrongly. Models saved before 2026-12-06 record none."""
    info = info if info is not None else model_info(model_dir)
    changed = first_changed(model_dir, {name: entry for name, entry in info.get("files", {}).items()
                                        if name.startswith(f"{tower}/")})
    if changed is not None:
        raise ArtifactError(f"{model_dir}: {changed} differs from its checksum in {MODEL_JSON}: the saved towers are "
                            "damaged or were changed since training; train again (`scaleout train`), or restore them")


def model_info(model_dir: str | Path) -> dict:
    """model.json of a trained model directory; ArtifactError when there is none or it is unreadable."""
    meta = Path(model_dir) / MODEL_JSON
    if not meta.is_file():
        raise ArtifactError(f"{model_dir}: no trained model here (no {MODEL_JSON}); run `scaleout train` first")
    try:
        return json.loads(meta.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise ArtifactError(f"{meta}: unreadable ({exc}); train again with `scaleout train`") from exc


def check_trained_on(model_dir: str | Path, dataset: Dataset, info: dict | None = None) -> None:
    """ArtifactError unless the model of ``model_dir`` was trained on ``dataset`` as it is now.

    The towers map ids to rows of the vocabularies they were trained with: over
    data prepared again (another source, split or seed) they would answer with
    the wrong items. Models saved before fingerprints were recorded are checked
    by their vocabulary sizes.
    """
    info = info if info is not None else model_info(model_dir)
    trained_on = info.get("dataset_fingerprint")
    if trained_on is None:
        now = {QUERY_FEATURE: len(dataset.vocabulary(QUERY_FEATURE)),
               CANDIDATE_FEATURE: len(dataset.vocabulary(CANDIDATE_FEATURE))}
        if info.get("vocab_sizes") == now:
            return
        trained_on, detail = "?", f"vocabularies of {info.get('vocab_sizes')} ids, now {now}"
    elif trained_on == dataset.fingerprint:
        return
    else:
        detail = f"data {trained_on[:12]}, prepared {info.get('dataset_created')}; now {dataset.fingerprint[:12]}, " \
                 f"prepared {dataset.manifest.get('created')}"
    raise ArtifactError(f"{model_dir} was trained on other data than {dataset.path} holds now ({detail}): the data "
                        "was prepared again after training; train again (`scaleout train`) or restore the data")
