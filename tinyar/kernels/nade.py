"""NADE's cached recursion: the forward pass, its backward pass and the samplers.

NADE [1, 2] models p(x) = prod_i p(x_{o_i} | x_{o_<i}) for an ordering o of the D
dimensions, with one hidden layer per conditional whose weights are shared:

    a_1       = c                                          (H,)
    h_i       = sigmoid(a_i)                               (H,)
    out_{o_i} = b_{o_i} + V_{o_i} h_i                      (P,)   the parameters of p(x_{o_i} | x_{o_<i})
    a_{i+1}   = a_i + W_{o_i}^T x_{o_i}                    (H,)   O(H K) per step: the cache

so one likelihood costs O(D H (K + P)) instead of the O(D^2 H) of D separate networks.
The kernels are generic over what a dimension feeds in and what comes out:

    x    (B, D, K)   K input features per dimension: binary NADE x_d itself (K = 1);
                     categorical NADE the one-hot code of x_d (K levels); RNADE the real x_d
    W    (D, K, H)   W[d] is the notes' column W[:, d] (a K x H block), stored contiguously in H
    c    (H,)
    V    (D, P, H)   P output parameters per dimension: one logit (binary NADE), K logits
                     (categorical NADE), 3 M mixture parameters (RNADE)
    b    (D, P)
    order (D,)       order[i] = o_i, the dimension visited at step i
    out  (B, D, P)   indexed by dimension d (not by step i)

What the forward keeps. The backward needs h_i and a_i at every step, but storing them
would cost B D H numbers. Instead the forward returns only the last pre-activation
a_{D+1} (B, H), and the backward walks the recursion in reverse, a_i = a_{i+1} - W_{o_i}^T x_{o_i},
recomputing h_i = sigmoid(a_i) as it goes: memory O(B H) beyond the inputs and outputs.
Each subtraction undoes its addition only up to one rounding, relative to the largest |a|
the sum reaches later, so a recomputed a_i is off by about sqrt(D) ulp(max_j |a_j|): nothing
for data of order 1 (binary, one-hot, intensities) in float32, but large real inputs need
float64 (RNADE refuses float32 data beyond |x| = RNADE.MAX_ABS_FLOAT32).

Backward (the chain rule through the recursion; g_i = dL/dout_{o_i}, a (P,) vector):
    dV_{o_i} += g_i h_i^T,   db_{o_i} += g_i                    (out = b + V h)
    dh_i      = V_{o_i}^T g_i                                   (H,)
    dL/da_i   = dh_i * h_i * (1 - h_i) + dL/da_{i+1}            (a_i reaches out_{o_i} through h_i
                                                                 and every later a_j through a_{i+1})
    dW_{o_i} += x_{o_i} (dL/da_{i+1})^T                         (W_{o_i} acts only from a_{i+1} on)
    dc        = dL/da_1
so one reverse sweep with a running G = dL/da_{i+1} gives every gradient in O(D H (K + P)).

Sampling (`sample_bernoulli`, `sample_categorical`, `sample_mog`) runs the same recursion,
O(D H (K + P)) per sample, with the uniform / normal numbers drawn by the caller in NumPy
(so a seed fixes the result). Each row has its own ordering, and dimensions marked
`observed` keep their given values (conditional completion); the samplers return the log
probability of the observed values under the model's conditionals (importance weights).
Input features past the data's own (W[d, n_data:], if any) are mask inputs [4]: constant 1
once dimension d has been visited, so h can tell "x_d = 0" from "x_d not seen yet".

References
    [1] S. Ermon, A. Grover, CS236 notes: Autoregressive models.
        https://deepgenerativemodels.github.io/notes/autoregressive/
    [2] H. Larochelle, I. Murray. The neural autoregressive distribution estimator. AISTATS 2011.
    [3] B. Uria, I. Murray, H. Larochelle. RNADE: the real-valued neural autoregressive
        density-estimator. NeurIPS 2013.
    [4] B. Uria, I. Murray, H. Larochelle. A deep and tractable density estimator. ICML 2014.
"""
from __future__ import annotations

