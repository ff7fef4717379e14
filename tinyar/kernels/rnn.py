"""Elman RNN over a whole sequence: the forward recurrence and backpropagation through time.

    a_t = W_xh x_t + b + W_hh h_{t-1}        h_t = tanh(a_t)        t = 1..T

The input term u_t = W_xh x_t + b does not depend on the past, so the fused op
(fused.elman_rnn) computes it for all t at once (a column lookup for one-hot ids,
one matmul for dense inputs) and hands these kernels only the part that must run
step by step. Arrays are time-major: u, h and their gradients are (T, B, H);
row vectors, so W_hh h_{t-1} is written h_{t-1} @ W_hh^T.

Cost: forward and backward are each T matmuls of (B, H) by (H, H): O(T B H^2),
and T steps that cannot run in parallel.

Backpropagation through time (derivation). L depends on every h_t directly
(through the outputs read from h_t: dh^out_t = dL/dh_t given) and indirectly
through h_{t+1}, which is made from h_t:

    dL/dh_t   = dh^out_t + (da_{t+1} @ W_hh)         the second term is 0 at t = T
    da_t      = dL/dh_t * (1 - h_t^2)                 tanh'(a) = 1 - tanh(a)^2
    dL/du_t   = da_t                                  (u_t enters a_t with weight 1)
    dW_hh     = sum_t da_t^T @ h_{t-1}                (H, H)
    db        = sum_t sum_batch da_t                  (H,)
    dh_0      = da_1 @ W_hh

and from dL/du_t the fused op finishes: dW_xh[:, k] += da_t[b] where x_t[b] = k
(one-hot ids), or dW_xh = sum_t da_t^T @ x_t and dx_t = da_t @ W_xh (dense).
The factor (1 - h_t^2) W_hh applied once per step back is why gradients over
many steps vanish (its norm below 1) or explode (above 1).
"""
from __future__ import annotations

import numpy as np

# numba, or where it cannot be imported a stand-in that leaves the functions uncompiled (__init__.py)
from tinyar.kernels import numba, pick
from tinyar.kernels.approx import tanh_rational
from tinyar.kernels.runtime import single_thread_numba_blas


def elman_forward_numpy(u, W_hh, h0):
    """h_t = tanh(u_t + h_{t-1} @ W_hh^T) for t = 1..T.

    u: (T, B, H) input terms W_xh x_t + b;  W_hh: (H, H);  h0: (B, H).
    Returns h: (T, B, H), the states h_1..h_T.
    """
    h = np.empty_like(u)                                     # (T, B, H)
    h_prev = h0                                              # (B, H)
    for t in range(u.shape[0]):
        h[t] = np.tanh(u[t] + h_prev @ W_hh.T)               # h_t = tanh(u_t + W_hh h_{t-1})
        h_prev = h[t]
    return h


def elman_backward_numpy(W_hh, h0, h, dh_out):
    """Backpropagation through time for elman_forward_numpy: min-char-rnn's loop, one chain-rule step per line.

    h: (T, B, H) the forward states; dh_out: (T, B, H) dL/dh_t from the outputs.
    Returns (da, dW_hh, db, dh0): da (T, B, H) = dL/da_t = dL/du_t, dW_hh (H, H),
    db (H,) = sum of da over time and batch, dh0 (B, H).
    """
    T = h.shape[0]
    da = np.empty_like(h)
    dW_hh = np.zeros_like(W_hh)
    db = np.zeros(W_hh.shape[0], h.dtype)
    dh_next = np.zeros_like(h0)
    for t in reversed(range(T)):
        dh = dh_out[t] + dh_next                             # dL/dh_t: from the output and from step t+1
        da[t] = dh * (1 - h[t] * h[t])                       # through tanh
        h_prev = h[t - 1] if t > 0 else h0
        dW_hh += da[t].T @ h_prev                            # a_t = ... + h_{t-1} W_hh^T
        db += da[t].sum(axis=0)
        dh_next = da[t] @ W_hh                               # dL/dh_{t-1} from step t
    return da, dW_hh, db, dh_next


# ---- compiled fast path: safe to skip on a first reading ----
# The per-step products are small (B x H x H): numba's BLAS is held to one thread while a
# kernel runs, so its pool and NumPy's do not compete for the cores (kernels/runtime.py).
def elman_forward_numba(u, W_hh, h0):
    """Compiled elman_forward_numpy: same arguments, same result (float32 uses tanh_rational)."""
    with single_thread_numba_blas():
        return _elman_forward(u, W_hh, h0, u.dtype == np.float32)


def elman_backward_numba(W_hh, h0, h, dh_out):
    """Compiled elman_backward_numpy: same arguments, same results."""
    with single_thread_numba_blas():
        return _elman_backward(W_hh, h0, h, dh_out)


# error_model="numpy": no zero-division check per element, so the loops vectorize
@numba.njit(cache=True, error_model="numpy")
def _elman_forward(u, W_hh, h0, rational):
    T, B, H = u.shape
    h = np.empty_like(u)
    W_hhT = np.ascontiguousarray(W_hh.T)
    a = np.empty((B, H), u.dtype)
    a_flat = a.reshape(B * H)
    h_prev = np.ascontiguousarray(h0)
    for t in range(T):
        np.dot(h_prev, W_hhT, a)                            # (B, H)  W_hh h_{t-1}
        u_t = u[t].reshape(B * H)
        h_t = h[t].reshape(B * H)
        if rational:                                        # float32: a tanh the compiler vectorizes
            for k in range(B * H):
                h_t[k] = tanh_rational(u_t[k] + a_flat[k])  # h_t = tanh(u_t + W_hh h_{t-1})
        else:
            for k in range(B * H):
                h_t[k] = np.tanh(u_t[k] + a_flat[k])
        h_prev = h[t]
    return h


@numba.njit(cache=True, error_model="numpy")
def _elman_backward(W_hh, h0, h, dh_out):
    T, B, H = h.shape
    da = np.empty_like(h)
    dh_next = np.zeros((B, H), h.dtype)                      # da_{t+1} @ W_hh, 0 after the last step
    dh_next_flat = dh_next.reshape(B * H)
    W = np.ascontiguousarray(W_hh)
    for t in range(T - 1, -1, -1):
        h_t = h[t].reshape(B * H)
        g_t = dh_out[t].reshape(B * H)
        da_t = da[t].reshape(B * H)
        for k in range(B * H):
            da_t[k] = (g_t[k] + dh_next_flat[k]) * (1 - h_t[k] * h_t[k])   # dL/dh_t * tanh'(a_t)
        np.dot(da[t], W, dh_next)                            # (B, H)  dL/dh_{t-1} from step t
    # dW_hh = sum_t da_t^T h_{t-1}: one (H, T*B) @ (T*B, H) product over all steps
    h_prev = np.empty_like(h)
    h_prev[0] = h0
    h_prev[1:] = h[:-1]
    da2 = da.reshape(T * B, H)
    dW_hh = np.dot(da2.T, h_prev.reshape(T * B, H))
    db = np.zeros(H, h.dtype)
    for k in range(T * B):
        for j in range(H):
            db[j] += da2[k, j]
    return da, dW_hh, db, dh_next


def choose(name="elman"):
    """The (forward, backward) pair of `name` (only "elman"): the compiled kernels, faster than the
    twins at every measured size (benchmarks/README.md, RNN); the twins under TINYAR_KERNELS=numpy."""
    return pick(globals(), name + "_forward"), pick(globals(), name + "_backward")
