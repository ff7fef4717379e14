"""kernels.runtime.keep_freed_memory: freed blocks are reused, so a step's arrays cost no page faults."""
import resource

import numpy as np
import pytest

import tinyar
from tinyar.kernels.runtime import keep_freed_memory


def minor_faults():
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt


def test_a_freed_block_is_reused_without_page_faults():
    if not keep_freed_memory():
        pytest.skip("not glibc: malloc's defaults are kept")
    n = (8 << 20) // 8                                     # 8 MB: above glibc's default mmap threshold
    a = np.ones(n)
    del a
    before = minor_faults()
    b = np.ones(n)                                         # the same 2,048 pages, already mapped
    faults = minor_faults() - before
    assert b.sum() == n
    assert faults < 200, f"{faults} page faults re-allocating a freed 8 MB block"


def test_idempotent_and_exported():
    assert keep_freed_memory() == keep_freed_memory()
    assert tinyar.keep_freed_memory is keep_freed_memory
