"""The elementwise and row-wise parts of a Transformer block: numba kernels and NumPy twins.

The matrix products of attention and of the Linear layers go to BLAS (NumPy's @).
What is left are passes over big arrays that NumPy does one ufunc at a time,
each allocating a temporary: the masked softmax of the attention scores and its
backward pass, and LayerNorm. Each numba kernel does its whole formula in one
sweep per row, and the softmax kernels never touch the masked half of the
scores; each NumPy twin (`*_numpy`, same signature) reads like the equations and
is the kernel's specification (tests/kernels/test_attention.py asserts they agree).

GELU's backward, dx = dy (0.5 (1 + t) + 0.5 x (1 - t^2) du/dx) with t = tanh(u) saved,
is one pass here. Where a formula needs exp or tanh (the softmax, GELU's forward),
the numba loops do the arithmetic around it and leave the transcendental function
to one NumPy call over the whole array in between: NumPy's vectorised exp and tanh
are several times faster than the scalar libm calls a numba loop makes. The sums
over a row are compiled with fastmath "reassoc" (SIMD partial sums: the same
value up to rounding). The token embedding's backward, a scatter-add of rows, is
a loop here instead of NumPy's slower np.add.at. The kernels are single-threaded:
numba's thread pool and OpenBLAS's, both spinning on 2 cores, slowed the whole
step down.

Causal softmax, rows i of S (N, Tq, Tk); query i may see keys j <= i + offset
(offset = Tk - Tq: 0 in training, > 0 with a key/value cache):

    P_ij = exp(S_ij - m_i) / sum_{l <= i + offset} exp(S_il - m_i),   m_i = max_{l <= i + offset} S_il
    P_ij = 0  for j > i + offset                                       (the -inf of the mask)

    T = 4, offset = 0:   1 0 0 0      the numba kernel never reads the zeros:
                         1 1 0 0      it loops over j <= i + offset only
                         1 1 1 0
                         1 1 1 1

Its backward (derivation in fused.causal_attention): dS_ij = P_ij (dP_ij - sum_l P_il dP_il).

LayerNorm over the last axis of x (N, C): xhat = (x - mu) r, r = 1 / sqrt(var + eps),
y = xhat gamma + beta; backward dx = r (g - mean(g) - xhat mean(g xhat)), g = dy gamma,
with xhat recomputed from x, mu and r (the forward keeps no (N, C) array of its own).

`implementation(name)` returns the numba kernel or, with TINYAR_KERNELS=numpy, its twin.
"""
from __future__ import annotations

import math

import numba
import numpy as np

from tinyar.kernels import use_numba

GELU_C = math.sqrt(2.0 / math.pi)
GELU_A = 0.044715


# ------------------------------------------------------------- causal softmax
def causal_softmax_numpy(S, offset):
    """Overwrite S (N, Tq, Tk) with its causal softmax P (zeros above the diagonal); returns S."""
    Tq, Tk = S.shape[-2], S.shape[-1]
    future = np.arange(Tk)[None, :] > np.arange(Tq)[:, None] + offset     # (Tq, Tk) True where masked
    S[..., future] = -np.inf
    S -= S.max(axis=-1, keepdims=True)                                    # m_i: key 0 is always seen
    np.exp(S, out=S)                                                      # exp(-inf) = 0
    S /= S.sum(axis=-1, keepdims=True)
    return S


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


@numba.njit(cache=True, fastmath={"reassoc"})                            # reassoc: a SIMD sum
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


def causal_softmax_numba(S, offset):
    """The kernel of causal_softmax_numpy, in three sweeps: numba shifts each row by
    its max (and puts -inf on the mask), NumPy's SIMD exp exponentiates the whole
    array in place (several times faster than the scalar exp a numba loop calls),
    numba divides each row by its sum."""
    _causal_shift_numba(S, offset)
    np.exp(S, out=S)                                                      # exp(S_ij - m_i); masked -> 0
    return _normalize_rows_numba(S, offset)


def causal_softmax_backward_numpy(P, dP):
    """Overwrite dP (N, Tq, Tk) with dS = P (dP - sum_l P_il dP_il); returns it."""
    dP -= (dP * P).sum(axis=-1, keepdims=True)
    dP *= P                                                               # zero where P = 0 (masked)
    return dP


