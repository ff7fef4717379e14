"""The elementwise and row-wise parts of a Transformer block: numba kernels and NumPy twins.

The matrix products of attention and of the Linear layers go to BLAS (NumPy's @).
What is left are passes over big arrays that NumPy does one ufunc at a time,
each allocating a temporary: the masked softmax of the attention scores and its
backward pass, and LayerNorm. Each numba kernel does its whole formula in one
sweep per row, and the softmax kernels never touch the masked half of the
scores; each NumPy twin (`*_numpy`, same signature) reads like the equations and
is the kernel's specification (tests/kernels/test_attention.py asserts they agree).

GELU's backward, dx = dy (0.5 (1 + t) + 0.5 x (1 - t^2) du/dx) with t = tanh(u) saved,
is one pass here; its forward stays NumPy (ops.gelu), whose vectorised tanh is
several times faster than the scalar tanh a numba loop calls. The kernels are
single-threaded: numba's thread pool and OpenBLAS's, both spinning on 2 cores,
slowed the whole step down.

Causal softmax, rows i of S (N, Tq, Tk); query i may see keys j <= i + offset
(offset = Tk - Tq: 0 in training, > 0 with a key/value cache):

    P_ij = exp(S_ij - m_i) / sum_{l <= i + offset} exp(S_il - m_i),   m_i = max_{l <= i + offset} S_il
    P_ij = 0  for j > i + offset                                       (the -inf of the mask)

    T = 4, offset = 0:   1 0 0 0      the numba kernel never reads the zeros:
                         1 1 0 0      it loops over j <= i + offset only
                         1 1 1 0
                         1 1 1 1

Its backward (derivation in ops.causal_attention): dS_ij = P_ij (dP_ij - sum_l P_il dP_il).

LayerNorm over the last axis of x (N, C): xhat = (x - mu) r, r = 1 / sqrt(var + eps),
y = xhat gamma + beta; backward dx = r (g - mean(g) - xhat mean(g xhat)), g = dy gamma.

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
def causal_softmax_numba(S, offset):
    N, Tq, Tk = S.shape
    for row in range(N * Tq):
        n, i = row // Tq, row % Tq
        last = min(i + offset, Tk - 1)                                    # keys 0..last are visible
        m = S[n, i, 0]
        for j in range(1, last + 1):                                      # m_i = max_{j <= last} S_ij
            m = max(m, S[n, i, j])
        total = 0.0
        for j in range(last + 1):                                         # exp(S_ij - m_i)
            e = math.exp(S[n, i, j] - m)
            S[n, i, j] = e
            total += e
        inv = 1.0 / total
        for j in range(last + 1):                                         # P_ij
            S[n, i, j] *= inv
        for j in range(last + 1, Tk):                                     # masked: P_ij = 0
            S[n, i, j] = 0.0
    return S


def causal_softmax_backward_numpy(P, dP):
    """Overwrite dP (N, Tq, Tk) with dS = P (dP - sum_l P_il dP_il); returns it."""
    dP -= (dP * P).sum(axis=-1, keepdims=True)
    dP *= P                                                               # zero where P = 0 (masked)
    return dP


@numba.njit(cache=True)
def causal_softmax_backward_numba(P, dP):
    N, Tq, Tk = P.shape
    offset = Tk - Tq
    for row in range(N * Tq):
        n, i = row // Tq, row % Tq
        last = min(i + offset, Tk - 1)
        dot = 0.0
        for j in range(last + 1):                                         # sum_l P_il dP_il
            dot += P[n, i, j] * dP[n, i, j]
        for j in range(last + 1):                                         # dS_ij = P_ij (dP_ij - dot)
            dP[n, i, j] = P[n, i, j] * (dP[n, i, j] - dot)
        for j in range(last + 1, Tk):
            dP[n, i, j] = 0.0
    return dP


# ------------------------------------------------------------------ LayerNorm
def layer_norm_forward_numpy(x, gamma, beta, eps):
    """x (N, C) -> y = xhat gamma + beta (N, C), xhat (N, C), r = 1 / sqrt(var + eps) (N, 1)."""
    xhat = x - x.mean(axis=-1, keepdims=True)                             # x - mu
    r = 1.0 / np.sqrt((xhat * xhat).mean(axis=-1, keepdims=True) + eps)
    xhat *= r
    return xhat * gamma + beta, xhat, r


@numba.njit(cache=True)
def layer_norm_forward_numba(x, gamma, beta, eps):
    N, C = x.shape
    y = np.empty_like(x)
    xhat = np.empty_like(x)
    r = np.empty((N, 1), dtype=x.dtype)
    for n in range(N):
        mu = 0.0
        for c in range(C):
            mu += x[n, c]
        mu /= C
        var = 0.0
        for c in range(C):
            d = x[n, c] - mu
            var += d * d
        rn = 1.0 / math.sqrt(var / C + eps)                               # r = 1 / sqrt(var + eps)
        r[n, 0] = rn
        for c in range(C):
            h = (x[n, c] - mu) * rn                                       # xhat
            xhat[n, c] = h
            y[n, c] = h * gamma[c] + beta[c]
    return y, xhat, r


def layer_norm_backward_numpy(dy, xhat, r, gamma):
    """-> dx (N, C), dgamma (C,), dbeta (C,)."""
    g = dy * gamma                                                        # dL/dxhat
    dx = g - g.mean(axis=-1, keepdims=True)
    dx -= xhat * (g * xhat).mean(axis=-1, keepdims=True)
    dx *= r
    return dx, (dy * xhat).sum(axis=0), dy.sum(axis=0)


@numba.njit(cache=True)
def layer_norm_backward_numba(dy, xhat, r, gamma):
    N, C = dy.shape
    dx = np.empty_like(dy)
    for n in range(N):
        g_mean = 0.0
        gx_mean = 0.0
        for c in range(C):
            g = dy[n, c] * gamma[c]
            g_mean += g
            gx_mean += g * xhat[n, c]
        g_mean /= C
        gx_mean /= C
        for c in range(C):                                                # r (g - mean(g) - xhat mean(g xhat))
            dx[n, c] = r[n, 0] * (dy[n, c] * gamma[c] - g_mean - xhat[n, c] * gx_mean)
    dgamma = np.zeros(C, dtype=dy.dtype)
    dbeta = np.zeros(C, dtype=dy.dtype)
    for n in range(N):
        for c in range(C):
            dgamma[c] += dy[n, c] * xhat[n, c]                            # dgamma = sum_n dy xhat
            dbeta[c] += dy[n, c]                                          # dbeta = sum_n dy
    return dx, dgamma, dbeta


# ------------------------------------------------------------- GELU backward
def gelu_backward_numpy(x, t, dy):
    """dx = dy (0.5 (1 + t) + 0.5 x (1 - t^2) sqrt(2/pi) (1 + 3 * 0.044715 x^2)), t = tanh(u) saved
    by the forward (GELU's forward is NumPy in ops.gelu: its vectorised tanh beats a scalar loop)."""
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
    "gelu_backward": (gelu_backward_numba, gelu_backward_numpy),
}


def implementation(name):
    """The numba kernel called `name`, or its NumPy twin when TINYAR_KERNELS=numpy."""
    numba_fn, numpy_fn = _KERNELS[name]
    return numba_fn if use_numba() else numpy_fn
