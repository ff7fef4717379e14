"""Causal softmax, LayerNorm and GELU: what a Transformer block computes between its matrix products.

Each function comes as a forward and its backward pass, on plain arrays; the fused ops
fused.causal_attention, fused.layer_norm and fused.gelu wrap them as graph nodes.

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

A masked entry has P_ij = 0, hence dS_ij = 0: no gradient crosses the mask. (The rest of
attention's backward, through q k^T / sqrt(d) and P v, is in fused.causal_attention.)

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
# One sweep per row does a whole formula, with no temporaries. exp and tanh stay NumPy calls
# over the whole array between two sweeps: in a numba loop they would be scalar library calls.
# Row sums may be reassociated (SIMD partial sums); no other fastmath flag, so no FMA contraction.
_SUMS = {"reassoc"}


@numba.njit(cache=True)
def _causal_shift_numba(S, offset):
    """S_ij <- S_ij - m_i where key j is visible, -inf where it is masked."""
    N, Tq, Tk = S.shape
    for n in range(N):
        for i in range(Tq):
            row = S[n, i]                                                 # a view: (Tk,)
            last = min(i + offset, Tk - 1)                                # keys 0..last are visible
            m = row[0]
            for j in range(1, last + 1):                                  # m_i = max_{j <= last} S_ij
                if row[j] > m:
                    m = row[j]
            for j in range(last + 1):
                row[j] -= m                                               # S_ij - m_i <= 0
            row[last + 1:] = -np.inf                                      # masked: exp(-inf) = 0
    return S


@numba.njit(cache=True, fastmath=_SUMS)
def _normalize_rows_numba(E, offset):
    """E_ij <- E_ij / sum_{l <= last} E_il (the masked E_ij are already 0)."""
    N, Tq, Tk = E.shape
    for n in range(N):
        for i in range(Tq):
            row = E[n, i]
            last = min(i + offset, Tk - 1)
            total = 0.0
            for j in range(last + 1):
                total += row[j]
            inv = 1.0 / total                                             # >= 1 term equals exp(0) = 1
            for j in range(last + 1):                                     # P_ij
                row[j] *= inv
    return E


def causal_softmax_forward_numba(S, offset):
    """causal_softmax_forward_numpy in three sweeps: numba shifts each row by its max (and puts
    -inf on the mask), NumPy exponentiates the whole array in place, numba divides each row by its sum."""
    _causal_shift_numba(S, offset)
    np.exp(S, out=S)                                                      # exp(S_ij - m_i); masked -> 0
    return _normalize_rows_numba(S, offset)


@numba.njit(cache=True, fastmath=_SUMS)
def causal_softmax_backward_numba(P, dP):
    N, Tq, Tk = P.shape
    offset = Tk - Tq
    for n in range(N):
        for i in range(Tq):
            p, g = P[n, i], dP[n, i]                                      # row views: (Tk,)
            last = min(i + offset, Tk - 1)
            dot = 0.0
            for j in range(last + 1):                                     # sum_l P_il dP_il
                dot += p[j] * g[j]
            for j in range(last + 1):                                     # dS_ij = P_ij (dP_ij - dot)
                g[j] = p[j] * (g[j] - dot)
            g[last + 1:] = 0.0
    return dP


@numba.njit(cache=True, fastmath=_SUMS)
def layer_norm_forward_numba(x, gamma, beta, eps):
    N, C = x.shape
    y = np.empty_like(x)
    mu = np.empty((N, 1), dtype=x.dtype)
    r = np.empty((N, 1), dtype=x.dtype)
    for n in range(N):
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


@numba.njit(cache=True, fastmath=_SUMS)
def layer_norm_backward_numba(dy, x, mu, r, gamma):
    N, C = dy.shape
    dx = np.empty_like(dy)
    dgamma = np.zeros(C, dtype=dy.dtype)
    dbeta = np.zeros(C, dtype=dy.dtype)
    for n in range(N):
        m, rn = mu[n, 0], r[n, 0]
        g_mean = 0.0
        gx_mean = 0.0
        for c in range(C):
            g = dy[n, c] * gamma[c]
            g_mean += g
            gx_mean += g * (x[n, c] - m) * rn                             # g xhat
        g_mean /= C
        gx_mean /= C
        for c in range(C):
            h = (x[n, c] - m) * rn                                        # xhat, recomputed
            dx[n, c] = rn * (dy[n, c] * gamma[c] - g_mean - h * gx_mean)  # r (g - mean(g) - xhat mean(g xhat))
            dgamma[c] += dy[n, c] * h                                     # dgamma = sum_n dy xhat
            dbeta[c] += dy[n, c]                                          # dbeta = sum_n dy
    return dx, dgamma, dbeta


@numba.njit(cache=True)
def _gelu_u_numba(x, u):
    for k in range(x.size):                                               # u = sqrt(2/pi) x (1 + 0.044715 x^2)
        v = x[k]
        u[k] = GELU_C * v * (1.0 + GELU_A * v * v)
    return u


@numba.njit(cache=True)
def _gelu_y_numba(x, t, y):
    for k in range(x.size):                                               # y = 0.5 x (1 + t)
        y[k] = 0.5 * x[k] * (1.0 + t[k])
    return y


def gelu_forward_numba(x):
    """gelu_forward_numpy in three sweeps: numba computes u, NumPy's tanh turns it into t in
    place, numba computes y."""
    xf = np.ascontiguousarray(x).reshape(-1)                             # flat (0-d inputs too)
    t = _gelu_u_numba(xf, np.empty_like(xf))                              # u
    np.tanh(t, out=t)                                                     # t = tanh(u), in place
    y = _gelu_y_numba(xf, t, np.empty_like(xf))
    return y.reshape(np.shape(x)), t.reshape(np.shape(x))


@numba.njit(cache=True)
def gelu_backward_numba(x, t, dy):
    xf, tf, dyf = x.reshape(-1), t.reshape(-1), dy.reshape(-1)
    dx = np.empty_like(xf)
    for k in range(xf.size):                                              # one pass over the arrays
        v, tk = xf[k], tf[k]
        du = GELU_C * (1.0 + 3.0 * GELU_A * v * v)
        dx[k] = dyf[k] * (0.5 * (1.0 + tk) + 0.5 * v * (1.0 - tk * tk) * du)
    return dx.reshape(x.shape)


# ------------------------------------------------------------------ the choice
# The compiled kernels are used for every shape and dtype: no measured threshold below which
# the twins win. They are single-threaded. Figures: benchmarks/README.md, section "Transformer".
PAIRS = ("causal_softmax", "layer_norm", "gelu")


def choose(name):
    """The (forward, backward) kernels of `name`, one of PAIRS: `<name>_forward_numba` and
    `<name>_backward_numba`, or the NumPy twins under TINYAR_KERNELS=numpy."""
    if name not in PAIRS:
        raise ValueError(f"kernels.attention.choose: expected one of {PAIRS}, got {name!r}")
    return pick(globals(), name + "_forward"), pick(globals(), name + "_backward")