import math

import numpy as np

# numba, or where it cannot be imported a stand-in that leaves the functions uncompiled (__init__.py)
from tinyar.kernels import numba, pick
from tinyar.kernels.approx import sigmoid64, sigmoid_into
from tinyar.kernels.runtime import FASTMATH
from tinyar.ops import stable_sigmoid, stable_softplus

LOG_2PI = math.log(2.0 * math.pi)


def _check_shapes(x, order, W, c, V, b):
    B, D, K = x.shape
    H = c.shape[0]
    P = b.shape[1]
    if W.shape != (D, K, H) or V.shape != (D, P, H) or b.shape != (D, P) or order.shape != (D,):
        raise ValueError(f"nade kernels: expected x (B, D, K), order (D,), W (D, K, H), c (H,), V (D, P, H), "
                         f"b (D, P); got x {x.shape}, order {order.shape}, W {W.shape}, c {c.shape}, "
                         f"V {V.shape}, b {b.shape}")
    return B, D, K, H, P


def _check_sampler(order, W, c, V, b, *per_row):
    n, D = order.shape
    if W.shape[0] != D or V.shape[0] != D or b.shape[0] != D:
        raise ValueError(f"nade samplers: order {order.shape} does not match W {W.shape}, V {V.shape}, b {b.shape}")
    for arr in per_row:
        if arr.shape != (n, D):
            raise ValueError(f"nade samplers: per-row arrays must have shape {(n, D)}, got {arr.shape}")
    return n, D


# ------------------------------------------------------------ forward, backward
def nade_forward_numpy(x, order, W, c, V, b):
    """The output parameters of every dimension, and a_{D+1}.

    Returns out (B, D, P) and a_last (B, H) (what the backward starts from).
    """
    B, D, K, H, P = _check_shapes(x, order, W, c, V, b)
    out = np.empty((B, D, P), dtype=c.dtype)
    a = np.broadcast_to(c, (B, H)).copy()              # (B, H)   a_1 = c
    for d in order:                                    # d = o_i
        h = stable_sigmoid(a)                          # (B, H)   h_i = sigma(a_i)
        out[:, d] = h @ V[d].T + b[d]                  # (B, P)   out_d = b_d + V_d h_i
        a += x[:, d] @ W[d]                            # (B, H)   a_{i+1} = a_i + W_d^T x_d
    return out, a


def nade_backward_numpy(x, order, W, c, V, b, a_last, dout):
    """dW, dc, dV, db given dout = dL/dout (B, D, P).

    Runs the recursion in reverse from a_last = a_{D+1}; G holds dL/da_{i+1}.
    """
    B, D, K, H, P = _check_shapes(x, order, W, c, V, b)
    dW, dV, db = np.zeros_like(W), np.zeros_like(V), np.zeros_like(b)
    G = np.zeros((B, H), dtype=c.dtype)                # (B, H)   dL/da_{D+1} = 0
    a = a_last.copy()                                  # (B, H)   a_{D+1}
    for d in order[::-1]:                              # i = D, ..., 1;  d = o_i
        dW[d] += x[:, d].T @ G                         # (K, H)   dW_d = sum_n x_d (dL/da_{i+1})^T
        a -= x[:, d] @ W[d]                            # (B, H)   a_i = a_{i+1} - W_d^T x_d
        h = stable_sigmoid(a)                          # (B, H)   h_i
        g = dout[:, d]                                 # (B, P)   dL/dout_d
        dV[d] += g.T @ h                               # (P, H)   dV_d = sum_n g h_i^T
        db[d] += g.sum(axis=0)                         # (P,)
        G += (g @ V[d]) * h * (1.0 - h)                # (B, H)   dL/da_i = V_d^T g * h (1 - h) + dL/da_{i+1}
    dc = G.sum(axis=0)                                 # (H,)     dc = sum_n dL/da_1
    return dW, dc, dV, db


# -------------------------------------------------------------------- sampling
# Every sampler: order (n, D) one ordering per row; x_obs (n, D) values kept where
# observed (n, D) is True; random numbers drawn by the caller. Returns the samples and
# log_w (n,) = sum over observed dimensions of log p(x_d | x_<d) (float64).

