"""Causal attention, LayerNorm and GELU: the parts of a Transformer block besides its Linear layers.

Each function comes as a forward and its backward pass, on plain arrays; the fused ops
fused.causal_attention, fused.layer_norm and fused.gelu wrap them as graph nodes. The
causal softmax and its backward are the attention twin's building blocks (and give the
attention maps of models.transformer).

Causal softmax. Scores S (N, Tq, Tk), one row per query. Query i sits at position
i + offset (offset = Tk - Tq: 0 in training, > 0 when the earlier keys come from a
key/value cache) and may see the keys j <= i + offset only:

    m_i  = max_{l <= i + offset} S_il                                    (exp never overflows)
    P_ij = exp(S_ij - m_i) / sum_{l <= i + offset} exp(S_il - m_i)       for j <= i + offset
    P_ij = 0                                                             for j >  i + offset

The zeros are the softmax of S_ij = -inf. For T = 4, offset = 0 (1 = may attend):

    query i \\ key j   0 1 2 3
          0           1 0 0 0
          1           1 1 0 0
          2           1 1 1 0
          3           1 1 1 1

Its backward, one row at a time. Softmax's Jacobian is dP_l/dS_j = P_l ([l = j] - P_j)
(diag(p) - p p^T), so with dP = dL/dP given:

    dS_ij = sum_l dP_il dP_il/dS_ij = sum_l dP_il P_il ([l = j] - P_ij)
          = P_ij (dP_ij - sum_l P_il dP_il)

A masked entry has P_ij = 0, hence dS_ij = 0: no gradient crosses the mask.

Causal attention, y = P v with S = q k^T / sqrt(d) and P its causal softmax (derivation of
the rest of its backward in fused.causal_attention). The forward keeps, besides y, only
each row's log-normalizer

    L_i = m_i + log sum_{l <= i + offset} exp(S_il - m_i) = log sum_{l <= i + offset} exp(S_il),

so that P_ij = exp(S_ij - L_i), and the backward recomputes S and then P from L: nothing of
size (Tq, Tk) outlives a call. That lets the compiled version work through the queries a
block of rows at a time, over the keys those rows may see, holding the scores of a few
blocks of rows at a time instead of all of them.

LayerNorm over the last axis of x (N, C), one row at a time:

    mu = mean(x),   r = 1 / sqrt(mean((x - mu)^2) + eps),   xhat = (x - mu) r,   y = xhat gamma + beta

Its backward, with g = dy gamma = dL/dxhat, d mu/dx_i = 1/C and d r/dx_i = -r^3 (x_i - mu) / C:

    dxhat_j/dx_i = r ([i = j] - 1/C) - xhat_j r xhat_i / C
    dx_i   = sum_j g_j dxhat_j/dx_i = r (g_i - mean(g) - xhat_i mean(g xhat))
    dgamma = sum over rows of dy xhat,   dbeta = sum over rows of dy

The forward keeps mu and r (N, 1); the backward recomputes xhat from x.

GELU in its tanh form, elementwise, with t saved by the forward:

    u = sqrt(2/pi) (x + 0.044715 x^3),   t = tanh(u),   y = 0.5 x (1 + t)
    dy/dx = 0.5 (1 + t) + 0.5 x (1 - t^2) du/dx,   du/dx = sqrt(2/pi) (1 + 3 * 0.044715 x^2)

`choose(name)` returns the (forward, backward) pair a fused op calls.
"""
from __future__ import annotations

import math

import numpy as np

# numba, or where it cannot be imported a stand-in that leaves the functions uncompiled (__init__.py)
from tinyar.kernels import numba, pick
from tinyar.kernels.approx import exp_neg_into, tanh_rational
from tinyar.kernels.runtime import blas_gemm, gemm_block, numba_threads_at_most, single_thread_numba_blas

GELU_C = math.sqrt(2.0 / math.pi)                                         # u = GELU_C (x + GELU_A x^3)
GELU_A = 0.044715


# ------------------------------------------------------------- causal softmax
def causal_mask(Tq, Tk, offset):
    """(Tq, Tk) booleans, True where key j lies in the future of query i (j > i + offset): the -inf entries."""
    return np.arange(Tk)[None, :] > np.arange(Tq)[:, None] + offset


