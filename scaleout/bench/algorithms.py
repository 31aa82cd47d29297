"""Every index of the benchmark behind one interface, build arguments apart from query arguments.

``Algo(**build_args).build(train)`` once, then for each point of the query grid
``set_query_args(**args)`` and ``search(queries, k)``: the timed call, which
returns whatever the library returns; ``rows(result)`` turns that into
candidate rows [batch, k] (outside the timing) so recall is computed the same
way for all. ``threads(n)`` sets the threads the library may use: all cores to
build, one to search. ``save(directory)`` writes what a server would load.

The indexes: scaleout's own (``bruteforce`` is exact NumPy, ``scann`` is
``scann_ops_pybind``), exact TensorFlow (``tf_bruteforce``), the TFRS layers
(``tfrs_bruteforce``, ``tfrs_scann``) and the peers a user would otherwise
pick: FAISS (``faiss_flat`` exact, ``faiss_hnsw``, ``faiss_ivfpqfs``: IVF with
4-bit PQ fast scan and exact re-ranking) and ``hnswlib``. Libraries are
imported when an index is made, so a machine without TensorFlow runs the rest.
"""

from __future__ import annotations

import abc
import dataclasses
import math
import os
from pathlib import Path

import numpy as np

from scaleout.config import IndexConfig
from scaleout.errors import ConfigError
from scaleout.index.scann import tree_leaves


class Algorithm(abc.ABC):
    #: query arguments this index understands, with their types
    query_params: dict[str, type] = {}
    #: build arguments this index understands (None: checked by the library itself)
    build_params: set[str] | None = set()
    #: modules imported before the build is measured, so their memory is not charged to the index
    modules: tuple[str, ...] = ()
    #: the value of each argument not given (the library's usual setting), read through build_arg / query_arg
    build_defaults: dict = {}
    query_defaults: dict = {}

    def __init__(self, **build_args):
        if self.build_params is not None and set(build_args) - self.build_params:
            raise ConfigError(f"{type(self).__name__}: unknown build arguments {sorted(set(build_args) - self.build_params)}; "
                              f"expected {sorted(self.build_params) or 'none'}")
        self.build_args = build_args
        self.query_args: dict = {}

    def build_arg(self, name: str):
        return self.build_args.get(name, self.build_defaults[name])

    def query_arg(self, name: str):
        return self.query_args.get(name, self.query_defaults[name])

    @abc.abstractmethod
    def build(self, train: np.ndarray) -> None:
        """Indexes ``train`` [n, dim] float32 (row i is candidate i)."""

    @abc.abstractmethod
    def search(self, queries: np.ndarray, k: int):
        """queries [batch, dim] float32: the library's own answer (timed)."""

    def rows(self, result) -> np.ndarray:
        """Candidate rows [batch, k] int64 of a ``search`` result."""
        return np.asarray(result, dtype=np.int64)

    @abc.abstractmethod
    def save(self, directory: Path) -> None:
        """Writes the built index under ``directory`` (for its size on disk)."""

    def threads(self, n: int) -> None:
        """The threads the library may use from now on."""

    def applicable(self, query_args: dict) -> dict:
        """The query arguments that change this built index's answers (others are dropped), checked."""
        unknown = set(query_args) - set(self.query_params)
        if unknown:
            raise ConfigError(f"{type(self).__name__}: unknown query arguments {sorted(unknown)}; "
                              f"expected {sorted(self.query_params) or 'none'}")
        return dict(query_args)

    def set_query_args(self, **query_args) -> None:
        self.query_args = self.applicable(query_args)


def _leaves(n: int, args: dict) -> int:
    """num_leaves from ``leaves_per_sqrt`` or ``num_leaves`` (IndexConfig's defaults where not given), as
    scaleout.index.scann.Scann counts them; at most n."""
    cfg = dataclasses.replace(IndexConfig(), **{k: args[k] for k in ("leaves_per_sqrt", "num_leaves") if k in args})
    return min(n, tree_leaves(n, cfg.leaves_per_sqrt, cfg.num_leaves))


