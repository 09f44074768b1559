"""Triton kernels of the triton backend: fused quantization and INT8-Q·Kᵀ attention.

Imported only where Triton is installed (``backends/triton.py`` checks first).

Data path, top-down:
  1. K mean over tokens (torch reduction, fp32) and V per-channel amax (torch reductions).
  2. ``quant_rows``: one pass over Q and one over K; each program owns whole tiles of the
     reference's grouping (``quant.q_groups``/``k_groups``, any tiles), writes INT8 values
     (HND, contiguous) and one fp32 scale per token, so the attention kernel never needs to
     know the grouping. For Q it also writes q·k̄ (the lse correction).
  3. ``quant_v_fp8``: V divided by its per-channel scale, cast to e4m3 and stored transposed
     (B, H, D, N_pad), the K-major operand layout Hopper's FP8 wgmma needs for P·V.
  4. ``attention``: per (query block, batch·head), an online softmax over KV blocks of
     BLOCK_N = the reference's blk_k, so that the static-scale FP8 P sees the same running max.
"""

from __future__ import annotations

import triton
import triton.language as tl

LOG2E = 1.4426950408889634

# Grouping modes of quant_rows within each tile of TILE tokens.
ROWS_BLOCK = 0  # the whole tile is one group
ROWS_Q_THREAD = 1  # Q per-thread: 8 groups, token t in group t % 8
ROWS_K_THREAD = 2  # K per-thread: 4 groups, token t in group (t % 8) // 2


@triton.jit
def _round_half_even(x):
    """Round to nearest, ties to even, as cvt.rni does (floor-based: also runs in Triton's
    CPU interpreter, which has no libdevice)."""
    r = tl.math.floor(x + 0.5)
    tie = (r - x) == 0.5
    odd = (r - 2.0 * tl.math.floor(r * 0.5)) == 1.0
    return tl.where(tie & odd, r - 1.0, r)


@triton.jit
def _min(a, b):
    # Scalar min by arithmetic: stays a 0-d scalar in Triton's interpreter too (tl.minimum doesn't).
    return b + (a - b) * (a < b)


