"""A run's catalogue for serving: trained towers and candidate embeddings, loaded and checked once.

``Catalogue.recommend`` answers one user from an index of the run (BruteForce
over the embeddings, or RUN/index/scann), optionally without the items the user
saw in training (scaleout.serve.seen). Retrieval SavedModels are written from
a catalogue by scaleout.serve.export.
"""

from __future__ import annotations

import dataclasses
import logging

import numpy as np

from scaleout.data.dataset import Dataset
from scaleout.embed.embedding_set import EMBEDDINGS_JSON, EmbeddingSet
from scaleout.embed.job import embed
from scaleout.errors import ArtifactError, ConfigError
from scaleout.index.base import Index, check_embeddings
from scaleout.index.brute_force import BruteForce
from scaleout.index.build import check_embeddings_of_model, check_query_dim, open_index
from scaleout.names import BRUTE_FORCE, MOVIE_ID, MOVIE_TITLE, USER_ID
from scaleout.rundir import RunDir
from scaleout.serve.seen import SeenItems
from scaleout.train.saved import Towers
from scaleout.train.towers import embed_users, uses_history

log = logging.getLogger(__name__)


@dataclasses.dataclass(frozen=True)
class Recommendation:
    user_id: str
    known_user: bool
    scores: np.ndarray  # [k]
    movie_ids: np.ndarray  # [k]
    titles: list[str]
    items: list[str] | None = None  # the items given with the request, if any


class Catalogue:
    """A run's trained towers and candidate embeddings, loaded and checked once.

    With RUN/embeddings (``scaleout index``) the embeddings come from there and
    are checked against the model; without, they are computed here, in memory.
    """

    def __init__(self, run: RunDir):
        self.run = run
        self.dataset = Dataset(run.data)
        self.towers = Towers.load(run.model, self.dataset)
        self.users = set(self.dataset.vocabulary(USER_ID))
        if (run.embeddings / EMBEDDINGS_JSON).is_file():
            self.embeddings = EmbeddingSet(run.embeddings)
            check_embeddings_of_model(run, self.embeddings)
            check_query_dim(self.towers.query, self.embeddings)
            self.ids, self.vectors, self.titles = self.embeddings.load(titles=True)
        else:
            log.info("no %s: embedding the candidates in this process (run `scaleout index` to keep them)",
                     run.embeddings)
            self.embeddings = None
            candidates = self.dataset.candidates
            self.ids = candidates.column(MOVIE_ID).to_numpy(zero_copy_only=False).astype(str)
            self.titles = candidates.column(MOVIE_TITLE).to_numpy(zero_copy_only=False).astype(str)
            self.vectors = embed(self.towers.candidate, self.ids)
            check_embeddings(self.ids, self.vectors)  # as an index build would: no NaN, no id twice
        self._title_of = dict(zip(self.ids, self.titles))
        self._seen: SeenItems | None = None

    @property
    def seen(self) -> SeenItems:
        """The training items of every user, read from RUN/data's train split on first use."""
        if self._seen is None:
            self._seen = SeenItems.from_dataset(self.dataset)
        return self._seen

    def index(self, kind: str = BRUTE_FORCE) -> Index:
        if kind == BRUTE_FORCE and self.embeddings is None:
            return BruteForce().build(self.ids, self.vectors)
        if self.embeddings is None:
            raise ArtifactError(f"{self.run.embeddings}: no candidate embeddings; run `scaleout index` first")
        return open_index(self.run, kind, self.embeddings)

    def recommend(self, user_id: str, k: int, kind: str = BRUTE_FORCE, exclude_seen: bool = False,
                  items: list[str] | None = None) -> Recommendation:
        """The top ``k`` for ``user_id``; with ``exclude_seen``, of the candidates outside their training items.
        ``items``: ids of items the user has interacted with, added to their stored history (a history-aware
        model only; ``user_id`` may then be "" or unknown: a new user is answered from the items alone)."""
        known = user_id in self.users
        if items is not None:
            if not uses_history(self.towers.query):
                raise ConfigError(f"{self.run.model}: this model has no history input (trained without --history); "
                                  "it recommends for user ids only")
            unknown = [i for i in items if i not in self._title_of]
            if unknown:
                raise ConfigError(f"items {unknown[:5]} are not candidates of {self.run.data} "
                                  f"({len(unknown)} of {len(items)} unknown)")
        elif not known:
            log.warning("user %r is not in the training vocabulary: scoring with the unknown-user row (%s)", user_id,
                        self.towers.info.get("unknown_user") or "untrained: a model saved before 2026-12-05")
        query = embed_users(self.towers.query, [user_id], history=None if items is None else [list(items)])
        seen = self.seen.of(user_id) if exclude_seen else np.array([], str)
        if exclude_seen and items:
            seen = np.union1d(seen, np.asarray(items, str))
        # k + the seen ones, as far as the catalogue goes (a k above its size is the index's error to give).
        scores, ids = self.index(kind).search(query, max(k, min(k + len(seen), len(self.ids))))
        keep = ~np.isin(ids[0], seen)
        scores, ids = scores[0][keep][:k], ids[0][keep][:k]
        return Recommendation(user_id, known, scores, ids, [self._title_of[i] for i in ids],
                              None if items is None else list(items))
