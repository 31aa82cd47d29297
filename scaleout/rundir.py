"""Where the stages of one run keep their outputs (the `--run DIR` layout).

  RUN/data/                  prepared dataset (scaleout.data.prepare)
  RUN/model/                 trained towers: query_tower/, candidate_tower/ (Keras
                             SavedModels) and model.json (settings, vocab sizes)
  RUN/metrics/train.json     per-epoch loss, seconds and examples/s of the last fit
  RUN/metrics/eval.json      test metrics, named as TFRS names them
  RUN/embeddings/            candidate embeddings, Parquet parts + embeddings.json
                             (scaleout.embed)
  RUN/index/scann/           ScaNN index (scaleout.index.scann); RUN/index/brute_force/ too
  RUN/metrics/index_eval.json  FactorizedTopK through each index, side by side
  RUN/metrics/quality.json   hit rate and NDCG with and without seen items, beside the baselines
  RUN/export/scann/          retrieval SavedModels (TFRS ScaNN / BruteForce layers):
  RUN/export/brute_force/    raw user id in; scores, movie ids, titles out
  RUN/artifacts.json         fingerprints and links of all of the above
"""

from __future__ import annotations

import dataclasses
from pathlib import Path


@dataclasses.dataclass(frozen=True)
class RunDir:
    root: Path

    def __init__(self, root: str | Path):
        object.__setattr__(self, "root", Path(root))

    @property
    def data(self) -> Path:
        return self.root / "data"

    @property
    def model(self) -> Path:
        return self.root / "model"

    @property
    def train_metrics(self) -> Path:
        return self.root / "metrics" / "train.json"

    @property
    def eval_metrics(self) -> Path:
        return self.root / "metrics" / "eval.json"

    def export(self, kind: str) -> Path:
        return self.root / "export" / kind

    @property
    def embeddings(self) -> Path:
        return self.root / "embeddings"

    def index(self, kind: str) -> Path:
        return self.root / "index" / kind

    @property
    def index_eval_metrics(self) -> Path:
        return self.root / "metrics" / "index_eval.json"

    @property
    def quality_metrics(self) -> Path:
        return self.root / "metrics" / "quality.json"

    @property
    def artifacts(self) -> Path:
        return self.root / "artifacts.json"