@triton.jit
def _group_amax(row_amax, MODE: tl.constexpr, BLOCK: tl.constexpr, TILE: tl.constexpr):
    """Each row's group amax, from the rows' own amax (BLOCK rows = BLOCK // TILE tiles)."""
    if MODE == 0:  # one group per tile
        r = tl.reshape(row_amax, (BLOCK // TILE, TILE))
        g = tl.max(r, axis=1)
        out = tl.broadcast_to(g[:, None], (BLOCK // TILE, TILE))
    elif MODE == 1:  # Q per-thread: rows with the same index mod 8 within a tile
        r = tl.reshape(row_amax, (BLOCK // TILE, TILE // 8, 8))
        g = tl.max(r, axis=1)
        out = tl.broadcast_to(g[:, None, :], (BLOCK // TILE, TILE // 8, 8))
    else:  # K per-thread: rows with the same (index mod 8) // 2 within a tile
        r = tl.reshape(row_amax, (BLOCK // TILE, TILE // 8, 4, 2))
        g = tl.max(tl.max(r, axis=3), axis=1)
        out = tl.broadcast_to(g[:, None, :, None], (BLOCK // TILE, TILE // 8, 4, 2))
    return tl.reshape(out, (BLOCK,))


@triton.jit
def quant_rows(
    X, X_q, Scale, Mean, QK_mean,
    N, H, H_MEAN,
    stride_xb, stride_xh, stride_xn,
    MODE: tl.constexpr, TILE: tl.constexpr, BLOCK: tl.constexpr, HEAD_DIM: tl.constexpr,
    QMAX: tl.constexpr, SUBTRACT_MEAN: tl.constexpr, WRITE_QK_MEAN: tl.constexpr,
):
    blk = tl.program_id(0)
    bh = tl.program_id(1)
    b = bh // H
    h = bh % H
    rows = blk * BLOCK + tl.arange(0, BLOCK)
    d = tl.arange(0, HEAD_DIM)
    valid = rows < N
    base = X + b.to(tl.int64) * stride_xb + h.to(tl.int64) * stride_xh
    x = tl.load(base + rows[:, None].to(tl.int64) * stride_xn + d[None, :], mask=valid[:, None], other=0.0)
    x = x.to(tl.float32)
    if SUBTRACT_MEAN:
        mean = tl.load(Mean + (b * H_MEAN + h) * HEAD_DIM + d)
        x = tl.where(valid[:, None], x - mean[None, :], 0.0)  # rows past N stay 0: no say in any amax
    if WRITE_QK_MEAN:
        # Q's rows dotted with their kv head's K mean: the K-smoothing correction of the lse.
        k_mean = tl.load(Mean + (b * H_MEAN + h // (H // H_MEAN)) * HEAD_DIM + d)
        tl.store(QK_mean + bh.to(tl.int64) * N + rows, tl.sum(x * k_mean[None, :], axis=1), mask=valid)
    amax = _group_amax(tl.max(tl.abs(x), axis=1), MODE, BLOCK, TILE)
    scale = tl.where(amax > 0, amax / QMAX, 1.0)
    # A NaN/Inf would vanish in the INT8 rounding (max() drops NaN, x / inf = 0): give its group a
    # NaN scale instead, so that the scores it touches, and the outputs, are NaN as in SDPA.
    bad = tl.where((x != x) | (tl.abs(x) == float("inf")), 1.0, 0.0)
    scale = tl.where(_group_amax(tl.max(bad, axis=1), MODE, BLOCK, TILE) > 0, float("nan"), scale)
    xq = _round_half_even(tl.math.div_rn(x, scale[:, None]))  # IEEE division, as the reference
    xq = tl.minimum(tl.maximum(xq, -QMAX), QMAX).to(tl.int8)
    out = X_q + bh.to(tl.int64) * N * HEAD_DIM
    tl.store(out + rows[:, None].to(tl.int64) * HEAD_DIM + d[None, :], xq, mask=valid[:, None])
    tl.store(Scale + bh.to(tl.int64) * N + rows, scale, mask=valid)


@triton.jit
def quant_v_fp8(
    V, V_q, V_scale,
    N, N_PAD, H,
    stride_vb, stride_vh, stride_vn,
    BLOCK: tl.constexpr, HEAD_DIM: tl.constexpr,
):
    nb = tl.program_id(0)
    bh = tl.program_id(1)
    b = bh // H
    h = bh % H
    n = nb * BLOCK + tl.arange(0, BLOCK)
    d = tl.arange(0, HEAD_DIM)
    base = V + b.to(tl.int64) * stride_vb + h.to(tl.int64) * stride_vh
    v = tl.load(base + n[:, None].to(tl.int64) * stride_vn + d[None, :], mask=(n < N)[:, None], other=0.0)
    scale = tl.load(V_scale + bh * HEAD_DIM + d)
    # Rows past N are written as zeros: e4m3 0x7F is NaN and 0·NaN would poison P·V.
    v8 = tl.math.div_rn(v.to(tl.float32), scale[None, :]).to(tl.float8e4nv)
    out = V_q + bh.to(tl.int64) * HEAD_DIM * N_PAD
    tl.store(out + d[:, None].to(tl.int64) * N_PAD + n[None, :], tl.trans(v8), mask=(n < N_PAD)[None, :])


@triton.jit
def _attend_block(
    acc, m_i, l_i, q, q_scale, K_q, K_scale, V_ptr, v_stride_n, v_stride_d,
    start_n, offs_m, N_KV,
    BLOCK_N: tl.constexpr, HEAD_DIM: tl.constexpr, PV_FP8: tl.constexpr, P_SCALE: tl.constexpr,
    MASK_COLS: tl.constexpr, CAUSAL_DIAG: tl.constexpr,
):
    offs_n = start_n + tl.arange(0, BLOCK_N)
    d = tl.arange(0, HEAD_DIM)
    col_ok = offs_n < N_KV
    k = tl.load(K_q + offs_n[:, None].to(tl.int64) * HEAD_DIM + d[None, :], mask=col_ok[:, None], other=0)
    k_scale = tl.load(K_scale + offs_n, mask=col_ok, other=0.0)
    # Scores s = q_scale·t with t = (q_int·k_int)·k_scale. q_scale > 0, so max(s) = q_scale·max(t)
    # and exp2(s - m) is one FFMA per element: a multiply saved on the softmax's critical path.
    t = tl.dot(q, tl.trans(k)).to(tl.float32) * k_scale[None, :]
    if MASK_COLS:
        t = tl.where(col_ok[None, :], t, float("-inf"))
    if CAUSAL_DIAG:
        t = tl.where(offs_n[None, :] <= offs_m[:, None], t, float("-inf"))
    m_new = tl.maximum(m_i, q_scale * tl.max(t, axis=1))
    p = tl.math.exp2(t * q_scale[:, None] - m_new[:, None])
    alpha = tl.math.exp2(m_i - m_new)
    l_i = l_i * alpha + tl.sum(p, axis=1)
    if PV_FP8:
        # V stored transposed (HEAD_DIM, N_PAD), rows past N zero: no mask needed.
        vt = tl.load(V_ptr + d[:, None].to(tl.int64) * v_stride_d + offs_n[None, :])
        pv = tl.dot((p * P_SCALE).to(tl.float8e4nv), tl.trans(vt))
    else:
        v = tl.load(V_ptr + offs_n[:, None].to(tl.int64) * v_stride_n + d[None, :], mask=col_ok[:, None], other=0.0)
        pv = tl.dot(p.to(tl.float16), v.to(tl.float16))
    acc = acc * alpha[:, None] + pv
    return acc, m_new, l_i


@triton.jit
def attention(
    Q_q, Q_scale, K_q, K_scale, V, V_scale, QK_mean, Out, Lse,
    N_Q, N_KV, H, H_KV, qk_scale, lse_scale,
    stride_vb, stride_vh, stride_vn, stride_vd,
    stride_ob, stride_oh, stride_on,
    HEAD_DIM: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr,
    CAUSAL: tl.constexpr, PV_FP8: tl.constexpr, P_SCALE: tl.constexpr, WRITE_LSE: tl.constexpr,
    WARP_SPECIALIZE: tl.constexpr,
):
    start_m = tl.program_id(0)
    bh = tl.program_id(1)
    b = bh // H
    h = bh % H
    bh_kv = b * H_KV + h // (H // H_KV)
    offs_m = start_m * BLOCK_M + tl.arange(0, BLOCK_M)
    d = tl.arange(0, HEAD_DIM)
    row_ok = offs_m < N_Q
    q = tl.load(Q_q + bh.to(tl.int64) * N_Q * HEAD_DIM + offs_m[:, None].to(tl.int64) * HEAD_DIM + d[None, :],
                mask=row_ok[:, None], other=0)
    # sm_scale·log2(e) folded into Q's scale: the softmax runs on exp2.
    q_scale = tl.load(Q_scale + bh.to(tl.int64) * N_Q + offs_m, mask=row_ok, other=1.0) * qk_scale
    k_base = K_q + bh_kv.to(tl.int64) * N_KV * HEAD_DIM
    ks_base = K_scale + bh_kv.to(tl.int64) * N_KV
    v_base = V + b.to(tl.int64) * stride_vb + (h // (H // H_KV)).to(tl.int64) * stride_vh

    m_i = tl.zeros([BLOCK_M], tl.float32) - float("inf")
    l_i = tl.zeros([BLOCK_M], tl.float32)
    acc = tl.zeros([BLOCK_M, HEAD_DIM], tl.float32)
    if CAUSAL:
        # Blocks wholly left of the diagonal need no mask; the rest need the causal one.
        hi = _min(N_KV, (start_m + 1) * BLOCK_M)
        full = _min((start_m * BLOCK_M) // BLOCK_N * BLOCK_N, (N_KV // BLOCK_N) * BLOCK_N)
    else:
        hi = N_KV
        full = (N_KV // BLOCK_N) * BLOCK_N
    for start_n in tl.range(0, full, BLOCK_N, warp_specialize=WARP_SPECIALIZE):
        acc, m_i, l_i = _attend_block(acc, m_i, l_i, q, q_scale, k_base, ks_base, v_base, stride_vn, stride_vd,
                                      start_n, offs_m, N_KV, BLOCK_N, HEAD_DIM, PV_FP8, P_SCALE, False, False)
    for start_n in range(full, hi, BLOCK_N):
        acc, m_i, l_i = _attend_block(acc, m_i, l_i, q, q_scale, k_base, ks_base, v_base, stride_vn, stride_vd,
                                      start_n, offs_m, N_KV, BLOCK_N, HEAD_DIM, PV_FP8, P_SCALE, True, CAUSAL)

    out = acc / l_i[:, None]
    if PV_FP8:
        v_scale = tl.load(V_scale + (b * H_KV + h // (H // H_KV)) * HEAD_DIM + d)
        out = out * (v_scale / P_SCALE)[None, :]
    o_ptr = Out + b.to(tl.int64) * stride_ob + h.to(tl.int64) * stride_oh
    tl.store(o_ptr + offs_m[:, None].to(tl.int64) * stride_on + d[None, :], out.to(Out.dtype.element_ty),
             mask=row_ok[:, None])
    if WRITE_LSE:
        qk_mean = tl.load(QK_mean + bh.to(tl.int64) * N_Q + offs_m, mask=row_ok, other=0.0)
        lse = (m_i + tl.math.log2(l_i)) / 1.4426950408889634 + qk_mean * lse_scale
        tl.store(Lse + bh.to(tl.int64) * N_Q + offs_m, lse, mask=row_ok)