def causal_softmax_forward_numpy(S, offset):
    """Overwrite S (N, Tq, Tk) with its causal softmax P (zeros above the diagonal); returns S."""
    S[..., causal_mask(S.shape[-2], S.shape[-1], offset)] = -np.inf
    S -= S.max(axis=-1, keepdims=True)                                    # S_ij - m_i: key 0 is always seen
    np.exp(S, out=S)                                                      # exp(-inf) = 0
    S /= S.sum(axis=-1, keepdims=True)
    return S


def causal_softmax_backward_numpy(P, dP):
    """Overwrite dP (N, Tq, Tk) with dS = P (dP - sum_l P_il dP_il); returns it."""
    dP -= (dP * P).sum(axis=-1, keepdims=True)
    dP *= P                                                               # zero where P = 0 (masked)
    return dP


def transposed(a):
    """a (N, T, d) -> a^T (N, d, T), copied to C order so that NumPy's batched matmul hands it
    to BLAS (a swapaxes view as the right operand takes a loop without BLAS)."""
    return np.ascontiguousarray(np.swapaxes(a, -1, -2))


def causal_scores(qs, k):
    """S = qs k^T (N, Tq, Tk), -inf where key j lies in the future of query i."""
    S = qs @ transposed(k)
    S[..., causal_mask(S.shape[-2], S.shape[-1], S.shape[-1] - S.shape[-2])] = -np.inf
    return S


def causal_attention_forward_numpy(qs, k, v):
    """qs (N, Tq, d) = q / sqrt(d), k and v (N, Tk, d) -> y = P v (N, Tq, d) and L (N, Tq),
    L_i = log sum_{l <= i + offset} exp(S_il) with S = qs k^T and offset = Tk - Tq."""
    S = causal_scores(qs, k)                                              # (N, Tq, Tk), -inf on the mask
    m = S.max(axis=-1, keepdims=True)                                     # key 0 is always seen: finite
    E = np.exp(S - m)                                                     # exp(S_ij - m_i); masked -> 0
    total = E.sum(axis=-1, keepdims=True)
    P = E / total
    return P @ v, (m + np.log(total))[..., 0]                             # y = P v, L


def causal_attention_backward_numpy(qs, k, v, L, dy):
    """(dqs, dk, dv) for y = P v, with P recomputed as exp(S - L): dv = P^T dy, dP = dy v^T,
    dS = P (dP - sum_l P_il dP_il), dqs = dS k, dk = dS^T qs (dq = dqs / sqrt(d))."""
    S = causal_scores(qs, k)
    P = np.exp(S - L[..., None])                                          # P_ij = exp(S_ij - L_i); masked -> 0
    dv = np.swapaxes(P, -1, -2) @ dy
    dS = causal_softmax_backward_numpy(P, dy @ transposed(v))             # from dP = dy v^T
    return dS @ k, np.swapaxes(dS, -1, -2) @ qs, dv


# ------------------------------------------------------------------ LayerNorm
def layer_norm_forward_numpy(x, gamma, beta, eps):
    """x (N, C) -> y = xhat gamma + beta (N, C), mu (N, 1), r = 1 / sqrt(var + eps) (N, 1)."""
    mu = x.mean(axis=-1, keepdims=True)
    xc = x - mu                                                           # x - mu
    r = 1.0 / np.sqrt((xc * xc).mean(axis=-1, keepdims=True) + eps)
    return xc * r * gamma + beta, mu, r


def layer_norm_backward_numpy(dy, x, mu, r, gamma):
    """-> dx (N, C), dgamma (C,), dbeta (C,)."""
    xhat = (x - mu) * r
    g = dy * gamma                                                        # dL/dxhat
    dx = g - g.mean(axis=-1, keepdims=True)
    dx -= xhat * (g * xhat).mean(axis=-1, keepdims=True)
    dx *= r                                                               # r (g - mean(g) - xhat mean(g xhat))
    return dx, (dy * xhat).sum(axis=0), dy.sum(axis=0)


