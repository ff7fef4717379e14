"""Vanishing and exploding gradients in recurrent networks, read off autograd.

A loss at the last step of a T-step sequence, L = w . h_T, is backpropagated
through time; for every earlier state we read ||dL/dh_t|| (h_t.retain_grad())
and plot it against the distance T - t from the loss. Backprop multiplies by one
Jacobian per step,

    tanh RNN:  dL/dh_{t-1} = (dL/dh_t * (1 - h_t^2)) @ W_hh
    LSTM:      along the cell, dL/dc_{t-1} = dL/dc_t * sigma(f_t)   (+ paths through the gates)

so the norm behaves like a product of T - t factors. Four networks, as initialised,
on the same random character ids (H = 32, T = 100; --quick: H = 16, T = 30):

  tanh RNN, default init (W_hh ~ U(+-1/sqrt(H)), spectral radius ~0.6): the norm
      falls geometrically; expect below 1e-6 of its value at distance 0 after 60 steps.
  tanh RNN, W_hh = 2 x a random orthogonal matrix: the norm grows geometrically
      (exploding gradients); expect over 1e5 times its value at distance 0 after 99 steps.
  LSTM, forget-gate bias 1 (the usual init): decays, but more slowly than tanh.
  LSTM, forget-gate bias 3 (sigma(3) = 0.95): the cell carries the gradient; expect
      it to stay within a factor of 100 of its value at distance 1 all the way back.

The tanh steps here are nn.ElmanRNN.step, the same cell that the fused numba op
runs; tests/kernels/test_rnn.py asserts the two give the same gradients. Prints
a table of norms at a few distances and writes one PNG (log scale).

    python demos/rnn_gradients.py [--quick] [--out rnn_gradients.png]
"""
from __future__ import annotations

import argparse
import os

import numpy as np

from tinyar import nn, ops
from tinyar.tensor import Tensor


def gradient_norms(hs, w):
    """||dL/dh_t|| for L = sum(w * h_T), by distance T - t = 0, 1, ..., T-1 (mean over the batch)."""
    for h in hs:
        h.retain_grad()
    ops.sum_(hs[-1] * Tensor(w)).backward()
    B = w.shape[0]
    return np.array([np.linalg.norm(h.grad) / np.sqrt(B) for h in reversed(hs)])


def networks(V, H, seed=1):
    """The four networks of the docstring: name -> a function of the ids giving h_1..h_T."""
    rng = np.random.default_rng(seed)
    default = nn.ElmanRNN(V, H, rng=seed, dtype=np.float64)
    large = nn.ElmanRNN(V, H, rng=seed, dtype=np.float64)
    q, _ = np.linalg.qr(rng.standard_normal((H, H)))
    large.W_hh.data = 2.0 * q                                  # all singular values 2
    lstm1 = nn.LSTMCell(V, H, rng=seed, dtype=np.float64)     # forget bias 1 (its default)
    lstm3 = nn.LSTMCell(V, H, rng=seed, dtype=np.float64)
    lstm3.b.data[H:2 * H] = 3.0
    zeros = lambda x: Tensor(np.zeros((x.shape[0], H)))
    return {
        "tanh RNN, default init": lambda x: default.unrolled(x, zeros(x)),
        "tanh RNN, W_hh = 2 x orthogonal": lambda x: large.unrolled(x, zeros(x)),
        "LSTM, forget bias 1": lambda x: lstm1.unrolled(x),
        "LSTM, forget bias 3": lambda x: lstm3.unrolled(x),
    }


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="H = 16, T = 30 (for the tests)")
    parser.add_argument("--out", default="rnn_gradients.png", help="PNG file, or a folder to write rnn_gradients.png in")
    args = parser.parse_args(argv)
    T, H, V, B = (30, 16, 10, 4) if args.quick else (100, 32, 10, 8)
    rng = np.random.default_rng(0)
    x = rng.integers(0, V, (B, T))                             # random character ids
    w = rng.standard_normal((B, H))

    curves = {name: gradient_norms(run(x), w) for name, run in networks(V, H).items()}

    distances = [d for d in (0, 1, 5, 10, 20, 30, 60, 99) if d < T]
    print(f"||dL/dh_t|| at distance T - t from the loss (T = {T}, H = {H})")
    print(f"{'network':<34}" + "".join(f"{d:>11}" for d in distances))
    for name, norms in curves.items():
        print(f"{name:<34}" + "".join(f"{norms[d]:11.3g}" for d in distances))

    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for name, norms in curves.items():
        ax.semilogy(np.arange(T), np.maximum(norms, 1e-300), label=name)
    ax.set_xlabel("distance T - t from the loss (steps back in time)")
    ax.set_ylabel("||dL/dh_t||")
    ax.set_title("Backpropagation through time: vanishing and exploding gradients")
    ax.legend(fontsize=8)
    fig.tight_layout()
    out = os.path.join(args.out, "rnn_gradients.png") if os.path.isdir(args.out) else args.out
    fig.savefig(out, dpi=100)
    print(f"wrote {out}")
    return curves


if __name__ == "__main__":
    main()