class ScaleoutBruteForce(Algorithm):
    """scaleout.index.brute_force.BruteForce: exact, NumPy matmul in cache-sized tiles with a running top k."""

    modules = ("threadpoolctl",)

    def build(self, train):
        from scaleout.index.brute_force import BruteForce

        self.index = BruteForce().build(np.arange(len(train)), train)

    def search(self, queries, k):
        return self.index.search(queries, k)[1]

    def rows(self, result):
        return result.astype(np.int64)

    def save(self, directory):
        self.index.save(directory / "index")

    def threads(self, n):
        from threadpoolctl import threadpool_limits

        self._limit = threadpool_limits(n)  # kept: the limit holds while the object lives


class ScaleoutScann(Algorithm):
    """scaleout.index.scann.Scann (scann_ops_pybind). Build: any IndexConfig field (leaves_per_sqrt, num_leaves, mode,
    dims_per_block, anisotropic_threshold, training_sample_size). Query: leaves_fraction (of the leaves searched,
    at least), points_per_result (leaves enough to visit that many candidates per result asked for) and
    reorder_per_k (candidates rescored exactly, per result asked for): the IndexConfig fields of the same names,
    so the tuner's choice per k is a row of IndexConfig.search_by_k. A setting without points_per_result searches
    leaves_fraction of the leaves whatever k (the grid before rows by k existed); one with none of the three
    uses IndexConfig's defaults."""

    modules = ("scann",)

    query_params = {"leaves_fraction": float, "points_per_result": int, "reorder_per_k": int}
    build_params = None  # IndexConfig's fields, checked by it

    def build(self, train):
        from scaleout.index.scann import Scann

        try:
            cfg = IndexConfig(**self.build_args)
        except TypeError as exc:
            raise ConfigError(f"scann build arguments {self.build_args}: {exc}; expected IndexConfig fields") from exc
        self.index = Scann(cfg).build(np.arange(len(train)), train)

    def applicable(self, query_args):
        args = super().applicable(query_args)
        if self.index.mode != "tree":
            args.pop("leaves_fraction", None)
            args.pop("points_per_result", None)
        if self.index.mode == "brute_force":
            args.pop("reorder_per_k", None)
        return args

    def set_query_args(self, **query_args):
        super().set_query_args(**query_args)
        self.fraction = self.query_args.get("leaves_fraction") or 0.0
        self.per_result = self.query_args.get("points_per_result") or 0
        self.per_k = self.query_args.get("reorder_per_k")

    def leaves(self, k):
        from scaleout.index.scann import leaves_for

        if self.index.mode != "tree" or not (self.fraction or self.per_result):
            return None
        return leaves_for(k, self.index.size, self.index.num_leaves, self.fraction, self.per_result)

    def search(self, queries, k):
        return self.index.search(queries, k, leaves_to_search=self.leaves(k),
                                 reorder=self.per_k * k if self.per_k else None)[1]

    def rows(self, result):
        return result.astype(np.int64)

    def save(self, directory):
        self.index.save(directory / "index")


class TFBruteForce(Algorithm):
    """Exact search in TensorFlow: one matmul and tf.math.top_k in a tf.function."""

    def build(self, train):
        from scaleout.tfenv import tf

        self.tf = tf
        self.candidates = tf.constant(train)
        self.fn = tf.function(lambda q, k: tf.math.top_k(tf.linalg.matmul(q, self.candidates, transpose_b=True), k),
                              reduce_retracing=True)

    def search(self, queries, k):
        return self.fn(self.tf.constant(queries), k).indices.numpy()

    def save(self, directory):
        directory.mkdir(parents=True, exist_ok=True)
        np.save(directory / "candidates.npy", self.candidates.numpy())


