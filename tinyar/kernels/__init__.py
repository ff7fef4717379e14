"""numba kernels and their NumPy twins, on plain arrays.

Each topic module (nade.py, masked.py, rnn.py, conv.py) holds `@numba.njit(cache=True)`
functions and a NumPy twin of each with the same signature; the twin reads like the
equations and is the kernel's specification (tests assert that they agree).

Set the environment variable TINYAR_KERNELS=numpy to make every fused op call the
NumPy twins instead: for reading, stepping through in a debugger, and checking.
"""
import contextlib
import os
import threading


def use_numba():
    """False when TINYAR_KERNELS=numpy: every fused op then calls the NumPy twins."""
    return os.environ.get("TINYAR_KERNELS", "numba").lower() != "numpy"


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
