"""kernels.runtime.keep_freed_memory: freed blocks are reused, so a step's arrays cost no page
faults, and memory stays flat over many training steps."""
import ctypes
import resource
import tracemalloc

import numpy as np
import pytest

import tinyar
from tinyar import ops
from tinyar.kernels import runtime
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


class FakeLibc:
    """Stands in for glibc: records the mallopt calls and answers `answer` (1 = accepted)."""

    def __init__(self, answer):
        self.calls, self.answer = [], answer

    def mallopt(self, param, value):
        self.calls.append((param, value))
        return self.answer


@pytest.mark.parametrize("answer, kept", [(1, True), (0, False)])
def test_the_settings_are_made_once_per_process(monkeypatch, answer, kept):
    libc = FakeLibc(answer)
    monkeypatch.setattr(runtime, "_kept", None)                          # as in a fresh process
    monkeypatch.setattr(ctypes, "CDLL", lambda name: libc)
    assert [keep_freed_memory() for _ in range(3)] == [kept] * 3
    expected = [(runtime.M_MMAP_THRESHOLD, 32 << 20), (runtime.M_TRIM_THRESHOLD, 1 << 30)]
    assert libc.calls == (expected if kept else expected[:1])           # once; no second setting after a refusal


def test_without_mallopt_nothing_is_changed(monkeypatch):
    def no_libc(name):
        raise OSError(f"{name}: cannot open shared object file")
    monkeypatch.setattr(runtime, "_kept", None)
    monkeypatch.setattr(ctypes, "CDLL", no_libc)
    assert keep_freed_memory() is False
    assert tinyar.keep_freed_memory is keep_freed_memory


def training_step(w, x, keep=None):
    """One step of L = sum(tanh(x * w)^2) by SGD; each step allocates arrays of 1 MB. keep: a list
    that holds every step's graph (a leak, to show that the measurement sees one)."""
    w.grad = None
    loss = (ops.tanh(x * w) ** 2.0).sum()                  # (256, 512) float64 activations: 1 MB each
    loss.backward()
    w.data -= 1e-4 * w.grad
    if keep is not None:
        keep.append(loss)


def test_memory_stays_flat_over_training_steps():
    """No array outlives its step: the bytes NumPy holds (traced by tracemalloc, whatever the
    heap kept from earlier tests) are the same after 20 steps, and grow when graphs are kept."""
    rng = np.random.default_rng(0)
    w = tinyar.Tensor(rng.standard_normal(512), requires_grad=True)
    x = tinyar.Tensor(rng.standard_normal((256, 512)))
    tracemalloc.start()
    try:
        for _ in range(3):                                 # warm up
            training_step(w, x)
        before = tracemalloc.get_traced_memory()[0]
        for _ in range(20):
            training_step(w, x)
        growth = tracemalloc.get_traced_memory()[0] - before
        graphs = []
        for _ in range(20):                                # the same steps, each graph kept alive
            training_step(w, x, keep=graphs)
        leaked = tracemalloc.get_traced_memory()[0] - before - growth
    finally:
        tracemalloc.stop()
    assert growth < 1 << 20, f"live memory grew by {growth / 2**20:.1f} MB over 20 steps"
    assert leaked > 20 << 20, f"keeping 20 graphs added only {leaked / 2**20:.1f} MB: the measure cannot see a leak"
