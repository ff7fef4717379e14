"""Autograd overhead: tinyar against hand-written NumPy and (if installed) PyTorch.

(a) per-op overhead: a chain of small elementwise ops (y <- y * w + c on 16
    floats), forward and backward, per op; and one op with its own backward call.
(b) one SGD step (forward, backward, update) of an MLP 784-1000-1000-10 with
    ReLUs and softmax cross-entropy, batch 128, float32.

Every variant runs in this one process, in blocks after a warm-up, the blocks
repeated three times; the table quotes medians and ratios. Run it alone on the machine:

    flock /tmp/tinyar-heavy.lock python benchmarks/bench_autograd.py

Goals: the MLP step within 1.2x of hand-written NumPy; the per-op
overhead within 3x of PyTorch's.
"""
from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import time

# PyTorch's OpenMP threads spin for a while after each parallel region; interleaved with NumPy's
# OpenBLAS threads on 2 cores that made every column several times slower. Let them sleep instead.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))     # benchmarks/common.py, from any cwd
import common                       # noqa: E402  (also puts the repo root on sys.path: run from a checkout)

import numpy as np                  # noqa: E402

from tinyar import Tensor, functional as F, ops     # noqa: E402
from tinyar.nn import Linear, Module                # noqa: E402
from tinyar.optim import SGD                        # noqa: E402

torch = common.optional_torch()     # the PyTorch columns are optional

CHAIN, SMALL = 100, 16
SIZES, BATCH, LR = (784, 1000, 1000, 10), 128, 0.01


