"""Exact top k of a brute-force search in one pass over the candidates: Triton kernels, scores never in memory.

The PyTorch search (scaleout.bench.gpu) writes every score to memory and reads it back for the top k: the
matrix-vector product, then group maxima and their sort, a handful of kernels. Here one kernel
(``score_top``) reads a block of candidates, scores it against a block of queries and keeps each
query's best K of the block, K being k rounded up to a power of two (``tl.topk``, a bitonic network in
registers). A second kernel (``select``) keeps the best K of every SELECT of those, until one block is
left, whose first k columns are the answer, best first.

A score and its candidate's row travel as one 64-bit key: the score's bits made to sort as integers in the
high half, the row's complement in the low half (equal scores: the lower row first, as NumPy's stable sort).
Exact: each of the k best is among its own block's K best. fp32 candidates are scored in fp32 (``tl.dot``'s
"ieee" precision for batches; no TF32), bf16 ones with fp32 sums, as the PyTorch search does.

For batches, ``top_k_by_maxima`` keeps less: each query's highest score per block (``group_max``, the
products on tensor cores), then rescoring of the k best blocks in fp32. On the H200 (2026-12-04) the fused
search halved PyTorch's one-query time and the block maxima took 40% off a batch of 1,024 in fp32 (README,
"GPU half"); the fused search lost at every batch.

Runs where Triton runs: compiled on an NVIDIA GPU, and through Triton's interpreter (``TRITON_INTERPRET``)
on PyTorch CPU tensors, which is how the test suite checks it against NumPy.
"""

from __future__ import annotations

import functools
import importlib.util
import os
import sys

SELECT = 4096  # keys per program of the select kernel
SELECT_WARPS = 8
KEYS_AT_ONCE = 1 << 27  # stage one's keys held at once (1 GiB of int64): batches beyond that go in slices
# candidates per program of the first kernel a captured search may choose from (GpuBruteForce.plans),
# one query / a batch
BLOCKS_ONE = (256, 512)
BLOCKS_BATCH = (64, 128)
ONE_VALUES = 1 << 15  # a one-query program's candidate values at most (512 x 128 spilled registers at 32 warps)
BATCH_ROWS = 64  # queries per program for batches of 16 or more; 16 below that (tl.dot's smallest)
# the block-maxima search (top_k_by_maxima): its ways (Plan.top_k) and their products' precision, and the
# candidates a program per dtype (fp32 blocks of 256 spilled registers in ptxas for sm_90 with tf32x3)
MAXIMA_WAYS = {"maxima": "ieee", "maxima-tf32x3": "tf32x3"}
MAXIMA_BLOCKS = {"float32": (64, 128), "bfloat16": (128, 256)}
GATHERED_AT_ONCE = 1 << 28  # candidate values the maxima search gathers for rescoring at once (1 GiB of fp32)


def missing() -> str | None:
    """Why the fused search cannot run in this process (Triton not installed), or None."""
    if importlib.util.find_spec("triton") is None:  # not imported here: see _kernels
        return "Triton is not installed"
    return None


def _pow2(x: int) -> int:
    return 1 << max(0, int(x) - 1).bit_length()


@functools.cache
def _kernels(interpret: bool):
    """Triton and the three kernels, compiled (GPU) or interpreted (CPU tensors). Triton reads TRITON_INTERPRET when a
    kernel is defined, so their module (gpu_fused_kernels) is imported on first use; one process runs them
    one way."""
    if interpret:
        if "triton" in sys.modules and os.environ.get("TRITON_INTERPRET") != "1":
            raise RuntimeError("Triton was imported in this process before its interpreter was asked for, so its "
                               "library is compiled-only; set TRITON_INTERPRET=1 before anything imports triton")
        os.environ["TRITON_INTERPRET"] = "1"
    import triton

    from scaleout.bench import gpu_fused_kernels as kernels

    return triton, kernels.score_top, kernels.select, kernels.group_max


def _shapes(x, q, k: int) -> tuple[int, int, int]:
    """(n, dim, b) of candidates x [n, dim] and queries q [b, dim] of x's dtype, checked with k."""
    n, dim = x.shape
    if not 1 <= k <= n:
        raise ValueError(f"k = {k}: expected 1..{n} (the candidates)")
    if q.shape[1] != dim or q.dtype != x.dtype:
        raise ValueError(f"queries {tuple(q.shape)} {q.dtype}: expected [b, {dim}] {x.dtype}")
    return n, dim, q.shape[0]