# ----------------------------------------------------------------------- GELU
def gelu_forward_numpy(x):
    """x (any shape) -> y = 0.5 x (1 + t) and t = tanh(u), u = sqrt(2/pi) (x + 0.044715 x^3)
    (t is kept for the backward)."""
    t = np.tanh(GELU_C * (x + GELU_A * x * x * x))                        # t = tanh(u)
    return 0.5 * x * (1.0 + t), t                                         # y, t


def gelu_backward_numpy(x, t, dy):
    """dx = dy (0.5 (1 + t) + 0.5 x (1 - t^2) sqrt(2/pi) (1 + 3 * 0.044715 x^2)), t = tanh(u) saved
    by the forward."""
    du = GELU_C * (1.0 + 3.0 * GELU_A * x * x)                           # du/dx
    return dy * (0.5 * (1.0 + t) + 0.5 * x * (1.0 - t * t) * du)


# ---- compiled fast path: safe to skip on a first reading ----
# One sweep per row does a whole formula, with no (N, C) temporaries, on numba's threads (rows
# or elements are independent; LayerNorm's dgamma and dbeta are summed per lane of rows, then
# in lane order, so results do not depend on the thread count). In float32 GELU's tanh is
# approx.tanh_rational and the softmax's exp approx.exp_neg_into, which the compiler
# vectorises (numba's own tanh and exp are scalar library calls).
# Row sums may be reassociated (SIMD partial sums); no other fastmath flag, so no FMA contraction.
_SUMS = {"reassoc"}


# Causal attention in blocks of query rows: for each (batch, head) n and each block of rows
# i0..i0+m-1, products on the keys 0..kv-1 those rows may see (kv = i0 + m + offset), BLAS
# gemm calls from the compiled code (kernels/runtime.py), two in the forward:
#     s = qs_block k^T (m, kv),   rows of s -> P (exp, sum, divide; zeros on the mask),   y_block = s v
# and five in the backward, with P recomputed from L (s = qs_block k^T again),
#     g = dy_block v^T,   g -> dS = P (g - sum_l P_il g_il),   dqs_block = dS k,
#     dk += dS^T qs_block,   dv += P^T dy_block.
# The (batch, head) pairs are dealt round-robin to N_LANES lanes, which numba's threads run side
# by side (one thread below PARALLEL_SCORES scores), each with its own block of scores: results
# do not depend on the thread count.
# The blocks skip the masked keys past kv (up to half of S: 46% at T = 784, a quarter at
# T = 128) and keep the scores in cache: each lane holds one block of scores (the backward
# two, s and g), N_LANES x 64 x Tk floats each. The row sums accumulate in float64 (they start
# from the literal 0.0), also for float32 arrays.
N_LANES = 4
BLOCK_ROWS = 64                 # query rows per block
PARALLEL_SCORES = 2 ** 20       # fewer scores N Tq Tk (the cached sampler's one-row steps): one thread


@numba.njit(cache=True, error_model="numpy", fastmath=_SUMS)
def _softmax_rows(s, t, i0, m, kv, offset, L, n):
    """Rows r < m of s (scores of queries i0 + r over keys 0..kv-1) -> P, and L[n, i0 + r]."""
    for r in range(m):
        row = s[r]
        seen = min(i0 + r + offset + 1, kv)                               # keys 0..seen-1 are visible
        mx = row[0]
        for j in range(1, seen):
            mx = max(mx, row[j])
        for j in range(seen):
            t[j] = mx - row[j]                                            # >= 0
        exp_neg_into(t, row, seen)                                        # exp(S_ij - m_i)
        total = 0.0
        for j in range(seen):
            total += row[j]
        inv = 1.0 / total
        for j in range(seen):
            row[j] *= inv
        row[seen:kv] = 0.0                                                # the mask
        L[n, i0 + r] = mx + math.log(total)


@numba.njit(cache=True, error_model="numpy", fastmath=_SUMS)
def _recompute_rows(s, t, i0, m, kv, offset, L, n):
    """Rows r < m of s (scores) -> P_ij = exp(S_ij - L_i), zeros on the mask."""
    for r in range(m):
        row = s[r]
        seen = min(i0 + r + offset + 1, kv)
        l_i = L[n, i0 + r]
        for j in range(seen):
            t[j] = max(l_i - row[j], 0.0)                                 # L_i >= S_ij (up to rounding)
        exp_neg_into(t, row, seen)
        row[seen:kv] = 0.0


