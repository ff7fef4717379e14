"""The machinery under the compiled kernels: BLAS threads, BLAS calls from numba, memory.

Nothing here is mathematics, and nothing on the learner's path needs it: the kernel
modules' compiled sections and train.fit call it. Three parts:

1. single_thread_numba_blas(): hold the BLAS that numba's np.dot calls to one thread
   while a kernel runs, so that it and NumPy's own BLAS do not spin 4 threads on 2 cores;
   one_blas_thread() the same for NumPy's BLAS, numba_threads_at_most(n) for numba's loops.
2. blas_gemm / gemm_block: BLAS's gemm on row-major blocks, callable from compiled code.
3. keep_freed_memory(): glibc's malloc keeps freed blocks, so a training step's arrays
   are not faulted in afresh every step.

The figures behind each choice are in benchmarks/README.md.
"""
from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import importlib
import os
import threading

import numpy as np

# numba, or where it cannot be imported a stand-in that leaves the functions uncompiled (__init__.py)
from tinyar.kernels import NUMBA_ERROR, numba

# fastmath flags of the compiled kernels: "reassoc" lets LLVM vectorise dot products and
# sums (it may add in another order: a rounding-level change), "contract" lets it fuse
# a * b + c into one FMA. Not "nnan"/"ninf": the kernels must stay right at +-inf.
FASTMATH = {"reassoc", "contract"}


# ------------------------------------------------------- numba's BLAS, one thread
# Inside njit code np.dot calls SciPy's copy of OpenBLAS (numba binds scipy.linalg.cython_blas);
# NumPy calls its own copy. Each keeps a pool of worker threads that spin for a while after
# every product. With both pools at 2 threads on 2 cores, a kernel that alternates with NumPy
# products (the RNN's recurrence beside its output layer) runs with 4 spinning threads: we
# measured the char-RNN step at 16-24 ms that way and 8.2 ms with SciPy's pool held to one
# thread. The per-step products inside the kernels are small (B x H x H), so one thread is
# also the faster choice for them on their own.
_scipy_blas = None          # list of threadpoolctl controllers for SciPy's BLAS, found on first use


def _scipy_blas_controllers():
    global _scipy_blas
    if _scipy_blas is None:
        try:
            import scipy
            import scipy.linalg.cython_blas   # noqa: F401  (the BLAS numba calls: loaded before we look)
            from threadpoolctl import ThreadpoolController
        except ImportError:                   # nothing to hold (threadpoolctl comes with scikit-learn)
            _scipy_blas = []
            return _scipy_blas
        scipy_root = os.path.join(os.path.dirname(os.path.dirname(scipy.__file__)), "scipy")
        libs = [lib for lib in ThreadpoolController().lib_controllers if lib.user_api == "blas"]
        # SciPy's own copy (scipy/ or scipy.libs/, the pip wheels); where SciPy and NumPy share
        # one BLAS library (conda, MKL, a system OpenBLAS) that one: the kernels that call it
        # from numba's threads want one BLAS thread each either way
        own = [lib for lib in libs if lib.filepath and lib.filepath.startswith(scipy_root)]
        _scipy_blas = own or libs
    return _scipy_blas


_hold = threading.Lock()
_held = {"depth": 0, "before": []}   # blocks open now (in any thread), and the thread counts to restore


@contextlib.contextmanager
def single_thread_numba_blas():
    """Hold the BLAS behind numba's np.dot to one thread inside the block; restore it after.

    Costs about a microsecond. NumPy's own BLAS is not touched where SciPy has its own copy
    (the pip wheels); where the two share one library, that one is held. Blocks may overlap (nested,
    or in several Python threads): the first one in saves the thread counts, the last one
    out restores them. (Seen with SciPy's OpenBLAS 0.3.30: a count set from a thread other
    than the main one does not take, so there the hold does nothing; results are the same.)
    """
    libs = _scipy_blas_controllers()
    with _hold:
        if _held["depth"] == 0:
            _held["before"] = [lib.get_num_threads() for lib in libs]
            for lib in libs:
                lib.set_num_threads(1)
        _held["depth"] += 1
    try:
        yield
    finally:
        with _hold:
            _held["depth"] -= 1
            if _held["depth"] == 0:
                for lib, n in zip(libs, _held["before"]):
                    lib.set_num_threads(n)


def one_blas_thread(on=True):
    """A block in which NumPy's BLAS runs on one thread (on=False: a block that changes nothing).
    For many small products, where a second BLAS thread spins more than it computes (the
    cached PixelCNN sampler; benchmarks/README.md, PixelCNN sampling)."""
    if not on:
        return contextlib.nullcontext()
    from threadpoolctl import threadpool_limits
    return threadpool_limits(1, user_api="blas")


@contextlib.contextmanager
def numba_threads_at_most(n):
    """A block whose parallel numba loops run on at most n threads (numba's count is restored
    after it). For calls too small to gain from a second thread: starting the threads of a
    parallel loop costs microseconds, and a second thread competes with OpenBLAS's spinning
    workers. Without numba a block that changes nothing."""
    if NUMBA_ERROR is not None:
        yield
        return
    before = numba.get_num_threads()
    numba.set_num_threads(max(1, min(n, before)))
    try:
        yield
    finally:
        numba.set_num_threads(before)


