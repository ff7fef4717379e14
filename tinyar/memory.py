"""Keeping freed memory for reuse: a training step's arrays without page faults.

A training step allocates and frees the same large arrays every time (a Transformer step
at B = 32, T = 128: ~100 MB in arrays of up to 8 MB). glibc's malloc serves blocks above
its mmap threshold (128 kB at start, raised as large blocks are freed) straight from the
operating system, and gives freed memory at the top of its heap back once more than the
trim threshold is free. The next step then touches fresh pages, and each first touch of a
4 kB page is a page fault: we counted ~20,000 per Transformer step, 30-45 ms of a 120-170
ms step (benchmarks/README.md, "Page faults"). Whether it happens depends on the process's
history, so the same step can be fast in one process and slow in the next.

keep_freed_memory() fixes both thresholds: blocks of up to 32 MB (the most glibc allows)
come from the heap, and the heap is not trimmed below 1 GB free, so freed blocks are
reused and stay mapped. The price: a process keeps the memory of its largest step until
it exits, which a training run does anyway. train.fit calls it; call it yourself before a
hand-written training loop. Other C libraries (macOS, musl) are left as they are.
"""
import ctypes
import ctypes.util

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
