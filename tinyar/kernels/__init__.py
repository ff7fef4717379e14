"""numba kernels and their NumPy twins, on plain arrays.

Each topic module (nade.py, masked.py, rnn.py, conv.py) holds `@numba.njit(cache=True)`
functions and a NumPy twin of each with the same signature; the twin reads like the
equations and is the kernel's specification (tests assert that they agree).

Set the environment variable TINYAR_KERNELS=numpy to make every fused op call the
NumPy twins instead: for reading, stepping through in a debugger, and checking.
"""
import os


def use_numba():
    """False when TINYAR_KERNELS=numpy: every fused op then calls the NumPy twins."""
    return os.environ.get("TINYAR_KERNELS", "numba").lower() != "numpy"