# -------------------------------------------------- gemm on blocks, from numba
# BLAS's gemm on row-major blocks, callable from numba-compiled code (convolution, MADE, attention, Linear layers).
#
# SciPy exports the Fortran BLAS routines (every argument passed by address) as
# scipy.linalg.cython_blas; numba can call a C function pointer passed in as an argument (a
# pointer fixed at compile time would stop numba caching the compiled code). It is the same
# BLAS library that numba's own np.dot uses, so kernels.single_thread_numba_blas() holds it to
# one thread while numba's threads run blocks of products side by side.
#
# Why call gemm on blocks from compiled code instead of one NumPy product: a kernel can then
# skip blocks that are known to be zero (masked convolution taps, the masked-out corner of a
# MADE mask) and spread the blocks over the cores, at ~0.1 us a call instead of NumPy's few us.
_GEMM_TYPE = ctypes.CFUNCTYPE(None, *([ctypes.c_void_p] * 13))
_gemm_functions = {}


def blas_gemm(dtype):
    """SciPy's sgemm or dgemm as a function numba can call, for float32 or float64 arrays."""
    dtype = np.dtype(dtype)
    if dtype not in (np.float32, np.float64):
        raise TypeError(f"BLAS kernels take float32 or float64 arrays, got {dtype}")
    if dtype not in _gemm_functions:
        name = "sgemm" if dtype == np.float32 else "dgemm"
        _gemm_functions[dtype] = _GEMM_TYPE(cython_function_address("scipy.linalg.cython_blas", name))
    return _gemm_functions[dtype]


def cython_function_address(module_name, function_name):
    """The address of a C function a Cython module exports (a capsule in its __pyx_capi__): what
    numba.extending.get_cython_function_address returns, without needing numba."""
    capsule = importlib.import_module(module_name).__pyx_capi__[function_name]
    capsule_name = ctypes.PYFUNCTYPE(ctypes.c_char_p, ctypes.py_object)(("PyCapsule_GetName", ctypes.pythonapi))
    pointer = ctypes.PYFUNCTYPE(ctypes.c_void_p, ctypes.py_object, ctypes.c_char_p)(
        ("PyCapsule_GetPointer", ctypes.pythonapi))
    return pointer(capsule, capsule_name(capsule))


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
    # int(): the starts may be NumPy integers, which ctypes refuses as addresses when this runs
    # as plain Python (without numba)
    gemm(flags.ctypes.data, flags.ctypes.data + 1, i, i + 4, i + 8, scalars.ctypes.data,
         B.ctypes.data + int(b_start) * size, i + 12, A.ctypes.data + int(a_start) * size, i + 16,
         scalars.ctypes.data + size, C.ctypes.data + int(c_start) * size, i + 20)


# ------------------------------------------------------------ freed memory
# Keeping freed memory for reuse: a training step's arrays without page faults.
#
# A training step allocates and frees the same large arrays every time (a Transformer step
# at B = 32, T = 128: ~100 MB in arrays of up to 8 MB). glibc's malloc serves blocks above
# its mmap threshold (128 kB at start, raised as large blocks are freed) straight from the
# operating system, and gives freed memory at the top of its heap back once more than the
# trim threshold is free. The next step then touches fresh pages, and each first touch of a
# 4 kB page is a page fault: we counted ~20,000 per Transformer step, 30-45 ms of a 120-170
# ms step (benchmarks/README.md, "Page faults"). Whether it happens depends on the process's
# history, so the same step can be fast in one process and slow in the next.
#
# keep_freed_memory() fixes both thresholds: blocks of up to 32 MB (the most glibc allows)
# come from the heap, and the heap is not trimmed below 1 GB free, so freed blocks are
# reused and stay mapped. The price: a process keeps the memory of its largest step until
# it exits, which a training run does anyway. train.fit calls it; call it yourself before a
# hand-written training loop. Other C libraries (macOS, musl) are left as they are.
M_TRIM_THRESHOLD, M_MMAP_THRESHOLD = -1, -3              # glibc's <malloc.h>
MMAP_THRESHOLD = 32 << 20                                # 32 MB: glibc's maximum on 64-bit
TRIM_THRESHOLD = 1 << 30                                 # 1 GB

_kept = None


def keep_freed_memory():
    """Ask glibc's malloc to keep freed blocks (up to 32 MB each) for reuse; True if it agreed.

    Process-wide and idempotent; False with another C library (then nothing changed; if only
    the first of the two settings took, the mmap threshold is raised and the trimming left).
    """
    global _kept
    if _kept is None:
        try:
            libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
            _kept = bool(libc.mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD)
                         and libc.mallopt(M_TRIM_THRESHOLD, TRIM_THRESHOLD))
        except (OSError, AttributeError, TypeError):     # no libc by that name, or no mallopt in it
            _kept = False
    return _kept
