"""BLAS's gemm on row-major blocks, callable from numba-compiled code (convolution, MADE).

SciPy exports the Fortran BLAS routines (every argument passed by address) as
scipy.linalg.cython_blas; numba can call a C function pointer passed in as an argument (a
pointer fixed at compile time would stop numba caching the compiled code). It is the same
BLAS library that numba's own np.dot uses, so kernels.single_thread_numba_blas() holds it to
one thread while numba's threads run blocks of products side by side.

Why call gemm on blocks from compiled code instead of one NumPy product: a kernel can then
skip blocks that are known to be zero (masked convolution taps, the masked-out corner of a
MADE mask) and spread the blocks over the cores, at ~0.1 us a call instead of NumPy's few us.
"""
from __future__ import annotations

import ctypes

import numba
import numpy as np

_GEMM_TYPE = ctypes.CFUNCTYPE(None, *([ctypes.c_void_p] * 13))
_gemm_functions = {}


def blas_gemm(dtype):
    """SciPy's sgemm or dgemm as a function numba can call, for float32 or float64 arrays."""
    dtype = np.dtype(dtype)
    if dtype not in (np.float32, np.float64):
        raise TypeError(f"BLAS kernels take float32 or float64 arrays, got {dtype}")
    if dtype not in _gemm_functions:
        from numba.extending import get_cython_function_address
        name = "sgemm" if dtype == np.float32 else "dgemm"
        _gemm_functions[dtype] = _GEMM_TYPE(get_cython_function_address("scipy.linalg.cython_blas", name))
    return _gemm_functions[dtype]


@numba.njit(cache=True, nogil=True)
def gemm_block(gemm, trans_a, trans_b, M, N, K, A, a_start, lda, B, b_start, ldb, beta, C, c_start, ldc):
    """C = op(A) op(B) + beta C on row-major blocks of flat-indexed arrays.

    C (M, N) starts at element c_start of C, ldc elements between rows; op(A) (M, K) is the
    block of A from a_start (lda apart), stored (K, M) and transposed when trans_a; op(B)
    (K, N) likewise from b_start (ldb apart), stored (N, K) when trans_b.

    Fortran BLAS is column-major, and a row-major block is its transpose: so ask for
    C^T = op(B)^T op(A)^T, i.e. gemm with A and B swapped and N before M.
    """
    ints = np.empty(6, dtype=np.int32)          # Fortran integers, passed by address
    ints[0] = N
    ints[1] = M
    ints[2] = K
    ints[3] = ldb
    ints[4] = lda
    ints[5] = ldc
    flags = np.empty(2, dtype=np.uint8)
    flags[0] = 84 if trans_b else 78            # 'T' or 'N' for B
    flags[1] = 84 if trans_a else 78            # 'T' or 'N' for A
    scalars = np.empty(2, dtype=A.dtype)        # alpha, beta
    scalars[0] = 1.0
    scalars[1] = beta
    size = A.itemsize
    i = ints.ctypes.data
    gemm(flags.ctypes.data, flags.ctypes.data + 1, i, i + 4, i + 8, scalars.ctypes.data,
         B.ctypes.data + b_start * size, i + 12, A.ctypes.data + a_start * size, i + 16,
         scalars.ctypes.data + size, C.ctypes.data + c_start * size, i + 20)