def sample_bernoulli_numpy(order, W, c, V, b, u, x_obs, observed):
    """Binary NADE (W (D, 1, H), V (D, 1, H), b (D, 1)): x_d = [u < sigma(logit_d)].

    For the logit z and x_d in {0, 1}, log p(x_d) = x_d z - softplus(z) = -softplus((1 - 2 x_d) z)
    (log sigma(z) = -softplus(-z), log(1 - sigma(z)) = -softplus(z)): no cancellation for either
    value. log(sigma(z)) or log1p(-sigma(z)) would go wrong once sigma(z) is near 1: -30.001
    instead of -30 at z = 30, and -inf for an observed 0 once sigma(z) rounds to 1.
    """
    n, D = _check_sampler(order, W, c, V, b, u, x_obs, observed)
    rows = np.arange(n)
    x = np.zeros((n, D), dtype=c.dtype)
    log_w = np.zeros(n)
    a = np.broadcast_to(c, (n, c.shape[0])).copy()                  # (n, H)   a_1 = c
    for i in range(D):
        d = order[:, i]                                             # (n,)     each row's o_i
        h = stable_sigmoid(a)                                       # (n, H)
        logit = (np.einsum("nh,nh->n", V[d, 0], h) + b[d, 0]).astype(np.float64)      # (n,)
        p = stable_sigmoid(logit)                                   # p(x_d = 1 | x_<d), in float64
        obs = observed[rows, d]
        x_d = np.where(obs, x_obs[rows, d], (u[rows, d] < p).astype(c.dtype))
        log_p = -stable_softplus((1.0 - 2.0 * x_d) * logit)         # log p(x_d) = x_d z - softplus(z)
        log_w += np.where(obs, log_p, 0.0)
        x[rows, d] = x_d
        a += x_d[:, None] * W[d, 0] + W[d, 1:].sum(axis=1)          # a_{i+1} = a_i + W_d x_d (+ mask inputs)
    return x, log_w


def _log_softmax_rows(z):
    z = z.astype(np.float64) - z.max(axis=-1, keepdims=True)
    return z - np.log(np.exp(z).sum(axis=-1, keepdims=True))


def sample_categorical_numpy(order, W, c, V, b, u, x_obs, observed):
    """Categorical NADE (W (D, K, H) one row per level, V (D, K, H)): x_d = the first k with
    u < sum_{l<=k} softmax(logits_d)_l.  Returns integer samples."""
    n, D = _check_sampler(order, W, c, V, b, u, x_obs, observed)
    rows = np.arange(n)
    K = V.shape[1]
    x = np.zeros((n, D), dtype=np.int64)
    log_w = np.zeros(n)
    a = np.broadcast_to(c, (n, c.shape[0])).copy()                  # (n, H)
    for i in range(D):
        d = order[:, i]
        h = stable_sigmoid(a)                                       # (n, H)
        logits = np.einsum("nkh,nh->nk", V[d], h) + b[d]            # (n, K)
        log_p = _log_softmax_rows(logits)                           # (n, K)
        cdf = np.cumsum(np.exp(log_p), axis=1)                      # (n, K)
        drawn = np.minimum((u[rows, d, None] >= cdf).sum(axis=1), K - 1)
        obs = observed[rows, d]
        x_d = np.where(obs, x_obs[rows, d], drawn).astype(np.int64)
        log_w += np.where(obs, log_p[rows, x_d], 0.0)
        x[rows, d] = x_d
        a += W[d, x_d] + W[d, K:].sum(axis=1)                       # a_{i+1} = a_i + W_d^T onehot(x_d) (+ mask)
    return x, log_w


def mog_log_scales(raw, log_scale_min, log_scale_max):
    """log s = lo + (hi - lo) sigma(raw): scales positive and bounded, s in [e^lo, e^hi]."""
    return log_scale_min + (log_scale_max - log_scale_min) * stable_sigmoid(raw)


