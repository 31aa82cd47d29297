"""ScaNN behind the Index interface: the mode by catalogue size, search settings per call, relative-path files."""

from __future__ import annotations

import contextlib
import dataclasses
import errno
import logging
import math
import os
import re
import sys
import tempfile
from importlib.metadata import version
from pathlib import Path

import numpy as np

from scaleout.config import IndexConfig, from_dict
from scaleout.errors import ArtifactError, ConfigError, ScaleoutError
from scaleout.fsutil import atomic_dir, save_npy
from scaleout.index.base import INDEX_JSON, Index, check_embeddings, read_meta, write_meta
from scaleout.names import SCANN

log = logging.getLogger(__name__)

# Files of a serialized searcher that scann_ops.ScannState has no field for, and the option that writes them
UNCARRIED = {"hashed_dataset_soar.npy": "SOAR spilling (soar_lambda)", "bfloat16_dataset.npy": "bf16 reordering"}


# A line of absl's C++ log (ScaNN's own, not TensorFlow's): severity, date, time, thread, file:line]
ABSL_LINE = re.compile(r"^[IWEF]\d{4} [\d:.]+\s+\d+ \S+:\d+\] ")
ABSL_PREAMBLE = "WARNING: All log messages before absl::InitializeLog() is called are written to STDERR"


@contextlib.contextmanager
def absl_log_to_debug():
    """ScaNN's C++ log lines written to stderr while the block runs (the training sample's size, "Could not
    normalize centroid due to zero norm" for an empty partition) go to this module's debug log instead of the
    user's terminal; an error line (E, F) is logged as a warning; anything else is written back to stderr."""
    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile() as captured:
        os.dup2(captured.fileno(), 2)
        try:
            yield
        finally:
            sys.stderr.flush()
            os.dup2(saved, 2)
            os.close(saved)
            captured.seek(0)
            other = []
            for line in captured.read().decode(errors="replace").splitlines():
                if line.strip() == ABSL_PREAMBLE or (ABSL_LINE.match(line) and line[0] in "IW"):
                    log.debug("scann: %s", line)
                elif ABSL_LINE.match(line):
                    log.warning("scann: %s", line)
                else:
                    other.append(line)
            if other:
                sys.stderr.write("\n".join(other) + "\n")


def leaves_for(k: int, n: int, num_leaves: int, fraction: float, per_result: int) -> int:
    """Leaves of a tree of ``num_leaves`` over n candidates to search for k results: enough to visit
    per_result x k candidates (leaves hold n / num_leaves on average), at least ``fraction`` of them, one at
    least, all at most. Small catalogues thus search a larger share for the same k: their top k spreads over
    more leaves."""
    by_points = math.ceil(per_result * k * num_leaves / n) if per_result else 0
    return min(num_leaves, max(1, math.ceil(fraction * num_leaves), by_points))


def tree_leaves(n: int, leaves_per_sqrt: float, num_leaves: int = 0) -> int:
    """Leaves of a ScaNN tree over n candidates: ``num_leaves``, else leaves_per_sqrt x sqrt(n) (at least 2)."""
    return num_leaves or max(2, round(leaves_per_sqrt * math.sqrt(n)))


