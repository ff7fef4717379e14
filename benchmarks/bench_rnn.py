"""RNN speed: forward + backward of the char model, numba kernel vs NumPy twin vs PyTorch nn.RNN.

    flock /tmp/tinyar-heavy.lock python benchmarks/bench_rnn.py [--threads 1]   (about a minute)

Sizes of the issue: T = 100, B = 32, H = 128, vocabulary 96, float32.

1. The recurrence alone, forward + backward (a sum of all h_t as the loss):
   fused.elman_rnn on the numba kernels; the same op on the NumPy twins
   (TINYAR_KERNELS=numpy: a Python loop over time); the cell unrolled into T steps
   of primitive ops (nn.ElmanRNN.unrolled: ~7 graph nodes a step); torch.nn.RNN
   (one-hot inputs, as a char-RNN feeds it).
2. The whole char model, forward + backward of the mean NLL (models.RNN: the
   embedding column lookup, the recurrence, the output layer, log-softmax): numba,
   twin, and the same model in PyTorch (nn.RNN + nn.Linear + cross_entropy).

Medians of repeated runs after a warm-up (numba compiles on the first call). BLAS
and PyTorch run on --threads threads (default 1: on this shared 2-core machine a
second thread mostly waits; the per-step matrices are small).
"""
from __future__ import annotations

import argparse
import functools
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))     # benchmarks/common.py, from any cwd
import common                                       # noqa: E402  (also puts the repo root on sys.path)
from common import kernels                          # noqa: E402

_threads = common.set_threads("1")                  # before NumPy starts its BLAS threads

import numpy as np                                  # noqa: E402

from tinyar import ops                                     # noqa: E402
from tinyar.models import RNN                       # noqa: E402
from tinyar.nn import ElmanRNN                      # noqa: E402
from tinyar.tensor import Tensor                    # noqa: E402

torch = common.optional_torch()                     # the PyTorch columns are optional

T, B, H, V = 100, 32, 128, 96


median_time = functools.partial(common.median_time, repeat=15, warmup=3)


def recurrence_rows(x):
    layer = ElmanRNN(V + 1, H, rng=0)
    h0 = Tensor(np.zeros((B, H), np.float32))

    def fused_op():
        layer.zero_grad()
        ops.sum_(layer(x, h0)).backward()

    def unrolled():
        layer.zero_grad()
        ops.sum_(ops.stack(layer.unrolled(x, h0), axis=1)).backward()

    rows = []
    with kernels("numba"):
        rows.append(("tinyar fused op, numba kernel", median_time(fused_op)))
    with kernels("numpy"):
        rows.append(("tinyar fused op, NumPy twin", median_time(fused_op)))
    rows.append(("tinyar unrolled primitive ops", median_time(unrolled, repeat=5, warmup=1)))
    if torch is not None:
        rnn = torch.nn.RNN(V + 1, H, nonlinearity="tanh", batch_first=True)
        xt = torch.from_numpy(x)

        def torch_step():
            rnn.zero_grad()
            out, _ = rnn(torch.nn.functional.one_hot(xt, V + 1).float())
            out.sum().backward()
        rows.append(("PyTorch nn.RNN", median_time(torch_step)))
    return rows


def model_rows(x):
    model = RNN(V, n_hidden=H, seq_len=T, rng=0)

    def step():
        model.zero_grad()
        model.nll(x).backward()

    rows = []
    with kernels("numba"):
        rows.append(("tinyar RNN, numba kernel", median_time(step)))
    with kernels("numpy"):
        rows.append(("tinyar RNN, NumPy twin", median_time(step)))
    if torch is not None:
        class CharRNN(torch.nn.Module):
            def __init__(self):
                super().__init__()
                self.rnn = torch.nn.RNN(V + 1, H, nonlinearity="tanh", batch_first=True)
                self.head = torch.nn.Linear(H, V)

            def nll(self, x):
                inputs = torch.cat([torch.full((x.shape[0], 1), V), x[:, :-1]], dim=1)   # <s> then x_<T
                out, _ = self.rnn(torch.nn.functional.one_hot(inputs, V + 1).float())
                logits = self.head(out)
                return torch.nn.functional.cross_entropy(logits.reshape(-1, V), x.reshape(-1),
                                                         reduction="sum") / x.shape[0]
        net = CharRNN()
        xt = torch.from_numpy(x)

        def torch_step():
            net.zero_grad()
            net.nll(xt).backward()
        rows.append(("PyTorch nn.RNN + Linear", median_time(torch_step)))
    return rows


def print_table(title, rows):
    base = dict(rows)
    ref = rows[0][1]
    print(f"\n{title}")
    print(f"{'variant':<34}{'ms':>10}{'x numba':>10}")
    for name, t in rows:
        print(f"{name:<34}{t * 1e3:10.2f}{t / ref:10.2f}")
    return base


def main(argv=None):
    parser = argparse.ArgumentParser(description="RNN forward + backward timings")
    parser.add_argument("--threads", type=int, default=1, help="BLAS and PyTorch threads (default 1)")
    args = parser.parse_args(argv)
    if torch is not None:
        torch.set_num_threads(args.threads)
    x = np.random.default_rng(0).integers(0, V, (B, T))
    print(f"T = {T}, B = {B}, H = {H}, vocabulary {V}, float32, {args.threads} thread(s); "
          f"NumPy {np.__version__}" + (f", PyTorch {torch.__version__}" if torch is not None else ", no PyTorch"))
    print_table("1. the recurrence alone (forward + backward)", recurrence_rows(x))
    print_table("2. the char model, mean NLL (forward + backward)", model_rows(x))


if __name__ == "__main__":
    main()