class _TFRSLayer(Algorithm):
    """A TFRS factorized_top_k layer indexed with row numbers as identifiers."""

    modules = ("tensorflow_recommenders",)

    whitelist: list[str] = []

    def _index(self, layer, train):
        from scaleout.tfenv import tf

        self.tf = tf
        self.layer = layer.index(tf.constant(train), tf.range(len(train), dtype=tf.int64))

    def search(self, queries, k):
        return self.layer(self.tf.constant(queries), k=k)[1].numpy()

    def save(self, directory):
        tf, layer = self.tf, self.layer
        dim = self.dim

        class Server(tf.Module):
            def __init__(self):
                super().__init__()
                self.layer = layer

            @tf.function(input_signature=[tf.TensorSpec([None, dim], tf.float32)])
            def serve(self, queries):
                return self.layer(queries, k=10)

        server = Server()
        tf.saved_model.save(server, str(directory / "saved_model"), signatures={"serving_default": server.serve},
                            options=tf.saved_model.SaveOptions(namespace_whitelist=self.whitelist))


class TFRSBruteForce(_TFRSLayer):
    """tfrs.layers.factorized_top_k.BruteForce."""

    def build(self, train):
        from scaleout.tfenv import tfrs

        self.dim = train.shape[1]
        self._index(tfrs.layers.factorized_top_k.BruteForce(k=100), train)


class TFRSScaNN(_TFRSLayer):
    """tfrs.layers.factorized_top_k.ScaNN; its search settings are fixed when it is built, so they are build
    arguments: leaves_per_sqrt or num_leaves, leaves_fraction, reorder_per_k (x 10), dims_per_block, each
    IndexConfig's default where not given. Batches are searched on one thread (parallelize_batch_searches=False)."""

    modules = ("tensorflow_recommenders", "scann")

    whitelist = ["Scann"]
    build_params = {"leaves_per_sqrt", "num_leaves", "leaves_fraction", "reorder_per_k", "dims_per_block"}

    def build(self, train):
        from scaleout.tfenv import tfrs

        from scaleout.index.scann import leaves_for

        cfg = dataclasses.replace(IndexConfig(), **self.build_args)
        leaves = _leaves(len(train), self.build_args)
        self.dim = train.shape[1]
        fraction, per_result, per_k = cfg.search_row(10)  # fixed at build: the defaults for k=10
        layer = tfrs.layers.factorized_top_k.ScaNN(
            k=100, num_leaves=leaves, num_leaves_to_search=leaves_for(10, len(train), leaves, fraction, per_result),
            dimensions_per_block=cfg.dims_per_block, num_reordering_candidates=per_k * 10,
            parallelize_batch_searches=False)
        self._index(layer, train)


class _Faiss(Algorithm):
    modules = ("faiss",)

    def threads(self, n):
        import faiss

        faiss.omp_set_num_threads(n)

    def search(self, queries, k):
        return self.index.search(queries, k)[1]

    def save(self, directory):
        import faiss

        directory.mkdir(parents=True, exist_ok=True)
        faiss.write_index(self.index, str(directory / "index.faiss"))


class FaissFlat(_Faiss):
    """faiss.IndexFlatIP: exact."""

    def build(self, train):
        import faiss

        self.index = faiss.IndexFlatIP(train.shape[1])
        self.index.add(train)


class FaissHNSW(_Faiss):
    """faiss.IndexHNSWFlat (inner product). Build: M, ef_construction. Query: ef_search."""

    query_params = {"ef_search": int}
    build_params = {"M", "ef_construction"}
    build_defaults = {"M": 32, "ef_construction": 100}
    query_defaults = {"ef_search": 64}

    def build(self, train):
        import faiss

        self.index = faiss.IndexHNSWFlat(train.shape[1], self.build_arg("M"), faiss.METRIC_INNER_PRODUCT)
        self.index.hnsw.efConstruction = self.build_arg("ef_construction")
        self.index.add(train)

    def set_query_args(self, **query_args):
        super().set_query_args(**query_args)
        self.index.hnsw.efSearch = self.query_arg("ef_search")


