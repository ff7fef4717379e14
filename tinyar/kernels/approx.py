"""Fast approximations of tanh, exp and sigmoid for the compiled kernels.

numba compiles math.exp and math.tanh to calls of the C library's scalar functions, one
element at a time, where NumPy's own exp and tanh run on SIMD units. Inside a kernel's
innermost loop those calls dominate. The functions here compute the same values to within
float32's rounding by arithmetic alone (polynomials and rational functions), which the
compiler vectorises. They serve float32; float64, the precision for checking, uses the
exact library functions. Tests compare each with NumPy over the whole float32 range.
"""
from __future__ import annotations

import math

import numpy as np

# numba, or where it cannot be imported a stand-in that leaves the functions uncompiled (__init__.py)
from tinyar.kernels import numba
from tinyar.kernels.runtime import FASTMATH


# tanh in float32. numba calls libm's scalar tanh (~16 ns an element), while NumPy's
# tanh runs on SIMD units (~0.3 ns): the recurrence would spend most of its time
# there. For float32 the kernels use instead a rational function that the compiler
# vectorizes, fitted (minimax, on 0 <= x <= 9) to tanh:
#     tanh(x) ~ x P(x^2) / Q(x^2),  P of degree 6, Q of degree 3 (in x^2),  |x| clamped to 9
# evaluated in float64: its error, 6e-9, is below float32's rounding (6e-8), so the
# float32 result is np.tanh's up to one ulp. float64 keeps the exact libm tanh.
# The kernels use error_model="numpy": with Python's model every division checks
# for zero (to raise ZeroDivisionError), and that branch stops the loop vectorizing.
_P = (0.9999999665820529, 0.13076980662809315, 0.003096226935299029, 1.1076747176129851e-05,
      -1.9929820259279107e-08, 5.145818694824015e-11, -8.174060752182201e-14)
_Q = (1.0, 0.46410300008126476, 0.024464064641256656, 0.0002535084606467356)


@numba.njit(cache=True, error_model="numpy")
def tanh_rational(v):
    """tanh(v) as x P(x^2) / Q(x^2), x = v clamped to [-9, 9] (1 - tanh(9) = 3e-8: within one float32 step of 1)."""
    x = np.float64(v)
    x = 9.0 if x > 9.0 else x                               # plain comparisons: they vectorize
    x = -9.0 if x < -9.0 else x
    z = x * x
    P = ((((((_P[6] * z + _P[5]) * z + _P[4]) * z + _P[3]) * z + _P[2]) * z + _P[1]) * z + _P[0])
    Q = ((_Q[3] * z + _Q[2]) * z + _Q[1]) * z + _Q[0]
    return x * P / Q


# sigmoid in float32. numba has no vectorised exp either: math.exp is a libm call per
# element, and in a plain loop the sigmoid's exp takes most of a NADE kernel's time. For
# float32 the kernels use instead the classic Cephes expf scheme, arithmetic only:
#     e^-t = 2^-k e^r,   k = round(t / ln 2),   r = k ln 2 - t in [-ln2/2, ln2/2]
#     e^r  = 1 + r + r^2 P(r),   P of degree 5   (relative error ~1e-7)
# with 2^-k written straight into the float32's exponent bits. float64 keeps the exact exp.
_jit = numba.njit(cache=True, error_model="numpy", fastmath=FASTMATH)


@_jit
def exp_parts32(a):
    """For a float32 a: t = min(|a|, 87), k = round(t / ln 2) and e^r with r = k ln 2 - t, so that
    e^-t = e^r 2^-k, r in [-ln2/2, ln2/2]; e^r = 1 + r + r^2 P(r), P of degree 5 (Cephes expf,
    relative error ~1e-7). The cap at 87 keeps 2^-k a normal float32: for a < -87 sigma(a)
    comes out as e^-87 ~ 2e-38 instead of a smaller number, which changes nothing downstream."""
    t = min(abs(a), np.float32(87.0))
    k = np.floor(t * np.float32(1.4426950408889634) + np.float32(0.5))
    r = k * np.float32(0.693359375) - t + k * np.float32(-2.12194440e-4)    # ln 2 in two parts
    p = np.float32(1.9875691500e-4)
    p = p * r + np.float32(1.3981999507e-3)
    p = p * r + np.float32(8.3334519073e-3)
    p = p * r + np.float32(4.1665795894e-2)
    p = p * r + np.float32(1.6666665459e-1)
    p = p * r + np.float32(5.0000001201e-1)
    return k, p * r * r + r + np.float32(1.0)


@_jit
def sigmoid32_into(a, h):
    """h[j] = sigma(a[j]) in float32, with an exp that LLVM vectorises (no libm call).

    Pass 1 writes the float32 2^-k into h, built from its bits (exponent field 127 - k) through
    an int32 view of h; pass 2 multiplies it by e^r to get e = e^-|a| and forms
    sigma(a) = 1 / (1 + e) for a >= 0, e / (1 + e) for a < 0 (never overflows).
    """
    bits = h.view(np.int32)
    for j in range(a.shape[0]):
        k, _ = exp_parts32(a[j])
        bits[j] = (np.int32(127) - np.int32(k)) << 23             # the float32 2^-k
    for j in range(a.shape[0]):
        k, e_r = exp_parts32(a[j])
        e = e_r * h[j]                                            # e^-|a| = e^r 2^-k
        one_over = np.float32(1.0) / (np.float32(1.0) + e)
        h[j] = one_over if a[j] >= 0 else e * one_over


@_jit
def exp_neg_into(t, out, n):
    """out[j] = e^-t[j] for j < n, every t[j] >= 0 (float32: the scheme of sigmoid32_into, in two
    passes, 2^-k first; float64: the exact exp). For t > 87 the float32 result is e^-87 ~ 2e-38
    instead of a smaller number, which changes no sum it enters."""
    if t.itemsize == 4:
        bits = out.view(np.int32)
        for j in range(n):
            k, _ = exp_parts32(t[j])
            bits[j] = (np.int32(127) - np.int32(k)) << 23             # the float32 2^-k
        for j in range(n):
            _, e_r = exp_parts32(t[j])
            out[j] *= e_r                                             # e^-t = e^r 2^-k
    else:
        for j in range(n):
            out[j] = math.exp(-t[j])


@_jit
def sigmoid64(a):
    """sigma(a) for a float64 a, with the exact exp."""
    e = math.exp(-abs(a))
    return 1.0 / (1.0 + e) if a >= 0 else e / (1.0 + e)


@_jit
def sigmoid_into(a, h):
    """h[j] = sigma(a[j]) for a 1-d a (float32: sigmoid32_into; float64: exact)."""
    if a.itemsize == 4:
        sigmoid32_into(a, h)
    else:
        for j in range(a.shape[0]):
            h[j] = sigmoid64(a[j])