@numba.njit(cache=True, fastmath={"reassoc"})
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


# ------------------------------------------------------------------ LayerNorm
def layer_norm_forward_numpy(x, gamma, beta, eps):
    """x (N, C) -> y = xhat gamma + beta (N, C), mu (N, 1), r = 1 / sqrt(var + eps) (N, 1).
    The backward recomputes xhat = (x - mu) r from x: one (N, C) array fewer to keep."""
    mu = x.mean(axis=-1, keepdims=True)
    xc = x - mu                                                           # x - mu
    r = 1.0 / np.sqrt((xc * xc).mean(axis=-1, keepdims=True) + eps)
    return xc * r * gamma + beta, mu, r


@numba.njit(cache=True, fastmath={"reassoc"})
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


def layer_norm_backward_numpy(dy, x, mu, r, gamma):
    """-> dx (N, C), dgamma (C,), dbeta (C,)."""
    xhat = (x - mu) * r
    g = dy * gamma                                                        # dL/dxhat
    dx = g - g.mean(axis=-1, keepdims=True)
    dx -= xhat * (g * xhat).mean(axis=-1, keepdims=True)
    dx *= r
    return dx, (dy * xhat).sum(axis=0), dy.sum(axis=0)


@numba.njit(cache=True, fastmath={"reassoc"})
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


# -------------------------------------------------------------- GELU forward
def gelu_forward_numpy(x):
    """x (any shape) -> y = 0.5 x (1 + t) and t = tanh(u), u = sqrt(2/pi) (x + 0.044715 x^3)
    (t is kept for the backward)."""
    t = np.tanh(GELU_C * (x + GELU_A * x * x * x))                        # t = tanh(u) (x ** 3: 60x slower)
    return 0.5 * x * (1.0 + t), t                                         # y, t


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
    """The kernel of gelu_forward_numpy in three sweeps instead of eight: numba computes u,
    NumPy's SIMD tanh turns it into t in place (a numba loop would call a scalar tanh,
    several times slower), numba computes y."""
    xf = np.ascontiguousarray(x).reshape(-1)                             # flat (0-d inputs too)
    t = _gelu_u_numba(xf, np.empty_like(xf))                              # u
    np.tanh(t, out=t)                                                     # t = tanh(u), in place
    y = _gelu_y_numba(xf, t, np.empty_like(xf))
    return y.reshape(np.shape(x)), t.reshape(np.shape(x))


# ------------------------------------------------------------- GELU backward
def gelu_backward_numpy(x, t, dy):
    """dx = dy (0.5 (1 + t) + 0.5 x (1 - t^2) sqrt(2/pi) (1 + 3 * 0.044715 x^2)), t = tanh(u) saved
    by the forward."""
    du = GELU_C * (1.0 + 3.0 * GELU_A * x * x)                           # du/dx
    return dy * (0.5 * (1.0 + t) + 0.5 * x * (1.0 - t * t) * du)


@numba.njit(cache=True)
def gelu_backward_numba(x, t, dy):
    xf, tf, dyf = x.reshape(-1), t.reshape(-1), dy.reshape(-1)
    dx = np.empty_like(xf)
    for k in range(xf.size):                                              # one pass instead of ~10
        v, tk = xf[k], tf[k]
        du = GELU_C * (1.0 + 3.0 * GELU_A * v * v)
        dx[k] = dyf[k] * (0.5 * (1.0 + tk) + 0.5 * v * (1.0 - tk * tk) * du)
    return dx.reshape(x.shape)


_KERNELS = {
    "causal_softmax": (causal_softmax_numba, causal_softmax_numpy),
    "causal_softmax_backward": (causal_softmax_backward_numba, causal_softmax_backward_numpy),
    "layer_norm_forward": (layer_norm_forward_numba, layer_norm_forward_numpy),
    "layer_norm_backward": (layer_norm_backward_numba, layer_norm_backward_numpy),
    "gelu_forward": (gelu_forward_numba, gelu_forward_numpy),
    "gelu_backward": (gelu_backward_numba, gelu_backward_numpy),
}


def implementation(name):
    """The numba kernel called `name`, or its NumPy twin when TINYAR_KERNELS=numpy."""
    numba_fn, numpy_fn = _KERNELS[name]
    return numba_fn if use_numba() else numpy_fn
