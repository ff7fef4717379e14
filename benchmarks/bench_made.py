"""MADE speed: one SGD step, numba masked matmul vs NumPy twin vs PyTorch; and the kernels alone.

    flock /tmp/tinyar-heavy.lock python benchmarks/bench_made.py [--threads 2] [--repeat 15] [--kernels]

1. One SGD step (forward, backward of the mean NLL, SGD momentum update) of MADE
   784-500-500-784 at batch 100 in float32, one mask, natural order, side by side in one process:
   - auto:   tinyar's default, here the staircase kernels on every layer (BLAS products on
             blocks of rows that skip the masked-out corner, spread over the cores by numba;
             kernels.masked, "the staircase in place");
   - numba:  every masked layer on the numba loops (they skip zero inputs and the masked-out
             suffix of every column);
   - NumPy:  every masked layer on the twin x @ (W*M).T (TINYAR_KERNELS=numpy);
   - PyTorch: the same network written the usual way, F.linear(h, W * M, b), with torch.optim.SGD.
   Two inputs: x ~ Bernoulli(0.5) (dense) and Bernoulli(0.13) (MNIST-like: ~13% of binarized
   MNIST pixels are 1).
2. With --kernels: forward and dW of single masked layers, numba vs twin, over input densities:
   the measurements behind prefer_numba's constants.

Like train.fit, the script first asks glibc to keep freed memory for reuse
(tinyar.keep_freed_memory; PyTorch, in the same process, gets the same). Timings are
medians of --repeat runs after a warm-up. Threads: BLAS, numba and PyTorch use
--threads (default 2, the machine's cores); the numba loops are single-threaded.
"""
from __future__ import annotations

import argparse
import functools
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))     # benchmarks/common.py, from any cwd
import common                                       # noqa: E402  (also puts the repo root on sys.path)

_threads = common.set_threads("2", numba=True)      # before NumPy and torch start their threads

import numpy as np                                  # noqa: E402

from tinyar import keep_freed_memory                 # noqa: E402
from tinyar.kernels import masked as K              # noqa: E402
from tinyar.models import MADE                      # noqa: E402
from tinyar.optim import SGD                        # noqa: E402

torch = common.optional_torch()                     # the PyTorch column is optional

B, D, HIDDEN = 100, 784, [500, 500]


median_time = functools.partial(common.median_time, warmup=2)


class kernels_as(common.kernels):
    """Inside this block every masked layer uses `mode`: "auto", "numba" or "numpy"."""

    def __init__(self, mode):
        super().__init__("numpy" if mode == "numpy" else None)      # TINYAR_KERNELS=numpy only for "numpy"
        self.mode = mode

    def __enter__(self):
        self.saved = K.prefer_numba, K.staircase_in_place
        if self.mode == "numba":                                    # the loops, not the staircase blocks
            K.prefer_numba = lambda batch, work: True
            K.staircase_in_place = lambda M, perm, start: False   # for masks set from now on
        return super().__enter__()

    def __exit__(self, *exc):
        K.prefer_numba, K.staircase_in_place = self.saved
        return super().__exit__(*exc)


def tinyar_step(model, optimizer, x):
    optimizer.zero_grad()
    loss = model.nll(x)
    loss.backward()
    optimizer.step()
    return float(loss.data)


def torch_step_fn(model, x):
    """The same MADE in PyTorch (same weights and masks), and one SGD step of it."""
    layers = model.layers + [model.output]
    Ws = [torch.tensor(l.weight.data.copy(), requires_grad=True) for l in layers]
    bs = [torch.tensor(l.bias.data.copy(), requires_grad=True) for l in layers]
    Ms = [torch.tensor(l.mask) for l in layers]
    opt = torch.optim.SGD(Ws + bs, lr=0.01, momentum=0.9)
    xt = torch.tensor(x)
    F = torch.nn.functional

    def step():
        opt.zero_grad()
        h = xt
        for i, (W, b, M) in enumerate(zip(Ws, bs, Ms)):
            h = F.linear(h, W * M, b)
            if i < len(Ws) - 1:
                h = torch.relu(h)
        loss = F.binary_cross_entropy_with_logits(h, xt, reduction="none").sum(1).mean()
        loss.backward()
        opt.step()
        return float(loss.detach())
    return step


