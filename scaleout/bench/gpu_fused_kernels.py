"""The Triton kernels of scaleout.bench.gpu_fused (which says what they do). Imported by it on first use, after
it has set TRITON_INTERPRET where the kernels run on the CPU: Triton reads that when a kernel is defined."""

import triton
import triton.language as tl


@triton.jit
def keys_of(s, rows):
    """int64 keys ordering (score, lower row first) as integers: an fp32's bits, negatives' magnitude bits
    flipped, in the high half; the row's complement in the low half."""
    bits = s.to(tl.int32, bitcast=True)
    ordered = bits ^ ((bits >> 31) & 0x7FFFFFFF)
    low = (~rows.to(tl.int64)) & 0xFFFFFFFF
    return (ordered.to(tl.int64) << 32) | low


@triton.jit
def store(out_ptr, top, qs, b, out_width, column0, k, K: tl.constexpr, DECODE: tl.constexpr):
    """Keys [BM, K] at out[qs, column0:column0 + K]; with DECODE, the first k keys' rows instead."""
    cols = tl.arange(0, K)
    where = out_ptr + qs[:, None].to(tl.int64) * out_width + column0 + cols[None, :]
    if DECODE:
        tl.store(where, (~top) & 0xFFFFFFFF, mask=(qs[:, None] < b) & (cols[None, :] < k))
    else:
        tl.store(where, top, mask=qs[:, None] < b)


@triton.jit
def products(x_ptr, q_ptr, rows, qs, n, b, dim, BM: tl.constexpr, BN: tl.constexpr, BD: tl.constexpr,
             BK: tl.constexpr, PRECISION: tl.constexpr, WIDEN: tl.constexpr):
    """Scores [BM, BN] (fp32) of queries qs against candidates rows: a matrix product, BK dimensions a step."""
    s = tl.zeros((BM, BN), dtype=tl.float32)
    for d0 in tl.range(0, BD, BK):
        d = d0 + tl.arange(0, BK)
        x = tl.load(x_ptr + rows[:, None].to(tl.int64) * dim + d[None, :],
                    mask=(rows[:, None] < n) & (d[None, :] < dim), other=0.0)
        q = tl.load(q_ptr + qs[:, None].to(tl.int64) * dim + d[None, :],
                    mask=(qs[:, None] < b) & (d[None, :] < dim), other=0.0)
        if WIDEN:  # the interpreter's tl.dot gets bf16 operands wrong (Triton 3.6.0); exact in fp32 anyway
            x = x.to(tl.float32)
            q = q.to(tl.float32)
        s = tl.dot(q, tl.trans(x), s, input_precision=PRECISION, out_dtype=tl.float32)
    return s


@triton.jit
def score_top(x_ptr, q_ptr, out_ptr, n, b, dim, out_width, k,
              BM: tl.constexpr, BN: tl.constexpr, BD: tl.constexpr, BK: tl.constexpr, K: tl.constexpr,
              ONE: tl.constexpr, PRECISION: tl.constexpr, DECODE: tl.constexpr, WIDEN: tl.constexpr):
    """Program (block of BN candidates, block of BM queries): each query's best K keys of the block."""
    pn = tl.program_id(0)
    pm = tl.program_id(1)
    rows = pn * BN + tl.arange(0, BN)
    qs = pm * BM + tl.arange(0, BM)
    if ONE:  # one query: a pass over the block's rows, each row's products summed: [1, BN]; else [BM, BN]
        d = tl.arange(0, BD)
        x = tl.load(x_ptr + rows[:, None].to(tl.int64) * dim + d[None, :],
                    mask=(rows[:, None] < n) & (d[None, :] < dim), other=0.0)
        q = tl.load(q_ptr + qs[:, None].to(tl.int64) * dim + d[None, :], mask=d[None, :] < dim, other=0.0)
        s = tl.sum(x.to(tl.float32) * q.to(tl.float32), axis=1)[None, :]
    else:
        s = products(x_ptr, q_ptr, rows, qs, n, b, dim, BM, BN, BD, BK, PRECISION, WIDEN)
    s = tl.where(rows[None, :] < n, s, float("-inf"))
    top = tl.topk(keys_of(s, rows[None, :]), K)
    store(out_ptr, top, qs, b, out_width, pn * K, k, K, DECODE)


@triton.jit
def select(in_ptr, out_ptr, w, b, out_width, k, BW: tl.constexpr, K: tl.constexpr, DECODE: tl.constexpr):
    """Program (block of BW keys, query): the query's best K keys of the block."""
    pn = tl.program_id(0)
    pm = tl.program_id(1)
    cols = pn * BW + tl.arange(0, BW)
    keys = tl.load(in_ptr + pm.to(tl.int64) * w + cols[None, :], mask=cols[None, :] < w, other=-9223372036854775807)
    top = tl.topk(keys, K)
    qs = pm + tl.arange(0, 1)
    store(out_ptr, top, qs, b, out_width, pn * K, k, K, DECODE)


@triton.jit
def group_max(x_ptr, q_ptr, out_ptr, n, b, dim, out_width,
              BM: tl.constexpr, BN: tl.constexpr, BD: tl.constexpr, BK: tl.constexpr,
              PRECISION: tl.constexpr, WIDEN: tl.constexpr):
    """Program (block of BN candidates, block of BM queries): each query's highest score in the block, at
    out[query, block]."""
    pn = tl.program_id(0)
    pm = tl.program_id(1)
    rows = pn * BN + tl.arange(0, BN)
    qs = pm * BM + tl.arange(0, BM)
    s = products(x_ptr, q_ptr, rows, qs, n, b, dim, BM, BN, BD, BK, PRECISION, WIDEN)
    s = tl.where(rows[None, :] < n, s, float("-inf"))
    tl.store(out_ptr + qs.to(tl.int64) * out_width + pn, tl.max(s, axis=1), mask=qs < b)
