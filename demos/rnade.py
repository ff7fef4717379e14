"""RNADE: NADE for real numbers, each conditional a mixture of Gaussians.

    p(x_d | x_<d) = sum_m pi_m N(x_d; mu_m, s_m^2),   (pi, mu, log s) from b_d + V_d h_d

(tinyar.models.RNADE, Uria et al. 2013) on the dequantized digits y = (k + u) / 17
(data.digits(form="continuous"): the 17 grey levels k plus uniform noise u, in [0, 1)).
A pixel's conditional is often two-peaked: given the pixels above and to the left, the
next one is either background (near 0) or ink (near 1), rarely in between. One Gaussian
would put its mass in the middle; a mixture of M = 5 puts it on both.

The demo trains an RNADE with its recipe (H = 100, M = 5, SGD lr 0.002 with momentum 0.9,
clip 10 and a cosine decay over the run's epochs; log-scale bounds from the data: RNADE
docstring) for 100 epochs (--quick: 2 epochs on 200 images) and draws:

  rnade.png     a test digit with 4 marked pixels, and for each the conditional density
                p(x_d | x_<d) on [0, 1] (the mixture read off model.outputs and
                model.mixture) with the true value marked: peaks at 0 and near 1, in
                proportions that depend on the context
  samples.png   32 samples (continuous grey values)

Printed: the test NLL of the density (negative: a density on [0, 1]^64 can exceed 1),
the bound it gives on the 17-level images, NLL + 64 log 17, in bits per dimension, and an
independent Gaussian per pixel for comparison:

    python demos/rnade.py            test NLL -58.93 nats of density (at most 122.40 nats =
                                     2.759 bits/dim on the 17-level scale; best epoch 100);
                                     independent Gaussians -31.55
    python demos/rnade.py --quick    test NLL 73.99 nats (5.755 bits/dim); Gaussians -31.55

    python demos/rnade.py [--quick] [--out DIR]
"""
from __future__ import annotations

import argparse
import math
from pathlib import Path

import numpy as np

from tinyar import data, metrics, train
from tinyar.models import RNADE
from tinyar.plot import sample_grid


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="2 epochs on 200 images (for the tests)")
    parser.add_argument("--out", default="rnade", help="folder for the PNGs")
    args = parser.parse_args(argv)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)

    digits = data.digits("continuous")                              # (n, 64) floats in [0, 1)
    D, K = digits.n_dims, digits.dequantized_levels
    train_x, epochs = (digits.train[:200], 2) if args.quick else (digits.train, 100)
    recipe = dict(RNADE.recipe, epochs=epochs)                      # its lr, momentum, clip and schedule
    model = RNADE.for_dataset(digits, rng=0, **recipe["model"])
    optimizer, schedule = train.make_optimizer(model, recipe, len(train_x))
    history = train.fit(model, train_x, digits.valid, optimizer, epochs=epochs, batch_size=recipe["batch_size"],
                        clip=recipe["clip"], schedule=schedule, progress=False, log=lambda s: None)
    nll = metrics.nll(model, digits.test)
    mean, std = digits.train.mean(axis=0), digits.train.std(axis=0) + 1e-3
    z = (digits.test - mean) / std
    nll_gauss = float(np.mean(np.sum(0.5 * z ** 2 + np.log(std) + 0.5 * math.log(2 * math.pi), axis=1)))
    print(f"RNADE, {epochs} epochs (best {history['best_epoch']}): test NLL {nll:.2f} nats of density; on the "
          f"{K}-level images at most {nll + D * math.log(K):.2f} nats = "
          f"{metrics.bits_per_dim(nll, D, dequantized_levels=K):.3f} bits/dim")
    print(f"independent Gaussian per pixel: {nll_gauss:.2f} nats of density")

    x = digits.test[3:4]
    logits, mu, log_s = (t.data[0].astype(np.float64) for t in model.mixture(model.outputs(x)))   # (D, M) each
    pi = np.exp(logits - logits.max(axis=1, keepdims=True))
    pi /= pi.sum(axis=1, keepdims=True)
    u = np.linspace(0.0, 1.0, 400)
    s = np.exp(log_s)
    density = np.sum(pi[:, None, :] * np.exp(-0.5 * ((u[None, :, None] - mu[:, None, :]) / s[:, None, :]) ** 2)
                     / (s[:, None, :] * math.sqrt(2 * math.pi)), axis=2)     # (D, 400)  p(x_d = u | x_<d)
    pixels = [(1, 3), (2, 5), (4, 2), (6, 4)]

    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig = plt.figure(figsize=(12, 4))
    grid = fig.add_gridspec(2, 3, width_ratios=[1.2, 1, 1])
    ax = fig.add_subplot(grid[:, 0])
    ax.imshow(x[0].reshape(8, 8), cmap="gray", vmin=0, vmax=1)
    for n, (r, c) in enumerate(pixels):
        ax.text(c, r, str(n + 1), color="red", ha="center", va="center", fontsize=11, fontweight="bold")
    ax.set_title("a test digit (dequantized)", fontsize=9)
    ax.set_axis_off()
    for n, (r, c) in enumerate(pixels):
        d = r * 8 + c
        ax = fig.add_subplot(grid[n // 2, 1 + n % 2])
        ax.plot(u, density[d], color="#4c72b0")
        ax.axvline(x[0, d], color="#c44e52", linestyle="--")
        ax.set_title(f"pixel {n + 1}: p(x_d | x_<d); true value (red)", fontsize=8)
        ax.set_xlim(0, 1)
    fig.suptitle(f"RNADE: mixture-of-Gaussians conditionals (test NLL {nll:.1f} nats of density)", fontsize=10)
    fig.tight_layout()
    fig.savefig(out / "rnade.png", dpi=100)
    plt.close(fig)
    samples = model.sample(32, rng=np.random.default_rng(0))
    sample_grid(np.clip(samples, 0, 1), (8, 8), out / "samples.png", n_cols=8, title="RNADE: 32 samples",
                vmin=0, vmax=1)
    print(f"wrote {out}/rnade.png, {out}/samples.png")
    return dict(test_nll=nll, gaussian_nll=nll_gauss)


if __name__ == "__main__":
    main()