def sample_mog_numpy(order, W, c, V, b, u, z, x_obs, observed, log_scale_min, log_scale_max):
    """RNADE (W (D, 1, H), V (D, 3M, H): weight logits, means, raw scales): pick component m
    with u against the cumulative weights, then x_d = mu_m + s_m z."""
    n, D = _check_sampler(order, W, c, V, b, u, z, x_obs, observed)
    rows = np.arange(n)
    M = V.shape[1] // 3
    x = np.zeros((n, D), dtype=c.dtype)
    log_w = np.zeros(n)
    a = np.broadcast_to(c, (n, c.shape[0])).copy()
    for i in range(D):
        d = order[:, i]
        h = stable_sigmoid(a)
        params = (np.einsum("nph,nh->np", V[d], h) + b[d]).astype(np.float64)          # (n, 3M)
        log_pi = _log_softmax_rows(params[:, :M])                                       # (n, M)
        mu = params[:, M:2 * M]
        log_s = mog_log_scales(params[:, 2 * M:], log_scale_min, log_scale_max)
        m = np.minimum((u[rows, d, None] >= np.cumsum(np.exp(log_pi), axis=1)).sum(axis=1), M - 1)
        drawn = mu[rows, m] + np.exp(log_s[rows, m]) * z[rows, d]
        obs = observed[rows, d]
        x_d = np.where(obs, x_obs[rows, d], drawn)                                      # (n,)
        zz = (x_d[:, None] - mu) * np.exp(-log_s)
        comp = log_pi - 0.5 * zz * zz - log_s - 0.5 * LOG_2PI                          # (n, M)
        top = comp.max(axis=1)
        log_p = top + np.log(np.exp(comp - top[:, None]).sum(axis=1))
        log_w += np.where(obs, log_p, 0.0)
        x_d = x_d.astype(c.dtype)
        x[rows, d] = x_d
        a += x_d[:, None] * W[d, 0] + W[d, 1:].sum(axis=1)          # a_{i+1} = a_i + W_d x_d (+ mask inputs)
    return x, log_w


# ---- compiled fast path: safe to skip on a first reading ----
# Plain loops with the twins' equations. error_model="numpy" drops the division-by-zero
# check that stops loops vectorising; the float32 sigmoid is approx.sigmoid32_into.
_jit = numba.njit(cache=True, error_model="numpy", fastmath=FASTMATH)
_jit_parallel = numba.njit(cache=True, error_model="numpy", fastmath=FASTMATH, parallel=True)

# The batch is cut into at most N_CHUNKS contiguous chunks that run in parallel (numba.prange);
# in the backward each chunk adds into its own copy of dW, dc, dV, db, and the copies are
# summed in a fixed order, so the results do not depend on the number of threads.
N_CHUNKS = 4


@_jit
def _outputs_into(V_d, b_d, h, out):
    """out[p] = b_d[p] + V_d[p] . h   (P,) from V_d (P, H), b_d (P,), h (H,)."""
    for p in range(V_d.shape[0]):
        s = V_d.dtype.type(0.0)                        # accumulate in the arrays' dtype
        for j in range(h.shape[0]):
            s += V_d[p, j] * h[j]
        out[p] = b_d[p] + s


