"""NADE speed and memory: forward + backward of the loss, numba kernel vs NumPy twin vs PyTorch.

    flock /tmp/tinyar-heavy.lock python benchmarks/bench_nade.py [--threads 2] [--repeat 7]

Sizes of the issue: B = 100, D = 784, H = 500, float32, binary inputs (MNIST-like: about
13% ones), the natural ordering.

1. Forward + backward of the mean NLL, side by side in one process:
   - numba: models.NADE.nll(x).backward(): the fused op fused.nade on the numba kernels
     (the cached recursion, O(B D H) time, O(B H) memory), then Bernoulli's log-probability;
   - NumPy twin: the same with TINYAR_KERNELS=numpy (a Python loop over the D steps, each a
     few (B, H) array operations);
   - PyTorch: the same NADE as one would write it with autograd: all pre-activations at once
     by a cumulative sum, A = c + cumsum(x_<d W^T) of shape (B, D, H), then sigmoid, the
     output layer and BCE-with-logits (O(B D H) time and memory: autograd keeps A and h).
2. Peak memory of one forward + backward, each in a fresh subprocess, after a warm-up on
   small inputs: the peak resident set during the call (VmHWM, reset just before it through
   /proc/self/clear_refs) minus the resident set just before it; and for the two NumPy-based
   paths the peak of tracemalloc (every NumPy array, nothing else).
3. Sampling 100 images of 784 pixels (H = 500): the numba sampler and its NumPy twin.

Threads: numba's parallel loops and PyTorch both use --threads (default 2, the machine's cores).
"""
from __future__ import annotations

import argparse
import functools
import json
import os
import subprocess
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))     # benchmarks/common.py, from any cwd
import common                                       # noqa: E402  (also puts the repo root on sys.path)

_threads = common.set_threads("2", numba=True)      # before NumPy, numba and torch start their threads

import numpy as np                                  # noqa: E402

from tinyar.models import NADE                      # noqa: E402

torch = common.optional_torch()                     # the PyTorch columns are optional

B, D, H = (10, 50, 20) if "--small" in sys.argv else (100, 784, 500)    # --small: a quick check that it runs


def make_data(seed=0):
    rng = np.random.default_rng(seed)
    x = (rng.random((B, D)) < 0.13).astype(np.float32)
    return x, NADE(D, n_hidden=H, rng=seed)


median_time = functools.partial(common.median_time, warmup=1)


def tinyar_step(model, x):
    model.zero_grad()
    loss = model.nll(x)
    loss.backward()
    return float(loss.data)


class TorchNADE:
    """The cumulative-sum NADE, with the same parameters as a tinyar NADE."""

    def __init__(self, model):
        self.W = torch.tensor(model.W.data[:, 0, :].T.copy(), requires_grad=True)    # (H, D)  the notes' W
        self.c = torch.tensor(model.c.data.copy(), requires_grad=True)               # (H,)
        self.V = torch.tensor(model.V.data[:, 0, :].copy(), requires_grad=True)      # (D, H)
        self.b = torch.tensor(model.b.data[:, 0].copy(), requires_grad=True)         # (D,)

    def nll(self, x):
        contrib = x[:, :, None] * self.W.T[None]                      # (B, D, H)  W[:, d] x_d
        A = self.c + torch.cumsum(contrib, dim=1) - contrib            # (B, D, H)  a_d = c + sum_{j<d} W[:, j] x_j
        h = torch.sigmoid(A)
        logits = (h * self.V).sum(-1) + self.b                          # (B, D)
        return torch.nn.functional.binary_cross_entropy_with_logits(logits, x, reduction="sum") / x.shape[0]

    def step(self, x):
        for p in (self.W, self.c, self.V, self.b):
            p.grad = None
        loss = self.nll(x)
        loss.backward()
        return loss.item()


# ------------------------------------------------------------------ memory (one subprocess per path)
def memory_child(path):
    """Run one forward + backward of `path` and print its memory figures as JSON."""
    import resource
    import tracemalloc
    x, model = make_data()
    small_x, small = x[:2, :20], NADE(20, n_hidden=8, rng=0)
    if path == "torch":
        torch.set_num_threads(int(_threads))
        tm = TorchNADE(model)
        xt = torch.from_numpy(x)
        TorchNADE(small).step(torch.from_numpy(small_x))           # warm-up on small inputs
        run = lambda: tm.step(xt)
    else:
        os.environ["TINYAR_KERNELS"] = path
        tinyar_step(small, small_x)                                 # warm-up (numba loads its compiled kernels)
        run = lambda: tinyar_step(model, x)
    common.reset_peak()
    before = common.status_bytes("VmRSS")
    traced = None
    if path != "torch":
        tracemalloc.start()
        run()
        traced = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
    else:
        run()
    peak = common.status_bytes("VmHWM")
    lifetime_peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    print(json.dumps(dict(path=path, rss_before=before, peak=peak, lifetime_peak=lifetime_peak,
                          extra=max(0, peak - before), traced=traced)))