@numba.njit(cache=True, parallel=True)
def _attention_forward(gemm, qs, k, v, y, L, S, T):
    N, Tq, d = qs.shape
    Tk = k.shape[1]
    offset = Tk - Tq
    n_lanes, block = S.shape[0], S.shape[1]
    for lane in numba.prange(n_lanes):
        s, t = S[lane], T[lane]                                           # (block, Tk), (Tk,)
        for n in range(lane, N, n_lanes):
            for i0 in range(0, Tq, block):
                m = min(block, Tq - i0)
                kv = min(i0 + m + offset, Tk)
                gemm_block(gemm, False, True, m, kv, d, qs, (n * Tq + i0) * d, d, k, n * Tk * d, d, 0.0, s, 0, Tk)
                _softmax_rows(s, t, i0, m, kv, offset, L, n)
                gemm_block(gemm, False, False, m, d, kv, s, 0, Tk, v, n * Tk * d, d, 0.0, y, (n * Tq + i0) * d, d)
    return y, L


@numba.njit(cache=True, parallel=True, fastmath=_SUMS)
def _attention_backward(gemm, qs, k, v, L, dy, dqs, dk, dv, S, G, T):
    N, Tq, d = qs.shape
    Tk = k.shape[1]
    offset = Tk - Tq
    n_lanes, block = S.shape[0], S.shape[1]
    for lane in numba.prange(n_lanes):
        s, g, t = S[lane], G[lane], T[lane]
        for n in range(lane, N, n_lanes):
            dk[n] = 0.0
            dv[n] = 0.0
            for i0 in range(0, Tq, block):
                m = min(block, Tq - i0)
                kv = min(i0 + m + offset, Tk)
                q0, k0 = (n * Tq + i0) * d, n * Tk * d                    # where the block's rows start
                gemm_block(gemm, False, True, m, kv, d, qs, q0, d, k, k0, d, 0.0, s, 0, Tk)        # S
                _recompute_rows(s, t, i0, m, kv, offset, L, n)                                   # P
                gemm_block(gemm, False, True, m, kv, d, dy, q0, d, v, k0, d, 0.0, g, 0, Tk)       # dP = dy v^T
                for r in range(m):                                        # dS = P (dP - sum_l P_il dP_il)
                    p, gr = s[r], g[r]
                    dot = 0.0
                    for j in range(kv):
                        dot += p[j] * gr[j]
                    for j in range(kv):
                        gr[j] = p[j] * (gr[j] - dot)                      # 0 where P is (the mask)
                gemm_block(gemm, False, False, m, d, kv, g, 0, Tk, k, k0, d, 0.0, dqs, q0, d)     # dqs = dS k
                gemm_block(gemm, True, False, kv, d, m, g, 0, Tk, qs, q0, d, 1.0, dk, k0, d)      # dk += dS^T qs
                gemm_block(gemm, True, False, kv, d, m, s, 0, Tk, dy, q0, d, 1.0, dv, k0, d)      # dv += P^T dy
    return dqs, dk, dv


def _attention_scratch(Tq, Tk, dtype, rows=2):
    """Each lane's room: `rows` blocks of scores (n_lanes, block, Tk) and a row (n_lanes, Tk)."""
    block = min(BLOCK_ROWS, Tq)
    return [np.empty((N_LANES, block, Tk), dtype) for _ in range(rows)] + [np.empty((N_LANES, Tk), dtype)]


def _check_shapes(qs, k, v, L=None, dy=None):
    """The shapes the compiled kernels index by hand: qs (N, Tq, d), k and v (N, Tk, d), Tq <= Tk,
    L (N, Tq) and dy like qs."""
    N, Tq, d = qs.shape
    if (k.shape != v.shape or k.shape[0] != N or k.shape[2] != d or Tq > k.shape[1]
            or (L is not None and L.shape != (N, Tq)) or (dy is not None and dy.shape != qs.shape)):
        raise ValueError(f"causal attention kernels: expected qs (N, Tq, d), k and v (N, Tk, d) with Tq <= Tk, "
                         f"L (N, Tq) and dy like qs; got qs {qs.shape}, k {k.shape}, v {v.shape}"
                         + ("" if L is None else f", L {L.shape}") + ("" if dy is None else f", dy {dy.shape}"))