@_jit_parallel
def _nade_forward(x, order, W, c, V, b, out, a_last):
    B, D, K = x.shape
    H = c.shape[0]
    n_chunks = min(B, N_CHUNKS)
    for chunk in numba.prange(n_chunks):
        a = np.empty(H, dtype=c.dtype)
        h = np.empty(H, dtype=c.dtype)
        for n in range(chunk * B // n_chunks, (chunk + 1) * B // n_chunks):
            a[:] = c                                   # a_1 = c
            for i in range(D):
                d = order[i]
                sigmoid_into(a, h)                     # h_i = sigma(a_i)
                _outputs_into(V[d], b[d], h, out[n, d])     # out_d = b_d + V_d h_i
                for k in range(K):                     # a_{i+1} = a_i + W_d^T x_d
                    x_k = x[n, d, k]
                    if x_k != 0:                       # binary and one-hot inputs: mostly skipped
                        for j in range(H):
                            a[j] += W[d, k, j] * x_k
            a_last[n] = a


def nade_forward_numba(x, order, W, c, V, b):
    """The output parameters of every dimension, and a_{D+1}: compiled (see nade_forward_numpy)."""
    B, D, K, H, P = _check_shapes(x, order, W, c, V, b)
    out = np.empty((B, D, P), dtype=c.dtype)
    a_last = np.empty((B, H), dtype=c.dtype)
    _nade_forward(x, order, W, c, V, b, out, a_last)
    return out, a_last


@_jit_parallel
def _nade_backward(x, order, W, V, a_last, dout, dW, dc, dV, db):
    """dW, dc, dV, db have a leading chunk axis: chunk k accumulates its examples' gradients.

    Loop order: step i outside, the chunk's examples inside, so that the rows W[d], V[d],
    dW[d], dV[d] stay in cache while every example of the chunk uses them (the forward,
    which only reads W and V, runs example by example)."""
    B, D, K = x.shape
    H = a_last.shape[1]
    P = V.shape[1]
    n_chunks = dW.shape[0]
    one = a_last.dtype.type(1.0)
    for chunk in numba.prange(n_chunks):
        lo, hi = chunk * B // n_chunks, (chunk + 1) * B // n_chunks
        a = a_last[lo:hi].copy()                       # (n, H)   a_{D+1} of the chunk's examples
        G = np.zeros_like(a)                           # (n, H)   dL/da_{D+1} = 0
        h = np.empty(H, dtype=a_last.dtype)
        dh = np.empty(H, dtype=a_last.dtype)
        dW_, dc_, dV_, db_ = dW[chunk], dc[chunk], dV[chunk], db[chunk]
        for i in range(D - 1, -1, -1):
            d = order[i]
            for m in range(hi - lo):
                n = lo + m
                for k in range(K):
                    x_k = x[n, d, k]
                    if x_k != 0:
                        for j in range(H):
                            dW_[d, k, j] += x_k * G[m, j]      # dW_d += x_d (dL/da_{i+1})^T
                            a[m, j] -= W[d, k, j] * x_k        # a_i = a_{i+1} - W_d^T x_d
                sigmoid_into(a[m], h)                  # h_i
                dh[:] = 0.0
                for p in range(P):
                    g = dout[n, d, p]
                    db_[d, p] += g
                    for j in range(H):
                        dV_[d, p, j] += g * h[j]       # dV_d += g h_i^T
                        dh[j] += g * V[d, p, j]        # dh_i = V_d^T g
                for j in range(H):
                    G[m, j] += dh[j] * h[j] * (one - h[j])     # dL/da_i = dh_i h_i (1 - h_i) + dL/da_{i+1}
        for m in range(hi - lo):
            for j in range(H):
                dc_[j] += G[m, j]                      # dc = sum over examples of dL/da_1


def nade_backward_numba(x, order, W, c, V, b, a_last, dout):
    """dW, dc, dV, db given dout = dL/dout (B, D, P): compiled (see nade_backward_numpy)."""
    B = _check_shapes(x, order, W, c, V, b)[0]
    n_chunks = max(1, min(B, N_CHUNKS))
    parts = [np.zeros((n_chunks,) + p.shape, dtype=p.dtype) for p in (W, c, V, b)]
    _nade_backward(x, order, W, V, a_last, dout, *parts)
    return tuple(part.sum(axis=0) for part in parts)


# ------------------------------------------------------------ compiled samplers
# One row at a time; each step is: the conditional's parameters from h_i, a draw (or the
# observed value and its log-probability), then the input added to a.

@_jit
def _conditional_into(a, h, V_d, b_d, out):
    """h = sigma(a) (h_i), then out = b_d + V_d h: the parameters of p(x_d | x_<d)."""
    sigmoid_into(a, h)
    _outputs_into(V_d, b_d, h, out)


@_jit
def _add_input(a, W_d, k, value, n_data):
    """a += W_d[k] value (nothing when value is 0), then the mask inputs: a += W_d[n_data:]
    summed (their feature is 1 once d is visited)."""
    if value != 0:
        for j in range(a.shape[0]):
            a[j] += W_d[k, j] * value
    for mask_row in range(n_data, W_d.shape[0]):
        for j in range(a.shape[0]):
            a[j] += W_d[mask_row, j]


@_jit
def _softplus64(z):
    """softplus(z) = max(z, 0) + log1p(e^-|z|) for a float64 z (see sample_bernoulli_numpy)."""
    return max(z, 0.0) + math.log1p(math.exp(-abs(z)))


@_jit
def _sample_bernoulli(order, W, c, V, b, u, x_obs, observed, x, log_w):
    n, D = order.shape
    H = c.shape[0]
    a, h, logit = np.empty(H, dtype=c.dtype), np.empty(H, dtype=c.dtype), np.empty(1, dtype=c.dtype)
    for r in range(n):
        a[:] = c                                       # a_1 = c
        for i in range(D):
            d = order[r, i]
            _conditional_into(a, h, V[d], b[d], logit)
            z = np.float64(logit[0])
            if observed[r, d]:
                x_d = x_obs[r, d]
                log_w[r] -= _softplus64((1.0 - 2.0 * x_d) * z)    # log p(x_d) = -softplus((1 - 2 x_d) z)
            else:
                x_d = 1.0 if u[r, d] < sigmoid64(z) else 0.0      # p(x_d = 1 | x_<d), in float64
            x[r, d] = x_d
            _add_input(a, W[d], 0, x[r, d], 1)         # a_{i+1} = a_i + W_d x_d (+ mask inputs)


def sample_bernoulli_numba(order, W, c, V, b, u, x_obs, observed):
    """Binary NADE samples: compiled (see sample_bernoulli_numpy)."""
    n, D = _check_sampler(order, W, c, V, b, u, x_obs, observed)
    x = np.zeros((n, D), dtype=c.dtype)
    log_w = np.zeros(n)
    _sample_bernoulli(order, W, c, V, b, u, x_obs, observed, x, log_w)
    return x, log_w


@_jit
def _sample_categorical(order, W, c, V, b, u, x_obs, observed, x, log_w):
    n, D = order.shape
    H = c.shape[0]
    K = V.shape[1]
    a, h, logits = np.empty(H, dtype=c.dtype), np.empty(H, dtype=c.dtype), np.empty(K, dtype=c.dtype)
    one = c.dtype.type(1.0)
    for r in range(n):
        a[:] = c
        for i in range(D):
            d = order[r, i]
            _conditional_into(a, h, V[d], b[d], logits)
            m = np.float64(logits.max())
            total = 0.0
            for k in range(K):
                total += math.exp(np.float64(logits[k]) - m)
            log_total = math.log(total)                # log softmax_k = logits_k - m - log_total
            if observed[r, d]:
                x_d = x_obs[r, d]
                log_w[r] += np.float64(logits[x_d]) - m - log_total
            else:
                x_d = K - 1
                cdf = 0.0
                for k in range(K):                     # the first k with u < sum_{l<=k} softmax_l
                    cdf += math.exp(np.float64(logits[k]) - m - log_total)
                    if u[r, d] < cdf:
                        x_d = k
                        break
            x[r, d] = x_d
            _add_input(a, W[d], x_d, one, K)           # a_{i+1} = a_i + W_d^T onehot(x_d) (+ mask)


def sample_categorical_numba(order, W, c, V, b, u, x_obs, observed):
    """Categorical NADE samples: compiled (see sample_categorical_numpy)."""
    n, D = _check_sampler(order, W, c, V, b, u, x_obs, observed)
    x = np.zeros((n, D), dtype=np.int64)
    log_w = np.zeros(n)
    _sample_categorical(order, W, c, V, b, u, x_obs.astype(np.int64), observed, x, log_w)
    return x, log_w


@_jit
def _mog_log_density(x_d, mu, log_pi, log_s):
    """log sum_m pi_m N(x_d; mu_m, s_m^2), by log-sum-exp over the M components (float64)."""
    M = log_pi.shape[0]
    top = -np.inf
    for m in range(M):
        zz = (x_d - mu[m]) * math.exp(-log_s[m])
        top = max(top, log_pi[m] - 0.5 * zz * zz - log_s[m] - 0.5 * LOG_2PI)
    total = 0.0
    for m in range(M):
        zz = (x_d - mu[m]) * math.exp(-log_s[m])
        total += math.exp(log_pi[m] - 0.5 * zz * zz - log_s[m] - 0.5 * LOG_2PI - top)
    return top + math.log(total)


@_jit
def _mixture_into(params, log_scale_min, log_scale_max, log_pi, log_s):
    """log_pi = log softmax(params[:M]) and log_s = lo + (hi - lo) sigma(params[2M:]), in float64."""
    M = log_pi.shape[0]
    top = -np.inf
    for m in range(M):
        top = max(top, np.float64(params[m]))
    total = 0.0
    for m in range(M):
        total += math.exp(np.float64(params[m]) - top)
    for m in range(M):
        log_pi[m] = np.float64(params[m]) - top - math.log(total)
        log_s[m] = log_scale_min + (log_scale_max - log_scale_min) * sigmoid64(np.float64(params[2 * M + m]))


@_jit
def _sample_mog(order, W, c, V, b, u, z, x_obs, observed, log_scale_min, log_scale_max, x, log_w):
    n, D = order.shape
    H = c.shape[0]
    M = V.shape[1] // 3
    a, h, params = np.empty(H, dtype=c.dtype), np.empty(H, dtype=c.dtype), np.empty(3 * M, dtype=c.dtype)
    log_pi, log_s = np.empty(M), np.empty(M)
    for r in range(n):
        a[:] = c
        for i in range(D):
            d = order[r, i]
            _conditional_into(a, h, V[d], b[d], params)
            _mixture_into(params, log_scale_min, log_scale_max, log_pi, log_s)
            if observed[r, d]:
                x_d = np.float64(x_obs[r, d])
                log_w[r] += _mog_log_density(x_d, params[M:2 * M], log_pi, log_s)
            else:
                chosen = M - 1
                cdf = 0.0
                for m in range(M):                     # the first m with u < sum_{l<=m} pi_l
                    cdf += math.exp(log_pi[m])
                    if u[r, d] < cdf:
                        chosen = m
                        break
                x_d = np.float64(params[M + chosen]) + math.exp(log_s[chosen]) * z[r, d]    # mu_m + s_m z
            x[r, d] = x_d
            _add_input(a, W[d], 0, x[r, d], 1)         # a_{i+1} = a_i + W_d x_d (in the model's dtype, + mask)


def sample_mog_numba(order, W, c, V, b, u, z, x_obs, observed, log_scale_min, log_scale_max):
    """RNADE samples: compiled (see sample_mog_numpy)."""
    n, D = _check_sampler(order, W, c, V, b, u, z, x_obs, observed)
    x = np.zeros((n, D), dtype=c.dtype)
    log_w = np.zeros(n)
    _sample_mog(order, W, c, V, b, u, z, x_obs, observed, float(log_scale_min), float(log_scale_max), x, log_w)
    return x, log_w


# ------------------------------------------------------------------- the choice
def choose(name):
    """The implementation a caller runs: "nade" -> (nade_forward, nade_backward);
    "sample_bernoulli", "sample_categorical", "sample_mog" -> that sampler.

    The rule: always the compiled loops; the NumPy twins under TINYAR_KERNELS=numpy. (The
    twins loop in Python over the D steps: see benchmarks/README.md, "NADE", for the figures.)
    """
    if name == "nade":
        return pick(globals(), "nade_forward"), pick(globals(), "nade_backward")
    if name in ("sample_bernoulli", "sample_categorical", "sample_mog"):
        return pick(globals(), name)
    raise ValueError(f"kernels.nade.choose: unknown kernel {name!r} (expected 'nade', 'sample_bernoulli', "
                     "'sample_categorical' or 'sample_mog')")