def measure_memory(path):
    small = ["--small"] if "--small" in sys.argv else []
    out = subprocess.run([sys.executable, __file__, "--threads", _threads, "--memory-child", path] + small,
                         capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


# --------------------------------------------------------------------------------------- main
def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", default="2")
    parser.add_argument("--repeat", type=int, default=7)
    parser.add_argument("--small", action="store_true", help="tiny sizes: only checks that the script runs")
    parser.add_argument("--memory-child", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.memory_child:
        memory_child(args.memory_child)
        return

    x, model = make_data()
    rows = []
    os.environ["TINYAR_KERNELS"] = "numba"
    loss_numba = tinyar_step(model, x)
    grads_numba = [p.grad.copy() for p in model.parameters()]
    t_numba = median_time(lambda: tinyar_step(model, x), args.repeat)
    os.environ["TINYAR_KERNELS"] = "numpy"
    loss_numpy = tinyar_step(model, x)
    grads_numpy = [p.grad.copy() for p in model.parameters()]
    t_numpy = median_time(lambda: tinyar_step(model, x), max(3, args.repeat // 2), warmup=0)
    os.environ["TINYAR_KERNELS"] = "numba"
    agree = max(float(np.abs(a - b).max() / (np.abs(b).max() + 1e-30)) for a, b in zip(grads_numba, grads_numpy))
    t_torch = loss_torch = None
    if torch is not None:
        torch.set_num_threads(int(args.threads))
        tm = TorchNADE(model)
        xt = torch.from_numpy(x)
        loss_torch = tm.step(xt)
        t_torch = median_time(lambda: tm.step(xt), max(3, args.repeat // 2), warmup=0)

    # the kernels alone (no autograd around them)
    from tinyar.kernels import nade as K
    feats = x[:, :, None]
    arrays = [np.ascontiguousarray(p.data) for p in (model.W, model.c, model.V, model.b)]
    order = model.order
    out, a_last = K.nade_forward_numba(feats, order, *arrays)
    dout = np.ones_like(out)
    t_fwd = median_time(lambda: K.nade_forward_numba(feats, order, *arrays), args.repeat)
    t_bwd = median_time(lambda: K.nade_backward_numba(feats, order, *arrays, a_last, dout), args.repeat)

    # sampling 100 images of 784 pixels
    os.environ["TINYAR_KERNELS"] = "numba"
    model.sample(2, rng=0)
    t_sample = median_time(lambda: model.sample(100, rng=1), args.repeat)
    os.environ["TINYAR_KERNELS"] = "numpy"
    t_sample_np = median_time(lambda: model.sample(100, rng=1), 3, warmup=0)
    os.environ["TINYAR_KERNELS"] = "numba"

    memory = {path: measure_memory(path) for path in ["numba", "numpy"] + (["torch"] if torch else [])}

    mib = lambda n: f"{n / 2 ** 20:.1f} MiB" if n is not None else "-"
    print(f"NADE, B = {B}, D = {D}, H = {H}, float32, {args.threads} thread(s); "
          f"losses: numba {loss_numba:.4f}, twin {loss_numpy:.4f}"
          + (f", torch {loss_torch:.4f}" if loss_torch is not None else "")
          + f"; gradients numba vs twin: max relative difference {agree:.1e}\n")
    print("| what | numba | NumPy twin | PyTorch (cumsum) | twin / numba | PyTorch / numba |")
    print("|---|---|---|---|---|---|")
    torch_ms = f"{1e3 * t_torch:.0f} ms" if t_torch else "-"
    torch_ratio = f"{t_torch / t_numba:.1f}x" if t_torch else "-"
    print(f"| forward + backward of the mean NLL | {1e3 * t_numba:.1f} ms | {1e3 * t_numpy:.0f} ms | {torch_ms} | "
          f"{t_numpy / t_numba:.1f}x | {torch_ratio} |")
    extra = {p: memory[p]["extra"] for p in memory}
    print(f"| peak memory of one forward + backward (RSS growth) | {mib(extra['numba'])} | {mib(extra['numpy'])} | "
          f"{mib(extra.get('torch'))} | | {extra['torch'] / max(extra['numba'], 1):.0f}x |" if torch else "")
    print(f"| peak of NumPy arrays (tracemalloc) | {mib(memory['numba']['traced'])} | "
          f"{mib(memory['numpy']['traced'])} | - | | |")
    print(f"| process peak RSS during the call | {mib(memory['numba']['peak'])} | {mib(memory['numpy']['peak'])} | "
          f"{mib(memory['torch']['peak']) if torch else '-'} | | |")
    print(f"| sampling 100 images of 784 pixels | {1e3 * t_sample:.0f} ms | {1e3 * t_sample_np:.0f} ms | - | "
          f"{t_sample_np / t_sample:.1f}x | |")
    print(f"\nkernels alone (numba): forward {1e3 * t_fwd:.1f} ms, backward {1e3 * t_bwd:.1f} ms")


if __name__ == "__main__":
    main()