def causal_attention_forward_numba(qs, k, v):
    """causal_attention_forward_numpy in blocks of query rows (no (Tq, Tk) array); other dtypes
    than float32 and float64, or mixed ones, go to the twin."""
    _check_shapes(qs, k, v)
    if qs.dtype not in (np.float32, np.float64) or not (k.dtype == v.dtype == qs.dtype):
        return causal_attention_forward_numpy(qs, k, v)
    qs, k, v = (np.ascontiguousarray(a) for a in (qs, k, v))
    y, L = np.empty_like(qs), np.empty(qs.shape[:2], qs.dtype)
    S, T = _attention_scratch(qs.shape[1], k.shape[1], qs.dtype, rows=1)
    threads = numba_threads_at_most(1 if qs.shape[0] * qs.shape[1] * k.shape[1] < PARALLEL_SCORES else N_LANES)
    with threads, single_thread_numba_blas():         # numba's threads share the cores, BLAS one each
        return _attention_forward(blas_gemm(qs.dtype), qs, k, v, y, L, S, T)


def causal_attention_backward_numba(qs, k, v, L, dy):
    """causal_attention_backward_numpy in blocks of query rows, P recomputed block by block."""
    _check_shapes(qs, k, v, L, dy)
    if qs.dtype not in (np.float32, np.float64) or not (k.dtype == v.dtype == dy.dtype == qs.dtype):
        return causal_attention_backward_numpy(qs, k, v, L, dy)
    qs, k, v, L, dy = (np.ascontiguousarray(a) for a in (qs, k, v, L, dy))
    dqs, dk, dv = np.empty_like(qs), np.empty_like(k), np.empty_like(v)
    S, G, T = _attention_scratch(qs.shape[1], k.shape[1], qs.dtype)
    threads = numba_threads_at_most(1 if qs.shape[0] * qs.shape[1] * k.shape[1] < PARALLEL_SCORES else N_LANES)
    with threads, single_thread_numba_blas():
        return _attention_backward(blas_gemm(qs.dtype), qs, k, v, L, dy, dqs, dk, dv, S, G, T)


# LayerNorm and GELU: rows (or elements) on numba's threads, one thread below PARALLEL_ELEMENTS
# elements (the cached sampler's one-token steps, where starting threads costs more than the work).
PARALLEL_ELEMENTS = 2 ** 15


def _threads_for(x):
    """A block whose parallel loops run on one thread if x is small, else on up to N_LANES."""
    return numba_threads_at_most(1 if x.size < PARALLEL_ELEMENTS else N_LANES)


@numba.njit(cache=True, parallel=True, fastmath=_SUMS)
def _layer_norm_forward(x, gamma, beta, eps):
    N, C = x.shape
    y = np.empty_like(x)
    mu = np.empty((N, 1), dtype=x.dtype)
    r = np.empty((N, 1), dtype=x.dtype)
    for n in numba.prange(N):                                             # rows are independent
        m = 0.0
        for c in range(C):
            m += x[n, c]
        m /= C
        var = 0.0
        for c in range(C):
            d = x[n, c] - m
            var += d * d
        rn = 1.0 / math.sqrt(var / C + eps)                               # r = 1 / sqrt(var + eps)
        mu[n, 0] = m
        r[n, 0] = rn
        for c in range(C):
            y[n, c] = (x[n, c] - m) * rn * gamma[c] + beta[c]             # xhat gamma + beta
    return y, mu, r


