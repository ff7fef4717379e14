"""Kernels: the loops NumPy cannot express fast, each as a NumPy twin and a compiled version.

Each topic module (nade.py, masked.py, rnn.py, attention.py, linear.py, conv.py, sgd.py) reads top
to bottom as: a docstring with the math and the derivation of the backward pass; the
NumPy twins, named `<name>_numpy`, which read like the equations and are the
specification; then, below a banner

    # ---- compiled fast path: safe to skip on a first reading ----

the `@numba.njit(cache=True)` versions, named `<name>_numba`, with the same signatures,
and one function `choose(name, ...)` that returns the implementation a fused op
(tinyar/fused.py) calls: all the measured rules of that module in one place. Tests
assert that every twin and its compiled version agree in float32 and float64.

Set the environment variable TINYAR_KERNELS=numpy to make every choice return the NumPy
twins: for reading, stepping through in a debugger, and checking.

approx.py holds the fast approximations of exp, sigmoid and tanh used by the compiled
code, and runtime.py the thread, BLAS and memory handling; neither is needed to follow
the math.

numba is an optional speed-up. Where it cannot be imported, `numba` below is a stand-in
whose `njit` leaves a function as it is and whose `prange` is `range`: every module still
imports, `use_numba()` is False, every `choose` returns the NumPy twins, and the first
choice says so once on stderr.
"""
import os
import sys

try:
    import numba
    NUMBA_ERROR = None
except ImportError as error:                  # not installed, or built for another NumPy/Python
    NUMBA_ERROR = error

    class numba:                              # noqa: N801  (stands in for the module, under its name)
        """What the kernel modules use of numba, without compiling: njit returns the function
        as it is, prange is range. `pick` never chooses these plain-Python loops; they run
        only where a caller forces one (fused.masked_matmul's kernel=), slowly and rightly."""
        prange = range

        @staticmethod
        def njit(*function, **options):
            """@njit and @njit(**options) alike: the function itself."""
            return function[0] if function else (lambda f: f)


NUMBA_MISSING = ("tinyar: numba is not installed ({}), so every kernel runs its NumPy twin: the same "
                 "results, several times slower (NADE about 10x: the numba and NumPy twin columns of the "
                 "summary in benchmarks/README.md). Install it with: pip install numba")
_told = False


def use_numba():
    """False when TINYAR_KERNELS=numpy or numba cannot be imported: every `choose` then returns the
    NumPy twins. Without numba, the first call says so once on stderr."""
    if os.environ.get("TINYAR_KERNELS", "numba").lower() == "numpy":
        return False
    if NUMBA_ERROR is not None:
        _tell_once()
        return False
    return True


def _tell_once():
    global _told
    if not _told:
        _told = True
        print(NUMBA_MISSING.format(NUMBA_ERROR), file=sys.stderr)


def pick(namespace, name, compiled=True):
    """namespace[name + "_numba"] if `compiled` and the switch allows it, else namespace[name + "_numpy"].

    The one mechanism behind every module's `choose`: `namespace` is the module's globals(),
    `compiled` the module's measured rule for this call.
    """
    return namespace[name + ("_numba" if compiled and use_numba() else "_numpy")]