def measure(fns, rounds, warmup=3, passes=3):
    """Median seconds per call of each function.

    Each variant runs in blocks (warm-up calls, then timed calls), and the sequence
    of blocks is repeated `passes` times so that slow drift hits all variants alike.
    Blocks rather than strict alternation: NumPy's and PyTorch's thread pools linger
    after each call and slow down whichever library runs right after the other.
    """
    times = {name: [] for name in fns}
    for _ in range(passes):
        for name, fn in fns.items():
            for _ in range(warmup):
                fn()
            for _ in range(max(1, rounds // passes)):
                t0 = time.perf_counter()
                fn()
                times[name].append(time.perf_counter() - t0)
    return {name: statistics.median(t) for name, t in times.items()}


# --------------------------------------------------------- (a) per-op overhead
def chain_fns():
    """y_0 = x, y_k = y_{k-1} * w + c (2 ops per link), L = sum(y_n); gradient w.r.t. x and w."""
    rng = np.random.default_rng(0)
    x0 = rng.standard_normal(SMALL).astype(np.float32)
    w0 = rng.uniform(0.9, 1.1, SMALL).astype(np.float32)
    links = CHAIN // 2
    fns = {}

    x, w = Tensor(x0, requires_grad=True), Tensor(w0, requires_grad=True)

    def tinyar_chain():
        x.grad = w.grad = None
        y = x
        for _ in range(links):
            y = y * w + 0.5
        y.sum().backward()
    fns["tinyar"] = tinyar_chain

    def numpy_chain():
        ys = [x0]
        for _ in range(links):                          # forward, keeping what backward needs
            ys.append(ys[-1] * w0 + np.float32(0.5))
        dy = np.ones_like(x0)
        dw = np.zeros_like(w0)
        for k in range(links, 0, -1):                   # backward: dy_{k-1} = dy_k * w,  dw += dy_k * y_{k-1}
            dw += dy * ys[k - 1]
            dy = dy * w0
        return dy, dw
    fns["numpy"] = numpy_chain

    if torch is not None:
        tx = torch.tensor(x0, requires_grad=True)
        tw = torch.tensor(w0, requires_grad=True)

        def torch_chain():
            tx.grad = tw.grad = None
            y = tx
            for _ in range(links):
                y = y * tw + 0.5
            y.sum().backward()
        fns["torch"] = torch_chain
    return fns


def single_op_fns():
    """One elementwise op, its sum and one backward call: the fixed cost of a tiny graph."""
    rng = np.random.default_rng(1)
    x0 = rng.standard_normal(SMALL).astype(np.float32)
    w0 = rng.standard_normal(SMALL).astype(np.float32)
    x, w = Tensor(x0, requires_grad=True), Tensor(w0, requires_grad=True)
    fns = {}

    def tinyar_one():
        x.grad = w.grad = None
        (x * w).sum().backward()
    fns["tinyar"] = tinyar_one

    def numpy_one():
        y = (x0 * w0).sum()
        dy = np.ones_like(x0)
        return y, dy * w0, dy * x0
    fns["numpy"] = numpy_one

    if torch is not None:
        tx, tw = torch.tensor(x0, requires_grad=True), torch.tensor(w0, requires_grad=True)

        def torch_one():
            tx.grad = tw.grad = None
            (tx * tw).sum().backward()
        fns["torch"] = torch_one
    return fns


# ------------------------------------------------------------- (b) MLP step
class MLP(Module):
    def __init__(self, sizes, rng):
        self.layers = [Linear(n_in, n_out, rng=rng) for n_in, n_out in zip(sizes[:-1], sizes[1:])]

    def forward(self, x):
        for layer in self.layers[:-1]:
            x = ops.relu(layer(x))
        return self.layers[-1](x)


def mlp_fns():
    rng = np.random.default_rng(2)
    x0 = rng.standard_normal((BATCH, SIZES[0])).astype(np.float32)
    y0 = rng.integers(0, SIZES[-1], BATCH)
    model = MLP(SIZES, rng)
    opt = SGD(model.parameters(), lr=LR)
    # the NumPy and PyTorch copies start from the same weights (they drift apart; that does not change timings)
    Ws = [layer.weight.data.copy() for layer in model.layers]
    bs = [layer.bias.data.copy() for layer in model.layers]
    fns = {}
    x = Tensor(x0)

    def tinyar_step():
        opt.zero_grad()
        loss = F.cross_entropy(model(x), y0).mean()
        loss.backward()
        opt.step()
    fns["tinyar"] = tinyar_step

    rows = np.arange(BATCH)

    def numpy_step():
        hs, pre = [x0], []
        for W, b in zip(Ws[:-1], bs[:-1]):              # h_{l+1} = relu(h_l W_l^T + b_l)
            a = hs[-1] @ W.T + b
            pre.append(a)
            hs.append(np.maximum(a, 0))
        z = hs[-1] @ Ws[-1].T + bs[-1]                  # logits (B, 10)
        z = z - z.max(axis=1, keepdims=True)
        e = np.exp(z)
        s = e.sum(axis=1, keepdims=True)
        loss = (np.log(s[:, 0]) - z[rows, y0]).mean()
        dz = e / s                                      # dL/dz = (softmax - onehot) / B
        dz[rows, y0] -= 1
        dz /= BATCH
        for l in range(len(Ws) - 1, -1, -1):
            dW, db = dz.T @ hs[l], dz.sum(axis=0)
            if l > 0:
                dz = (dz @ Ws[l]) * (pre[l - 1] > 0)
            Ws[l] -= LR * dW
            bs[l] -= LR * db
        return loss
    fns["numpy"] = numpy_step

    if torch is not None:
        tWs = [torch.tensor(W, requires_grad=True) for W in Ws]
        tbs = [torch.tensor(b, requires_grad=True) for b in bs]
        tx, ty = torch.tensor(x0), torch.tensor(y0)
        topt = torch.optim.SGD(tWs + tbs, lr=LR)

        def torch_step():
            topt.zero_grad(set_to_none=True)
            h = tx
            for W, b in zip(tWs[:-1], tbs[:-1]):
                h = torch.relu(h @ W.T + b)
            loss = torch.nn.functional.cross_entropy(h @ tWs[-1].T + tbs[-1], ty)
            loss.backward()
            topt.step()
        fns["torch"] = torch_step
    return fns


def report(name, shape, times, per=1):
    t, np_t = times["tinyar"] / per, times["numpy"] / per
    torch_t = times.get("torch")
    torch_cols = f"{torch_t / per * 1e6:10.1f}  {t / (torch_t / per):8.2f}x" if torch_t else f"{'-':>10}  {'-':>9}"
    print(f"{name:<30} {shape:<22} {t * 1e6:10.1f}  {np_t * 1e6:10.1f}  {torch_cols}  {t / np_t:8.2f}x")


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=30, help="timed rounds per variant (median quoted)")
    args = parser.parse_args(argv)

    print(f"Python {platform.python_version()}, NumPy {np.__version__}, "
          f"PyTorch {torch.__version__ if torch else 'not installed'} "
          f"(threads: {torch.get_num_threads() if torch else '-'})")
    print(f"{'what':<30} {'shape':<22} {'tinyar us':>10}  {'numpy us':>10}  {'torch us':>10}  "
          f"{'vs torch':>9}  {'vs numpy':>9}")
    report("elementwise op, fwd+bwd, per op", f"chain of {CHAIN}, ({SMALL},)",
           measure(chain_fns(), args.rounds * 10), per=CHAIN)
    report("one op + sum + backward()", f"({SMALL},)", measure(single_op_fns(), args.rounds * 100))
    report("MLP SGD step, float32", f"{'-'.join(map(str, SIZES))} B={BATCH}", measure(mlp_fns(), args.rounds))


if __name__ == "__main__":
    main()