@numba.njit(cache=True, parallel=True, fastmath=_SUMS)
def _layer_norm_backward(dy, x, mu, r, gamma):
    N, C = dy.shape
    dx = np.empty_like(dy)
    part_gamma = np.zeros((N_LANES, C), dtype=dy.dtype)                  # each lane's sums over its rows
    part_beta = np.zeros((N_LANES, C), dtype=dy.dtype)
    rows = (N + N_LANES - 1) // N_LANES
    for lane in numba.prange(N_LANES):                                    # lanes: N_LANES contiguous runs of rows
        for n in range(lane * rows, min(N, (lane + 1) * rows)):
            m, rn = mu[n, 0], r[n, 0]
            g_mean = 0.0
            gx_mean = 0.0
            for c in range(C):
                g = dy[n, c] * gamma[c]
                g_mean += g
                gx_mean += g * (x[n, c] - m) * rn                         # g xhat
            g_mean /= C
            gx_mean /= C
            for c in range(C):
                h = (x[n, c] - m) * rn                                    # xhat, recomputed
                dx[n, c] = rn * (dy[n, c] * gamma[c] - g_mean - h * gx_mean)   # r (g - mean(g) - xhat mean(g xhat))
                part_gamma[lane, c] += dy[n, c] * h                       # dgamma = sum_n dy xhat
                part_beta[lane, c] += dy[n, c]                            # dbeta = sum_n dy
    dgamma = part_gamma[0].copy()
    dbeta = part_beta[0].copy()
    for lane in range(1, N_LANES):                                        # in lane order: thread-count independent
        dgamma += part_gamma[lane]
        dbeta += part_beta[lane]
    return dx, dgamma, dbeta


@numba.njit(cache=True, parallel=True, error_model="numpy")
def _gelu_forward(xf):
    y, t = np.empty_like(xf), np.empty_like(xf)
    single = xf.itemsize == 4
    for k in numba.prange(xf.size):
        v = xf[k]
        u = GELU_C * v * (1.0 + GELU_A * v * v)                           # u = sqrt(2/pi) (x + 0.044715 x^3)
        if single:                                                        # tanh(u) = +-1 in float32 past |u| = 9
            tk = 1.0 if u >= 9.0 else (-1.0 if u <= -9.0 else tanh_rational(u))
        else:
            tk = math.tanh(u)
        t[k] = tk
        y[k] = 0.5 * v * (1.0 + tk)                                       # y = 0.5 x (1 + t)
    return y, t


@numba.njit(cache=True, parallel=True)
def _gelu_backward(x, t, dy):
    xf, tf, dyf = x.reshape(-1), t.reshape(-1), dy.reshape(-1)
    dx = np.empty_like(xf)
    for k in numba.prange(xf.size):                                       # one pass over the arrays
        v, tk = xf[k], tf[k]
        du = GELU_C * (1.0 + 3.0 * GELU_A * v * v)
        dx[k] = dyf[k] * (0.5 * (1.0 + tk) + 0.5 * v * (1.0 - tk * tk) * du)
    return dx.reshape(x.shape)


def layer_norm_forward_numba(x, gamma, beta, eps):
    """layer_norm_forward_numpy, rows on numba's threads."""
    with _threads_for(x):
        return _layer_norm_forward(x, gamma, beta, eps)


def layer_norm_backward_numba(dy, x, mu, r, gamma):
    """layer_norm_backward_numpy, rows dealt to N_LANES lanes; dgamma, dbeta summed per lane, then in lane order."""
    with _threads_for(x):
        return _layer_norm_backward(dy, x, mu, r, gamma)


def gelu_forward_numba(x):
    """gelu_forward_numpy in one sweep over the elements; tanh in float32 by approx.tanh_rational."""
    xf = np.ascontiguousarray(x).reshape(-1)                             # flat (0-d inputs too)
    with _threads_for(xf):
        y, t = _gelu_forward(xf)
    return y.reshape(np.shape(x)), t.reshape(np.shape(x))


def gelu_backward_numba(x, t, dy):
    """gelu_backward_numpy in one sweep over the elements."""
    with _threads_for(x):
        return _gelu_backward(x, t, dy)


# ------------------------------------------------------------------ the choice
# The compiled kernels are used for every shape (attention's for float32 and float64): no
# measured threshold below which the twins win. All of them run on numba's threads above
# PARALLEL_SCORES / PARALLEL_ELEMENTS, on one below. Figures: benchmarks/README.md, section "Transformer".
PAIRS = ("causal_attention", "layer_norm", "gelu")


def choose(name):
    """The (forward, backward) kernels of `name`, one of PAIRS: `<name>_forward_numba` and
    `<name>_backward_numba`, or the NumPy twins under TINYAR_KERNELS=numpy."""
    if name not in PAIRS:
        raise ValueError(f"kernels.attention.choose: expected one of {PAIRS}, got {name!r}")
    return pick(globals(), name + "_forward"), pick(globals(), name + "_backward")
