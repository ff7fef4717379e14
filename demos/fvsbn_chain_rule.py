"""The chain rule of probability, computed by an FVSBN: log p(x) = sum_i log p(x_i | x_<i).

A fully visible sigmoid belief network (tinyar.models.FVSBN) gives each pixel of an 8x8
binarized digit a logistic regression on the pixels before it (raster order):

    p(x_i = 1 | x_<i) = sigmoid(b_i + sum_{j<i} W_ij x_j)

W is stored as a full D x D matrix, D^2 + D = 4,160 parameters with the biases; only the
D(D - 1)/2 = 2,016 weights below the diagonal and the D = 64 biases are free, 2,080 in all
(model.n_parameters() and model.n_parameters(free=True); printed).

The demo trains it on the digits (recipe: SGD, momentum 0.9, lr 0.03, 200 epochs), then,
for four test digits, shows the chain rule at work:

  - the conditional map: p(x_i = 1 | x_<i) for every pixel (what the model expected there
    before seeing it);
  - the running sum of log p(x_i | x_<i) along the raster order, which ends exactly at
    log p(x) as model.log_prob computes it (printed: the difference is ~1e-6);
  - 32 samples, drawn one pixel at a time in the same order.

It also checks the normalization the chain rule promises: a random FVSBN with D = 12 sums
to 1 over all 2^12 binary vectors (printed; expect 1.000000).

Expected figure (fvsbn_chain_rule.png): top row, 4 test digits; middle row, their
conditional maps (bright where the model predicts ink: each digit's strokes are mostly
predicted before they are seen, except at the top, where the model has no context yet);
bottom, the running log-likelihood curves falling in steps where a surprising pixel comes;
samples.png: digit-like blobs (an FVSBN is too simple for clean digits).

Printed figures:
    python demos/fvsbn_chain_rule.py [--out DIR]            test NLL 18.1 nats per image (0.41 bits/dim)
    python demos/fvsbn_chain_rule.py --quick [--out DIR]    5 epochs: test NLL 20.1 nats per image
and in both: sum of p(x) = 1.000000, 4,160 parameters stored of which 2,080 free, and a
chain-rule difference below 1e-5.
"""
from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from tinyar import data, metrics, train
from tinyar.metrics import all_configurations
from tinyar.models import FVSBN
from tinyar.optim import SGD


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="5 epochs (a few seconds, for the tests)")
    parser.add_argument("--out", default="fvsbn_chain_rule", help="folder for the PNGs")
    args = parser.parse_args(argv)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)

    # 1. normalization: sum over all 2^D inputs of prod_i p(x_i | x_<i) = 1
    small = FVSBN(12, order="random", init_std=1.0, rng=0, dtype=np.float64)
    small.b.data[...] = np.random.default_rng(1).standard_normal(12)
    total = np.exp(metrics.log_likelihoods(small, all_configurations(12).astype(np.float64))).sum()
    print(f"random FVSBN, D = 12: sum over all 4096 x of p(x) = {total:.6f}")

    # 2. train on the binarized digits
    digits = data.digits("binary")
    recipe = FVSBN.recipe
    model = FVSBN.for_dataset(digits, rng=0, **recipe["model"])
    stored, free = model.n_parameters(), model.n_parameters(free=True)
    print(f"FVSBN, D = 64: {stored:,} parameters stored (W is D x D), {free:,} free "
          f"(D(D - 1)/2 = {64 * 63 // 2:,} weights below the diagonal, and 64 biases)")
    optimizer = SGD(model.parameters(), lr=recipe["lr"], momentum=recipe["momentum"])
    epochs = 5 if args.quick else recipe["epochs"]
    train.fit(model, digits.train, digits.valid, optimizer, epochs=epochs, batch_size=recipe["batch_size"],
              progress=False, log=lambda s: None)
    nll = metrics.nll(model, digits.test)
    print(f"FVSBN, {epochs} epochs: test NLL {nll:.2f} nats per image ({metrics.bits_per_dim(nll, 64):.4f} bits/dim)")

    # 3. the chain rule on four test digits
    x = digits.test[:4]
    p1 = model.conditionals(x)                                     # (4, 64)  p(x_i = 1 | x_<i)
    log_cond = np.log(np.where(x == 1, p1, 1.0 - p1).astype(np.float64))   # (4, 64)  log p(x_i | x_<i)
    running = np.cumsum(log_cond, axis=1)                          # (4, 64)  sum_{j <= i} log p(x_j | x_<j)
    log_p = metrics.log_likelihoods(model, x)
    print(f"chain rule: sum_i log p(x_i | x_<i) - log p(x), largest |difference| over 4 digits: "
          f"{np.abs(running[:, -1] - log_p).max():.2e}")

    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig = plt.figure(figsize=(10, 7.5))
    grid = fig.add_gridspec(3, 4, height_ratios=[1, 1, 1.2])
    for k in range(4):
        ax = fig.add_subplot(grid[0, k])
        ax.imshow(x[k].reshape(8, 8), cmap="gray", vmin=0, vmax=1)
        ax.set_title(f"test digit {k}: log p = {log_p[k]:.1f}", fontsize=9)
        ax.set_axis_off()
        ax = fig.add_subplot(grid[1, k])
        ax.imshow(p1[k].reshape(8, 8), cmap="magma", vmin=0, vmax=1)
        ax.set_title("p(x_i = 1 | x_<i)", fontsize=9)
        ax.set_axis_off()
    ax = fig.add_subplot(grid[2, :])
    for k in range(4):
        ax.plot(np.arange(1, 65), running[k], label=f"digit {k}")
        ax.plot([64], [log_p[k]], "k+", markersize=10)
    ax.set_xlabel("pixel i (raster order)")
    ax.set_ylabel("sum_{j <= i} log p(x_j | x_<j)  (nats)")
    ax.set_title("the chain rule: the running sum ends at log p(x) (+)", fontsize=10)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(out / "fvsbn_chain_rule.png", dpi=100)
    plt.close(fig)

    from tinyar.plot import sample_grid
    samples = model.sample(32, rng=np.random.default_rng(0))
    sample_grid(samples, (8, 8), out / "samples.png", n_cols=8, title=f"FVSBN: 32 samples (test NLL {nll:.1f})",
                vmin=0, vmax=1)
    print(f"wrote {out}/fvsbn_chain_rule.png, {out}/samples.png")
    return dict(total=total, test_nll=nll, chain_error=float(np.abs(running[:, -1] - log_p).max()),
                n_parameters=stored, n_free=free)


if __name__ == "__main__":
    main()