class Scann(Index):
    """ScaNN (``scann_ops_pybind``), built once in the mode the catalogue size calls for.

    Modes, after ScaNN's rules of thumb (thresholds in IndexConfig):
      brute_force  exact scores (small catalogues; logged as a note)
      ah           anisotropic hashing of every candidate, then exact reordering
      tree         a partition into leaves_per_sqrt x sqrt(N) leaves, hashing
                   within the leaves searched, then exact reordering
    Search settings are arguments of ``search``: ``leaves_to_search`` (tree
    mode) and ``reorder`` (candidates rescored exactly). Their defaults grow
    with the k searched for (IndexConfig.search_by_k): a top 100 spreads over
    more leaves than a top 10 and needs more candidates rescored. They are
    the ANN benchmark tuner's choice per k (see IndexConfig).
    """

    kind = SCANN

    def __init__(self, cfg: IndexConfig = IndexConfig()):
        super().__init__()
        self.cfg = cfg
        self.directory: Path | None = None

    def build(self, ids, embeddings):
        from scann import scann_ops_pybind

        ids, embeddings = np.asarray(ids).astype(str), np.ascontiguousarray(embeddings, dtype=np.float32)
        check_embeddings(ids, embeddings)
        n, cfg = len(ids), self.cfg
        self.mode = cfg.mode if cfg.mode != "auto" else \
            "brute_force" if n < cfg.brute_force_below else "ah" if n < cfg.tree_below else "tree"
        self.num_leaves = tree_leaves(n, cfg.leaves_per_sqrt, cfg.num_leaves) if self.mode == "tree" else 0
        self.ids = ids  # before the builder: the default leaves to search depend on the catalogue size
        if self.num_leaves > n:
            raise ConfigError(f"num_leaves={self.num_leaves} but there are {n} candidates; a leaf needs at least one")
        if self.mode == "brute_force":
            log.info("%s candidates, fewer than %s: ScaNN scores them all exactly (no tree, no hashing)",
                     f"{n:,}", f"{cfg.brute_force_below:,}")
        from scann import ReorderType

        if cfg.soar_lambda and self.mode != "tree":
            log.info("soar_lambda=%g applies to a tree; this %s index has none", cfg.soar_lambda, self.mode)
        builder = scann_ops_pybind.builder(embeddings, 10, "dot_product")
        if self.mode == "tree":
            builder = builder.tree(num_leaves=self.num_leaves, num_leaves_to_search=self.default_leaves_to_search(),
                                   training_sample_size=cfg.training_sample_size or min(n, 250_000),
                                   soar_lambda=cfg.soar_lambda or None)
        if self.mode == "brute_force":
            builder = builder.score_brute_force()
        else:
            builder = builder.score_ah(cfg.dims_per_block, anisotropic_quantization_threshold=cfg.anisotropic_threshold)
            builder = builder.reorder(self.default_reorder(10), quantize={
                "float32": ReorderType.FLOAT32, "bfloat16": ReorderType.BFLOAT16, "int8": ReorderType.INT8}[
                    cfg.reorder_dtype])
        with absl_log_to_debug():
            self.searcher = builder.build()
        self.dim = embeddings.shape[1]
        return self

    def default_leaves_to_search(self, k: int = 10) -> int:
        """Leaves a search for k results looks in by default: leaves_to_search if set, else enough leaves to
        visit points_per_result x k candidates and at least leaves_fraction of the leaves (IndexConfig.search_row),
        all of them at most."""
        if self.cfg.leaves_to_search:
            return self.cfg.leaves_to_search
        return leaves_for(k, len(self.ids), self.num_leaves, *self.cfg.search_row(k)[:2])

    def default_reorder(self, k: int) -> int:
        """Candidates rescored exactly by default for k results: reorder if set, else max(reorder_per_k x k,
        reorder_min), reorder_per_k by k (IndexConfig.search_row)."""
        return max(k, self.cfg.reorder or max(self.cfg.search_row(k)[2] * k, self.cfg.reorder_min))

    def search_settings(self, k: int, leaves_to_search: int | None = None, reorder: int | None = None) -> dict:
        """The keyword arguments of ScaNN's search for these settings (defaults filled in), checked."""
        settings = {"final_num_neighbors": k}
        if leaves_to_search is not None and self.mode != "tree":
            raise ConfigError(f"leaves_to_search applies to a tree; this {self.mode} index of {len(self.ids):,} "
                              "candidates has none")
        if self.mode == "tree":
            leaves = leaves_to_search or self.default_leaves_to_search(k)
            if not 1 <= leaves <= self.num_leaves:
                raise ConfigError(f"leaves_to_search={leaves}; expected 1 to {self.num_leaves} (the tree's leaves)")
            settings["leaves_to_search"] = leaves
        if reorder is not None and self.mode == "brute_force":
            raise ConfigError("reorder applies to hashed scores; this index scores every candidate exactly")
        if self.mode != "brute_force":
            settings["pre_reorder_num_neighbors"] = max(k, reorder or self.default_reorder(k))
        return settings

    def search(self, queries, k, leaves_to_search: int | None = None, reorder: int | None = None):
        self._check_k(k)
        queries = self._checked_queries(queries, self.dim)
        settings = self.search_settings(k, leaves_to_search, reorder)
        if len(queries) == 1:  # ScaNN's one-query call skips the batch set-up: ~25 us less per query
            rows, scores = self.searcher.search(queries[0], **settings)
            rows, scores = rows[None], scores[None]
        else:
            rows, scores = self.searcher.search_batched(queries, **settings)
        return scores.astype(np.float32, copy=False), self.ids[rows.astype(np.int64)]

    def save(self, directory, source=None):
        with atomic_dir(directory, INDEX_JSON) as tmp:
            (tmp / "scann").mkdir()
            # Relative asset paths: the directory is renamed into place after writing.
            try:
                self.searcher.serialize(str(tmp / "scann"), relative_path=True)
            except RuntimeError as exc:  # ScaNN's C++ says only "I/O error" when a file cannot be written
                raise OSError(errno.EIO, f"ScaNN could not write its searcher ({exc}); is the disk full?",
                              str(Path(directory))) from exc
            save_npy(tmp / "ids.npy", self.ids)
            write_meta(tmp, {"kind": self.kind, "mode": self.mode, "candidates": len(self.ids), "dim": int(self.dim),
                             "num_leaves": self.num_leaves, "config": dataclasses.asdict(self.cfg),
                             "source": source or {}})

    @classmethod
    def load(cls, directory):
        from scann import scann_ops_pybind

        directory = Path(directory)
        meta = read_meta(directory, cls.kind)
        index = cls(from_dict(IndexConfig, meta["config"]))
        try:
            index.ids = np.load(directory / "ids.npy")
            index.searcher = scann_ops_pybind.load_searcher(str(directory / "scann"))
        except Exception as exc:  # ScaNN raises RuntimeError/ValueError/OSError for damaged files
            raise ArtifactError(f"{directory}: corrupt or truncated ScaNN index ({type(exc).__name__}: {exc})") from exc
        if len(index.ids) != meta["candidates"]:
            raise ArtifactError(f"{directory}: {len(index.ids)} ids; {INDEX_JSON} says {meta['candidates']}")
        index.mode, index.num_leaves, index.dim = meta["mode"], meta["num_leaves"], meta["dim"]
        index.meta, index.directory = meta, directory
        return index

    def tf_state(self):
        """This index, as loaded from its directory, as ScaNN's TensorFlow state (``scann_ops.ScannState``).

        The TF ops rebuild the very searcher saved by ``save`` from its files,
        so a SavedModel answers exactly as this index does (training a second
        searcher would not: ScaNN's training is not deterministic).
        """
        from scann.scann_ops.py import scann_ops

        from scaleout.tfenv import tf

        if self.directory is None:
            raise ScaleoutError("save the ScaNN index and load it back before turning it into TensorFlow state")
        d = self.directory / "scann"
        for name, option in UNCARRIED.items():
            if (d / name).is_file():
                raise ConfigError(f"{d}: this index was built with {option}, which ScaNN's TensorFlow ops "
                                  f"(scann {version('scann')}) cannot load ({name} has no place in their state); "
                                  "serve it through scaleout.index (`scaleout recommend --run`), or rebuild it "
                                  "without that option to export a SavedModel")

        def blob(name):
            return tf.constant([(d / name).read_bytes() if (d / name).is_file() else b""])

        def array(name, dtype):
            return tf.constant(np.load(d / name) if (d / name).is_file() else np.zeros((), dtype))

        try:
            return scann_ops.ScannState((
                blob("scann_config.pb"), blob("serialized_partitioner.pb"), array("datapoint_to_token.npy", np.int32),
                blob("ah_codebook.pb"), array("hashed_dataset.npy", np.uint8), array("int8_dataset.npy", np.int8),
                array("int8_multipliers.npy", np.float32), array("dp_norms.npy", np.float32),
                array("dataset.npy", np.float32)))
        except (OSError, ValueError) as exc:
            raise ArtifactError(f"{d}: cannot read the saved ScaNN searcher ({exc})") from exc