class FaissIVFPQFastScan(_Faiss):
    """faiss index_factory "IVF<nlist>,PQ<d/2>x4fs,RFlat": an inverted file of about sqrt(n) lists
    (``lists_per_sqrt``), 4-bit PQ codes scanned with SIMD, then exact re-ranking of k x k_factor.
    Query: nprobe_fraction (of the lists), k_factor."""

    query_params = {"nprobe_fraction": float, "k_factor": int}
    build_params = {"lists_per_sqrt", "dims_per_subquantizer"}
    build_defaults = {"lists_per_sqrt": 1.0, "dims_per_subquantizer": 2}
    query_defaults = {"nprobe_fraction": 0.05, "k_factor": 4}

    def build(self, train):
        import faiss

        n, dim = train.shape
        self.nlist = max(1, round(self.build_arg("lists_per_sqrt") * math.sqrt(n)))
        sub = self.build_arg("dims_per_subquantizer")
        if dim % sub:
            raise ConfigError(f"faiss_ivfpqfs: dim {dim} is not a multiple of dims_per_subquantizer={sub}")
        self.index = faiss.index_factory(dim, f"IVF{self.nlist},PQ{dim // sub}x4fs,RFlat", faiss.METRIC_INNER_PRODUCT)
        # 256 training points per list, as FAISS's own clustering samples at most
        cap = 256 * self.nlist
        sample = train if n <= cap else train[np.sort(np.random.default_rng(0).choice(n, cap, replace=False))]
        self.index.train(sample)
        self.index.add(train)

    def set_query_args(self, **query_args):
        import faiss

        super().set_query_args(**query_args)
        ivf = faiss.extract_index_ivf(self.index)
        ivf.nprobe = max(1, math.ceil(self.query_arg("nprobe_fraction") * self.nlist))
        self.index.k_factor = self.query_arg("k_factor")


class Hnswlib(Algorithm):
    """hnswlib.Index(space="ip"). Build: M, ef_construction. Query: ef_search."""

    modules = ("hnswlib",)
    query_params = {"ef_search": int}
    build_params = {"M", "ef_construction"}
    build_defaults = FaissHNSW.build_defaults
    query_defaults = FaissHNSW.query_defaults

    def build(self, train):
        import hnswlib

        self.index = hnswlib.Index(space="ip", dim=train.shape[1])
        self.index.init_index(max_elements=len(train), M=self.build_arg("M"),
                              ef_construction=self.build_arg("ef_construction"), random_seed=0)
        self.index.add_items(train, np.arange(len(train)), num_threads=self._threads)

    _threads = os.cpu_count() or 1

    def threads(self, n):
        self._threads = n

    def set_query_args(self, **query_args):
        super().set_query_args(**query_args)
        self._ef = self.query_arg("ef_search")
        self.index.set_ef(self._ef)

    def search(self, queries, k):
        ef = max(k, self.query_arg("ef_search"))  # hnswlib needs ef >= k
        if ef != self._ef:
            self.index.set_ef(ef)
            self._ef = ef
        return self.index.knn_query(queries, k=k, num_threads=self._threads)[0]

    def save(self, directory):
        directory.mkdir(parents=True, exist_ok=True)
        self.index.save_index(str(directory / "index.bin"))


ALGORITHMS: dict[str, type[Algorithm]] = {
    "bruteforce": ScaleoutBruteForce,
    "tf_bruteforce": TFBruteForce,
    "tfrs_bruteforce": TFRSBruteForce,
    "faiss_flat": FaissFlat,
    "scann": ScaleoutScann,
    "tfrs_scann": TFRSScaNN,
    "faiss_hnsw": FaissHNSW,
    "faiss_ivfpqfs": FaissIVFPQFastScan,
    "hnswlib": Hnswlib,
}
EXACT = {"bruteforce", "tf_bruteforce", "tfrs_bruteforce", "faiss_flat"}
NEEDS_TENSORFLOW = {"tf_bruteforce", "tfrs_bruteforce", "tfrs_scann"}


def make(name: str, build_args: dict) -> Algorithm:
    if name not in ALGORITHMS:
        raise ConfigError(f"unknown index {name!r}; expected one of {', '.join(ALGORITHMS)}")
    return ALGORITHMS[name](**build_args)
