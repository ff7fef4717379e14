"""Kernels: the loops NumPy cannot express fast, each as a NumPy twin and a compiled version.

Each topic module (nade.py, masked.py, rnn.py, attention.py, conv.py, sgd.py) reads top
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
"""
import os


def use_numba():
    """False when TINYAR_KERNELS=numpy: every `choose` then returns the NumPy twins."""
    return os.environ.get("TINYAR_KERNELS", "numba").lower() != "numpy"


def pick(namespace, name, compiled=True):
    """namespace[name + "_numba"] if `compiled` and the switch allows it, else namespace[name + "_numpy"].

    The one mechanism behind every module's `choose`: `namespace` is the module's globals(),
    `compiled` the module's measured rule for this call.
    """
    return namespace[name + ("_numba" if compiled and use_numba() else "_numpy")]
