"""Fast approximations of tanh, exp and sigmoid for the compiled kernels.

numba compiles math.exp and math.tanh to calls of the C library's scalar functions, one
element at a time, where NumPy's own exp and tanh run on SIMD units. Inside a kernel's
innermost loop those calls dominate. The functions here compute the same values to within
float32's rounding by arithmetic alone (polynomials and rational functions), which the
compiler vectorises. They serve float32; float64, the precision for checking, uses the
exact library functions. Tests compare each with NumPy over the whole float32 range.
"""
from __future__ import annotations

import numba
import numpy as np


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
    """tanh(v) as x P(x^2) / Q(x^2), x = v clamped to [-9, 9] (1 - tanh(9) = 3e-8: float32's 1)."""
    x = np.float64(v)
    x = 9.0 if x > 9.0 else x                               # plain comparisons: they vectorize
    x = -9.0 if x < -9.0 else x
    z = x * x
    P = ((((((_P[6] * z + _P[5]) * z + _P[4]) * z + _P[3]) * z + _P[2]) * z + _P[1]) * z + _P[0])
    Q = ((_Q[3] * z + _Q[2]) * z + _Q[1]) * z + _Q[0]
    return x * P / Q
