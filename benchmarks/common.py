"""Helpers shared by the benchmark scripts in this folder (one copy of each).

A script imports it first, before NumPy, so that the thread settings take effect:

    import os
    import sys

    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))    # this folder, from any cwd
    from common import median_time, set_threads                       # noqa: E402
    _threads = set_threads("1")                                       # before NumPy starts its BLAS threads

    import numpy as np                                                # noqa: E402

Importing this module also puts the repository root first on sys.path, so that `tinyar`
is the checkout's. It does not import NumPy itself (median_time does, when first called).

- set_threads: BLAS/OpenMP (and optionally numba) thread counts from --threads, set in the
  environment before NumPy, numba or PyTorch start their thread pools;
- optional_torch: PyTorch, or None when it is not installed (its columns are optional);
- median_time: median seconds of repeated calls after a warm-up;
- kernels: a context manager that sets TINYAR_KERNELS ("numba" or "numpy") inside a block;
- status_bytes, reset_peak: this process's resident memory now and at its peak (Linux /proc).
"""
from __future__ import annotations

import os
import sys
import time

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if REPO_ROOT not in sys.path:
    sys.path.insert(0, REPO_ROOT)

BLAS_THREAD_VARIABLES = ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS")


def set_threads(default, numba=False, argv=None):
    """Set the thread variables to the value after --threads in argv (else `default`); return it.

    Must run before NumPy (and numba, PyTorch) is imported: their thread pools read the
    environment when they start. With numba=True, NUMBA_NUM_THREADS is set too.
    """
    argv = sys.argv if argv is None else argv
    threads = default
    for k, arg in enumerate(argv):
        if arg == "--threads" and k + 1 < len(argv):
            threads = argv[k + 1]
    for var in BLAS_THREAD_VARIABLES + (("NUMBA_NUM_THREADS",) if numba else ()):
        os.environ[var] = threads
    return threads


def optional_torch():
    """The torch module, or None if PyTorch is not installed (the PyTorch columns are optional)."""
    try:
        import torch
    except ImportError:
        return None
    return torch


def median_time(fn, repeat, warmup):
    """Median seconds of `repeat` timed calls of fn(), after `warmup` untimed calls (numba compiles then)."""
    import numpy as np
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return float(np.median(times))


class kernels:
    """Context manager: TINYAR_KERNELS=numpy (the NumPy twins) or numba inside the block.

    With None the variable is left as it is (and still restored on exit).
    """

    def __init__(self, which):
        self.which = which

    def __enter__(self):
        self.previous = os.environ.get("TINYAR_KERNELS")
        if self.which is not None:
            os.environ["TINYAR_KERNELS"] = self.which
        return self

    def __exit__(self, *exc):
        if self.previous is None:
            os.environ.pop("TINYAR_KERNELS", None)
        else:
            os.environ["TINYAR_KERNELS"] = self.previous


def status_bytes(field):
    """VmRSS (resident now) or VmHWM (peak resident since the last reset) of this process, in bytes."""
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1]) * 1024
    raise RuntimeError(f"no {field} in /proc/self/status")


def reset_peak():
    """Writing 5 to clear_refs resets VmHWM to the current VmRSS (Linux >= 4.0)."""
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")