def config(b: int, k: int, dim: int, block: int, fp32: bool) -> dict:
    """The first kernel's shape for b queries, k and dim: K, BM queries x BN candidates a program (BN at least
    ``block`` and 2K), BD (dim padded), BK (dimensions a step of a batch's matrix product), the precision of
    its products and the warps a program: at most 64 of a one-query block's values or about 32 of a batch's
    scores a thread, which kept every shipped shape free of register spills in ptxas for sm_90
    (tests/bench/test_gpu_fused.py)."""
    K = max(2, _pow2(k))  # tl.topk keeps a power of two, two at least
    BD = max(16, _pow2(dim))
    BN = max(_pow2(block), 2 * K, 16)
    if b == 1:
        BN = max(2 * K, min(BN, ONE_VALUES // BD))
        BM, BK, warps = 1, BD, BN * BD // 2048
    else:
        BM = 16 if b < 16 or K > 32 else BATCH_ROWS
        BK, warps = (16 if fp32 else 32), BM * BN // 1024
    return {"K": K, "BM": BM, "BN": BN, "BD": BD, "BK": min(BK, BD), "ONE": b == 1,
            "PRECISION": "ieee" if fp32 else None, "num_warps": min(32, max(4, warps))}


def top_k(x, q, k: int, block: int, interpret: bool = False):
    """rows [b, k] (int64, x's device) of the k best candidates x [n, dim] for queries q [b, dim] (x's dtype),
    best first; ``block``: candidates per program of the first kernel (at least 2K for a batch, as K is)."""
    import torch

    n, dim, b = _shapes(x, q, k)
    triton, score_top, select, _ = _kernels(interpret)
    shape = config(b, k, dim, block, x.dtype == torch.float32)
    K, BM, BN = shape["K"], shape["BM"], shape["BN"]
    blocks = triton.cdiv(n, BN)
    x, q = x.contiguous(), q.contiguous()
    # queries a slice holds: its keys within KEYS_AT_ONCE, and a grid axis under 65,536
    per = min(1 << 15, max(1, KEYS_AT_ONCE // (blocks * K)) // BM * BM or BM)
    answers = []
    for q0 in range(0, b, per):
        qq = q[q0:q0 + per]
        m = qq.shape[0]
        width = blocks * K
        last = blocks == 1
        keys = torch.empty((m, k if last else width), dtype=torch.int64, device=x.device)
        score_top[(blocks, triton.cdiv(m, BM))](x, qq, keys, n, m, dim, keys.shape[1], k, **shape, DECODE=last,
                                                  WIDEN=interpret)
        while not last:
            BW = min(max(SELECT, 2 * K), _pow2(width))
            parts = triton.cdiv(width, BW)
            last = parts == 1
            out = torch.empty((m, k if last else parts * K), dtype=torch.int64, device=x.device)
            select[(parts, m)](keys, out, width, m, out.shape[1], k, BW=BW, K=K, DECODE=last, num_warps=SELECT_WARPS)
            keys, width = out, parts * K
        answers.append(keys)
    return answers[0] if len(answers) == 1 else torch.cat(answers)


def maxima_warps(block: int, rows: int = BATCH_ROWS) -> int:
    """Warps of a block-maxima program of ``rows`` queries x ``block`` candidates: about 32 scores a thread."""
    return min(16, max(4, rows * block // 1024))


def top_k_by_maxima(x, q, k: int, block: int, precision: str = "ieee", interpret: bool = False):
    """rows [b, k] of the k best candidates for a batch of queries, best first, in two steps: a kernel
    (``group_max``) scores blocks of ``block`` candidates against blocks of queries with tensor-core-sized
    matrix products and keeps only each query's highest score of each block; then each query's k blocks
    with the highest maxima are scored again in fp32 (a gather and a batched product) and their best k kept.
    Exact for the same reason as group maxima (a block holding one of the k best has a maximum at least the
    k-th best score): with "ieee" precision (fp32) or bf16 candidates, whose products are exact in the fp32
    sums. With "tf32x3" (fp32 candidates; three TF32 products a product, about fp32's precision) the maxima
    may differ from fp32's in the last bits, so a block could lose its place only to another whose maximum
    ties the k-th best score to that precision; the scores returned are fp32's either way."""
    import torch

    n, dim, b = _shapes(x, q, k)
    triton, _, _, group_max = _kernels(interpret)
    fp32 = x.dtype == torch.float32
    BN = max(16, _pow2(block))
    BD = max(16, _pow2(dim))
    BM = BATCH_ROWS if b >= 16 else 16
    blocks = triton.cdiv(n, BN)
    x, q = x.contiguous(), q.contiguous()
    precision = "ieee" if interpret or not fp32 else precision
    g = min(k, blocks)
    offsets = torch.arange(BN, device=x.device)
    per = max(BM, GATHERED_AT_ONCE // (g * BN * dim) // BM * BM)  # queries a slice gathers
    answers = []
    for q0 in range(0, b, per):
        qq = q[q0:q0 + per]
        m = qq.shape[0]
        maxima = torch.empty((m, blocks), dtype=torch.float32, device=x.device)
        group_max[(blocks, triton.cdiv(m, BM))](x, qq, maxima, n, m, dim, blocks, BM=BM, BN=BN, BD=BD,
                                                BK=min(BD, 16 if fp32 else 32), PRECISION=precision,
                                                WIDEN=interpret, num_warps=maxima_warps(BN, BM))
        kept = torch.topk(maxima, g, dim=1).indices  # [m, g]
        cols = (kept.unsqueeze(2) * BN + offsets).reshape(m, g * BN)
        real = cols < n  # the last block's padding
        cols = torch.where(real, cols, n - 1)
        scores = torch.bmm(x[cols].float(), qq.float().unsqueeze(2)).squeeze(2)  # [m, g * BN], fp32
        scores = torch.where(real, scores, float("-inf"))
        answers.append(torch.gather(cols, 1, torch.topk(scores, k, dim=1).indices))
    return answers[0] if len(answers) == 1 else torch.cat(answers)
