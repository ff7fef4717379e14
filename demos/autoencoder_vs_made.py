"""An autoencoder is not a density model; the same network with MADE's masks is.

Both networks are the same one-hidden-layer network x -> h = relu(W_1 x + b_1) ->
z = W_2 h + b_2, with output i read as q_i = sigmoid(z_i), and both are trained with the
same loss, the reconstruction cross-entropy

    L(x) = -sum_i [x_i log q_i + (1 - x_i) log (1 - q_i)] = -log prod_i q_i(x_i)

on the same 10 pixels of the binarized digits. The difference is the masks [1, 2]:

  plain autoencoder   every output sees every input, x_i included. It can learn to copy
                      x_i to output i, so prod_i q_i(x_i) is near 1 for EVERY x: summed over
                      all 2^10 inputs these numbers give about 2^10, not 1. They are not a
                      distribution, and there is no way to sample: drawing x_1 needs q_1,
                      which needs x_1 (and every other x_j) first.
  MADE                masks make output i see only x_1..x_{i-1} (the connectivity matrix
                      M_2 M_1 is strictly lower triangular), so q_i = p(x_i | x_<i) and
                      prod_i q_i(x_i) = p(x) by the chain rule: the sum over all 2^10 inputs
                      is exactly 1, and x_1, x_2, ... can be drawn in turn.

What to expect (seed 0, 40 epochs): the autoencoder's "probabilities" sum to about 1,000
(2^10 = 1024 for a perfect copy), MADE's to 1.000000; the autoencoder's loss is near 0 nats
on training and test pixels alike, MADE's about 5.6-5.8 nats (the entropy it cannot escape);
every output of the autoencoder sees its own input, none of MADE's does.

    python demos/autoencoder_vs_made.py [--quick] [--out autoencoder_vs_made.png]

References
    [1] S. Ermon, A. Grover, CS236 notes: Autoregressive models, "Autoregressive models vs
        autoencoders". https://deepgenerativemodels.github.io/notes/autoregressive/
    [2] M. Germain, K. Gregor, I. Murray, H. Larochelle. MADE: masked autoencoder for
        distribution estimation. ICML 2015.
"""
from __future__ import annotations

import argparse
import itertools

import numpy as np

from tinyar import data, metrics
from tinyar.models import MADE
from tinyar.optim import SGD

D = 10                     # pixels: small enough to sum over all 2^D inputs


def ten_pixels(split):
    """The D pixels of the binarized digits whose training means are nearest 1/2 (the least predictable)."""
    digits = data.digits("binary")
    columns = np.sort(np.argsort(np.abs(digits.train.mean(axis=0) - 0.5))[:D])
    return getattr(digits, split)[:, columns]


def unmasked(model):
    """The same network with every mask set to ones: a plain autoencoder."""
    for layer in model.layers + [model.output]:
        layer.set_mask(np.ones_like(layer.mask))
    return model


def train(model, x, epochs, seed):
    opt = SGD(model.parameters(), lr=0.05, momentum=0.9)
    rng = np.random.default_rng(seed)
    for _ in range(epochs):
        for batch in np.array_split(rng.permutation(len(x)), max(1, len(x) // 50)):
            opt.zero_grad()
            model.nll(x[batch]).backward()                   # -mean log prod_i q_i(x_i): the reconstruction loss
            opt.step()
    return model


def connectivity(model):
    """(D, D) 0/1: does output i depend on input j? (the product of the masks, output by input)."""
    paths = model.output.mask
    for layer in reversed(model.layers):
        paths = paths @ layer.mask
    return (paths > 0).astype(int)


def figure(nets, sums, path):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, axes = plt.subplots(1, 3, figsize=(11, 3.4))
    for ax, (name, model) in zip(axes, nets.items()):
        ax.imshow(connectivity(model), cmap="Greys", vmin=0, vmax=1)
        ax.set(title=f"{name}: output i sees input j", xlabel="input j", ylabel="output i")
    axes[2].bar(list(sums), list(sums.values()), color=["tab:red", "tab:blue"])
    axes[2].set_yscale("log")
    axes[2].axhline(1.0, color="k", lw=0.8)
    axes[2].set(title=f"sum of prod_i q_i(x_i) over all 2^{D} inputs")
    for i, v in enumerate(sums.values()):
        axes[2].text(i, v, f"{v:.4g}", ha="center", va="bottom")
    fig.tight_layout()
    fig.savefig(path, dpi=80)
    plt.close(fig)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="fewer epochs (for the tests)")
    parser.add_argument("--out", default="autoencoder_vs_made.png")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    epochs = 5 if args.quick else 40
    x = ten_pixels("train")
    every_input = np.array(list(itertools.product([0.0, 1.0], repeat=D)), dtype=np.float32)   # (2^D, D)
    nets = {"autoencoder": unmasked(MADE(D, n_hidden=[50], rng=args.seed)),
            "MADE": MADE(D, n_hidden=[50], rng=args.seed)}
    results = {}
    for name, model in nets.items():
        train(model, x, epochs, args.seed)
        total = float(np.exp(metrics.model_log_likelihoods(model, every_input)).sum())
        diagonal = int(np.trace(connectivity(model)))
        results[name] = dict(sum=total, train_loss=metrics.nll(model, x), test_loss=metrics.nll(model, ten_pixels("test")),
                             sees_itself=diagonal)
        print(f"{name:<12} loss: train {results[name]['train_loss']:.3f}, test {results[name]['test_loss']:.3f} nats; "
              f"sum over all 2^{D} inputs of prod_i q_i(x_i) = {total:.6f}; outputs that see their own input: "
              f"{diagonal} of {D}")
    figure(nets, {name: r["sum"] for name, r in results.items()}, args.out)
    print("MADE can sample:", nets["MADE"].sample(3, rng=args.seed).astype(int).tolist())
    return results


if __name__ == "__main__":
    main()
