"""NADE's caching: sharing W turns an O(D^2 H) likelihood into an O(D H) one.

NADE gives each conditional its own hidden layer, h_i = sigmoid(c + sum_{j<i} W[:, j] x_j),
but all of them share W and c. Computed from scratch, conditional i costs O(i H), so
log p(x) costs O(D^2 H). Since a_{i+1} = a_i + W[:, i] x_i, keeping a running
pre-activation costs O(H) per step: O(D H) in all [Larochelle & Murray 2011].

The demo times, for D = 16 .. 2048 (H = 100, a batch of 64 random binary vectors):

    uncached     the conditionals written from scratch in NumPy (one (B, i) @ (i, H)
                 product per dimension: O(D^2 H)), in this file
    cached NumPy the running sum, NumPy (kernels/nade.py: nade_forward_numpy, the twin)
    cached numba the same recursion compiled (kernels/nade.py: nade_forward_numba, what
                 tinyar.models.NADE.log_prob runs through fused.nade)

and checks that the uncached evaluation gives the same log-likelihoods as model.log_prob
(which runs the kernel; printed: ~1e-5 apart in float32, ~1e-4 at D = 2048; the kernel and
its twin are checked against each other in tests/kernels/test_nade.py). All on one thread.

Expected figure (nade_caching.png): log-log time against D. The cached lines have slope
~1 (0.92 and 0.96 measured over D >= 256); the uncached one bends up towards slope 2
(1.76 over D >= 256; from D = 1024 to 2048 the time quadruples, 113 -> 464 ms), since
BLAS makes its many small products cheap at small D. At D = 2048 the uncached evaluation
is 5x slower than the cached NumPy twin and 32x slower than the numba kernel. Runs in
~20 s (--quick: D up to 64, ~2 s).

    python demos/nade_caching.py [--quick] [--out DIR]
"""
from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np

from tinyar import fused, metrics
from tinyar.kernels import nade as K
from tinyar.models import NADE


def log_p_uncached(model, x):
    """log p(x) with every hidden layer computed from scratch: O(D^2 H). x (B, D) binary."""
    W = model.W.data[:, 0, :]                          # (D, H)   W[d] = the notes' column W[:, d]
    V = model.V.data[:, 0, :]                          # (D, H)
    b = model.b.data[:, 0]                             # (D,)
    c = model.c.data                                   # (H,)
    order = model.order
    total = np.zeros(len(x))
    for i, d in enumerate(order):
        seen = order[:i]                               # the dimensions before d
        a = c + x[:, seen] @ W[seen]                   # (B, H)  a_i = c + sum_{j<i} W[:, o_j] x_{o_j}: O(i H)
        h = 1.0 / (1.0 + np.exp(-a))                   # (B, H)
        z = h @ V[d] + b[d]                            # (B,)    logit of p(x_d = 1 | x_<d)
        total += x[:, d] * z - np.logaddexp(0.0, z)    # log sigmoid(z) if x_d = 1, log sigmoid(-z) if 0
    return total


def best_time(f, repeats):
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        f()
        times.append(time.perf_counter() - t0)
    return min(times)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="D up to 64 (for the tests)")
    parser.add_argument("--out", default="nade_caching", help="folder for the PNG")
    args = parser.parse_args(argv)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)

    from tinyar.kernels import NUMBA_ERROR, numba
    if NUMBA_ERROR is None:                                                # numba installed
        numba.set_num_threads(1)                                           # compare algorithms, not cores
    try:                                                                   # and NumPy's BLAS on one thread too
        from threadpoolctl import threadpool_limits
        threadpool_limits(1)
    except ImportError:
        pass
    dims = [8, 16, 32, 64] if args.quick else [16, 32, 64, 128, 256, 512, 1024, 2048]
    H, B, repeats = (100, 16, 2) if args.quick else (100, 64, 5)
    rng = np.random.default_rng(0)
    rows = []
    for D in dims:
        model = NADE(D, n_hidden=H, rng=rng)
        model.b.data[...] = rng.standard_normal(model.b.shape)
        x = (rng.random((B, D)) < 0.3).astype(np.float32)
        args_k = (x[:, :, None], model.order, model.W.data, model.c.data, model.V.data, model.b.data)
        K.nade_forward_numba(*args_k)                                      # compile once (cached on disk)
        reference = metrics.log_likelihoods(model, x)                      # model.log_prob
        error = np.abs(log_p_uncached(model, x) - reference).max()
        t_naive = best_time(lambda: log_p_uncached(model, x), repeats)
        t_numpy = best_time(lambda: K.nade_forward_numpy(*args_k), repeats)
        t_numba = best_time(lambda: K.nade_forward_numba(*args_k), repeats)
        rows.append((D, t_naive, t_numpy, t_numba))
        # multiply-adds of the hidden pre-activations: sum_i (i - 1) H uncached, D H cached
        print(f"D = {D:5d}: uncached {1e3 * t_naive:9.2f} ms   cached NumPy {1e3 * t_numpy:8.2f} ms   "
              f"cached numba {1e3 * t_numba:8.2f} ms   |uncached - log_prob| = {error:.1e}")
    rows = np.array(rows)
    big = slice(len(dims) // 2, None)                                      # slopes over the larger D
    slopes = [np.polyfit(np.log(rows[big, 0]), np.log(rows[big, k]), 1)[0] for k in (1, 2, 3)]
    print(f"log-log slopes (time ~ D^s) over D >= {dims[len(dims) // 2]}: uncached {slopes[0]:.2f}, "
          f"cached NumPy {slopes[1]:.2f}, cached numba {slopes[2]:.2f}")
    print(f"at D = {dims[-1]}: uncached / cached NumPy = {rows[-1, 1] / rows[-1, 2]:.1f}x, "
          f"uncached / numba = {rows[-1, 1] / rows[-1, 3]:.1f}x")

    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, ax = plt.subplots(figsize=(6.5, 4.5))
    labels = ["uncached: O(D^2 H)", "cached, NumPy twin: O(D H)", "cached, numba kernel: O(D H)"]
    for k, (label, s) in enumerate(zip(labels, slopes), start=1):
        ax.loglog(rows[:, 0], 1e3 * rows[:, k], "o-", label=f"{label}   slope {s:.2f}")
    ax.set_xlabel("D (dimensions)")
    ax.set_ylabel(f"ms for log p of {B} vectors (H = {H})")
    ax.set_title("NADE: the running pre-activation a_(i+1) = a_i + W[:, i] x_i")
    ax.legend(fontsize=8)
    ax.grid(True, which="both", alpha=0.3)
    fig.tight_layout()
    fig.savefig(out / "nade_caching.png", dpi=100)
    plt.close(fig)
    print(f"wrote {out}/nade_caching.png")
    return dict(dims=dims, slopes=slopes)


if __name__ == "__main__":
    main()
