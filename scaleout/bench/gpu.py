"""Brute force on a GPU: one matmul and top-k per candidate tile, the answer copied back, all timed.

Backends, first present wins: TensorFlow where it sees a GPU (users' clusters),
else PyTorch, JAX or CuPy (the lent H200 machine has those but no TensorFlow).
Each search takes host queries [batch, dim] float32 and returns host rows
[batch, k]; the host-to-device copy of the queries, the scoring, the top k
over every tile and the copy back are inside the time. ``bfloat16`` stores
the candidates and queries in bf16 (scores accumulate as the library does);
CuPy has no bf16 and reports it unsupported.
"""

from __future__ import annotations

import importlib.util

import numpy as np

SCORES_PER_TILE = 1 << 28  # 1 GiB of fp32 scores per tile at most


def _present(module: str) -> bool:
    return importlib.util.find_spec(module) is not None


def detect() -> tuple[str | None, dict]:
    """(backend name or None, what was found per library): the first library that sees a GPU."""
    found = {}
    if _present("tensorflow"):
        from scaleout.tfenv import tf

        gpus = tf.config.list_physical_devices("GPU")
        found["tensorflow"] = f"{len(gpus)} GPU(s)"
        if gpus:
            return "tensorflow", found
    else:
        found["tensorflow"] = "not installed"
    if _present("torch"):
        import torch

        found["torch"] = f"cuda available: {torch.cuda.is_available()}"
        if torch.cuda.is_available():
            return "torch", found
    else:
        found["torch"] = "not installed"
    if _present("jax"):
        import jax

        gpus = [d for d in jax.devices() if d.platform == "gpu"]
        found["jax"] = f"{len(gpus)} GPU(s)"
        if gpus:
            return "jax", found
    else:
        found["jax"] = "not installed"
    if _present("cupy"):
        import cupy

        try:
            count = cupy.cuda.runtime.getDeviceCount()
        except Exception as exc:  # no driver / no device
            count, found["cupy"] = 0, f"no device ({exc})"
        else:
            found["cupy"] = f"{count} device(s)"
        if count:
            return "cupy", found
    else:
        found["cupy"] = "not installed"
    return None, found


CPU_CHECK = "harness check only, not a GPU result"


def device_name(backend: str, on_cpu: bool = False) -> str:
    if on_cpu:
        return f"CPU ({backend}, {CPU_CHECK})"
    if backend == "torch":
        import torch

        return torch.cuda.get_device_name(0)
    if backend == "jax":
        import jax

        return str(jax.devices()[0].device_kind)
    if backend == "cupy":
        import cupy

        return cupy.cuda.runtime.getDeviceProperties(0)["name"].decode()
    from scaleout.tfenv import tf

    gpus = tf.config.list_physical_devices("GPU")
    return tf.config.experimental.get_device_details(gpus[0]).get("device_name", gpus[0].name)