def bench_step(repeat):
    print(f"One SGD step of MADE {D}-{'-'.join(map(str, HIDDEN))}-{D}, batch {B}, float32 "
          f"(median of {repeat}, threads {_threads}; ms)")
    header = f"{'input':<22}{'auto':>9}{'numba':>9}{'NumPy':>9}{'PyTorch':>9}   numba/NumPy  auto/PyTorch"
    print(header)
    print("-" * len(header))
    for density in (0.5, 0.13):
        x = (np.random.default_rng(1).random((B, D)) < density).astype(np.float32)
        row = {}
        losses = {}
        for mode in ("auto", "numba", "numpy"):
            with kernels_as(mode):                                  # the layers' masks are set in MADE(...)
                model = MADE(D, n_hidden=HIDDEN, rng=0)
                optimizer = SGD(model.parameters(), lr=0.01, momentum=0.9)
                losses[mode] = tinyar_step(model, optimizer, x)
                row[mode] = median_time(lambda: tinyar_step(model, optimizer, x), repeat)
        if torch is not None:
            torch.set_num_threads(int(_threads))
            step = torch_step_fn(MADE(D, n_hidden=HIDDEN, rng=0), x)
            losses["torch"] = step()
            row["torch"] = median_time(step, repeat)
        first = list(losses.values())
        assert max(first) - min(first) < 1e-2 * abs(first[0]), f"the implementations disagree: {losses}"
        t = row.get("torch", float("nan"))
        print(f"{'Bernoulli(%.2f)' % density:<22}{row['auto'] * 1e3:9.2f}{row['numba'] * 1e3:9.2f}"
              f"{row['numpy'] * 1e3:9.2f}{t * 1e3:9.2f}   {row['numba'] / row['numpy']:11.2f}"
              f"  {row['auto'] / t:12.2f}")


def bench_kernels(repeat):
    print(f"\nOne masked layer, batch {B}, float32, MADE masks (median of {repeat}; ms): "
          "forward and dW, numba vs NumPy twin")
    header = f"{'layer':<14}{'mask':>6}{'x nonzero':>11}{'work':>7}{'fwd numba':>11}{'fwd NumPy':>11}" \
             f"{'dW numba':>10}{'dW NumPy':>10}  rule says"
    print(header)
    print("-" * len(header))
    rng = np.random.default_rng(0)
    for n_in, n_out, n_dims in [(784, 500, 784), (500, 500, 784), (500, 784, 784), (1088, 500, 64)]:
        m_in, m_out = rng.integers(1, n_dims, n_in), rng.integers(1, n_dims, n_out)
        M = (m_out[:, None] >= m_in[None, :]).astype(np.float32)
        W = rng.standard_normal((n_out, n_in)).astype(np.float32)
        b = np.zeros(n_out, np.float32)
        dy = rng.standard_normal((B, n_out)).astype(np.float32)
        perm, start = K.mask_structure_numba(M)
        for density in (1.0, 0.5, 0.13, 0.06, 0.02):
            x = (rng.random((B, n_in)) < density).astype(np.float32)
            work = K.work_fraction(x, start, n_out)
            r = [median_time(lambda: f(x, W, M, b, perm, start), repeat)
                 for f in (K.masked_matmul_forward_numba, K.masked_matmul_forward_numpy)]
            r += [median_time(lambda: f(dy, x, M, perm, start), repeat)
                  for f in (K.masked_matmul_backward_weight_numba, K.masked_matmul_backward_weight_numpy)]
            rule = "numba" if K.prefer_numba(B, work) else "NumPy"
            print(f"{n_in:>5} -> {n_out:<5}{M.mean():6.2f}{density:11.2f}{work:7.3f}"
                  + "".join(f"{v * 1e3:{w}.3f}" for v, w in zip(r, (11, 11, 10, 10))) + f"  {rule}")
        r = [median_time(lambda: f(dy, W, M, perm, start), repeat)
             for f in (K.masked_matmul_backward_input_numba, K.masked_matmul_backward_input_numpy)]
        print(f"{n_in:>5} -> {n_out:<5} dx (dense dy): numba {r[0] * 1e3:.3f}, NumPy {r[1] * 1e3:.3f}")


def main():
    keep_freed_memory()              # as train.fit does: freed arrays reused, no page faults (tinyar/kernels/runtime.py)
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--threads", default="2", help="BLAS and PyTorch threads (set before they start)")
    p.add_argument("--repeat", type=int, default=15)
    p.add_argument("--kernels", action="store_true", help="also time single layers over input densities")
    args = p.parse_args()
    bench_step(args.repeat)
    if args.kernels:
        bench_kernels(args.repeat)


if __name__ == "__main__":
    main()