class GpuBruteForce:
    """Exact top k on the device for one (backend, dtype): ``search(queries [b, dim], k) -> rows [b, k]``.

    ``on_cpu`` runs the same code on the library's CPU device, GPU or not: the
    test suite checks every path that way against NumPy (CuPy has no CPU device).
    """

    def __init__(self, backend: str, train: np.ndarray, dtype: str = "float32", on_cpu: bool = False):
        if dtype not in ("float32", "bfloat16"):
            raise ValueError(f"dtype {dtype!r}: expected float32 or bfloat16")
        if backend == "cupy" and dtype == "bfloat16":
            raise NotImplementedError("CuPy has no bfloat16")
        if backend == "cupy" and on_cpu:
            raise NotImplementedError("CuPy has no CPU device")
        self.backend, self.dtype, self.n, self.on_cpu = backend, dtype, len(train), on_cpu
        getattr(self, f"_init_{backend}")(train)

    def search(self, queries: np.ndarray, k: int) -> np.ndarray:
        chunk = max(k, SCORES_PER_TILE // max(1, len(queries)))
        return getattr(self, f"_search_{self.backend}")(queries, k, chunk)

    # TensorFlow
    def _init_tensorflow(self, train):
        from scaleout.tfenv import tf

        self.tf = tf
        self.dt = tf.bfloat16 if self.dtype == "bfloat16" else tf.float32
        device = "/GPU:0" if tf.config.list_physical_devices("GPU") and not self.on_cpu else "/CPU:0"
        with tf.device(device):
            self.x = tf.cast(tf.constant(train), self.dt)
        self.device = device

        @tf.function(reduce_retracing=True)
        def tile(q, x, k):
            s, i = tf.math.top_k(tf.cast(tf.linalg.matmul(q, x, transpose_b=True), tf.float32), k)
            return s, i
        self.tile = tile

    def _search_tensorflow(self, queries, k, chunk):
        tf = self.tf
        with tf.device(self.device):
            q = tf.cast(tf.constant(queries), self.dt)
            scores, rows = [], []
            for c0 in range(0, self.n, chunk):
                s, i = self.tile(q, self.x[c0:c0 + chunk], min(k, min(chunk, self.n - c0)))
                scores.append(s)
                rows.append(i + c0)
            s, i = tf.concat(scores, 1), tf.concat(rows, 1)
            if len(scores) > 1:
                s, j = tf.math.top_k(s, k)
                i = tf.gather(i, j, batch_dims=1)
            return i.numpy()

    # PyTorch
    def _init_torch(self, train):
        import torch

        self.torch = torch
        self.dt = torch.bfloat16 if self.dtype == "bfloat16" else torch.float32
        self.device = "cpu" if self.on_cpu else "cuda"
        self.x = torch.from_numpy(train).to(self.device).to(self.dt)

    def _search_torch(self, queries, k, chunk):
        torch = self.torch
        with torch.inference_mode():
            q = torch.from_numpy(queries).to(self.device).to(self.dt)
            best_s = best_i = None
            for c0 in range(0, self.n, chunk):
                s, i = torch.topk((q @ self.x[c0:c0 + chunk].T).float(), min(k, min(chunk, self.n - c0)), dim=1)
                i = i + c0
                if best_s is not None:
                    s, j = torch.topk(torch.cat([best_s, s], 1), k, dim=1)
                    i = torch.gather(torch.cat([best_i, i], 1), 1, j)
                best_s, best_i = s, i
            return best_i.cpu().numpy()

    # JAX
    def _init_jax(self, train):
        import jax
        import jax.numpy as jnp

        self.jax, self.jnp = jax, jnp
        self.dt = jnp.bfloat16 if self.dtype == "bfloat16" else jnp.float32
        self.device = jax.devices("cpu")[0] if self.on_cpu else jax.devices()[0]
        self.x = jax.device_put(jnp.asarray(train, dtype=self.dt), self.device)
        self.tile = jax.jit(lambda q, x, k: jax.lax.top_k((q @ x.T).astype(jnp.float32), k), static_argnums=2)

    def _search_jax(self, queries, k, chunk):
        jnp, jax = self.jnp, self.jax
        q = jax.device_put(jnp.asarray(queries, dtype=self.dt), self.device)
        best_s = best_i = None
        for c0 in range(0, self.n, chunk):
            s, i = self.tile(q, self.x[c0:c0 + chunk], min(k, min(chunk, self.n - c0)))
            i = i + c0
            if best_s is not None:
                s, j = jax.lax.top_k(jnp.concatenate([best_s, s], 1), k)
                i = jnp.take_along_axis(jnp.concatenate([best_i, i], 1), j, axis=1)
            best_s, best_i = s, i
        return np.asarray(best_i)

    # CuPy
    def _init_cupy(self, train):
        import cupy

        self.cp = cupy
        self.x = cupy.asarray(train)

    def _search_cupy(self, queries, k, chunk):
        cp = self.cp
        q = cp.asarray(queries)
        best_s = best_i = None
        for c0 in range(0, self.n, chunk):
            s = q @ self.x[c0:c0 + chunk].T
            kk = min(k, s.shape[1])
            part = cp.argpartition(-s, kk - 1, axis=1)[:, :kk] if kk < s.shape[1] else \
                cp.broadcast_to(cp.arange(s.shape[1]), s.shape)
            ps = cp.take_along_axis(s, part, 1)
            i = part + c0
            if best_s is not None:
                ps, i = cp.concatenate([best_s, ps], 1), cp.concatenate([best_i, i], 1)
                j = cp.argpartition(-ps, k - 1, axis=1)[:, :k]
                ps, i = cp.take_along_axis(ps, j, 1), cp.take_along_axis(i, j, 1)
            best_s, best_i = ps, i
        order = cp.argsort(-best_s, axis=1)
        return cp.asnumpy(cp.take_along_axis(best_i, order, 1))
