"""MADE: masks that make an autoencoder autoregressive, drawn; and ensembles of masks.

MADE (tinyar.models.MADE, Germain et al. 2015) multiplies each weight matrix by a 0/1 mask
built from connectivity numbers (degrees): input d gets its position in the ordering,
each hidden unit a random degree m, and a connection is kept when it cannot carry
information from a later dimension to an earlier output. The product of the masks counts
the paths from x_d' to output d, and it is zero unless d' comes before d: the network is
autoregressive by construction.

  made_masks.png     a small MADE (D = 6, hidden layers 8 and 8, a random ordering): the
                     masks M^1 (8 x 6), M^2 (8 x 8), M^V (6 x 8) as matrices (black: 1)
                     with the degrees on the axes, and the path counts M^V M^2 M^1 (6 x 6)
                     reordered by the ordering: strictly lower triangular (printed as ASCII)
  made_ensemble.png  a MADE with 8 masks (orderings and connectivity), trained on the
                     binarized digits with one of the 8 drawn at random for each minibatch;
                     the test NLL of each mask alone and of the ensembles of the first 1, 2,
                     4, 8 masks, log (1/N) sum_k p_k(x) (printed, with each single mask's NLL
                     minus the ensemble of 8's)

The masks and their path counts do not depend on training: both runs print the same.
The full run (40 epochs on the 1,200 training images, seed 0),

    python demos/made_masks.py --out made_masks

prints single masks at 19.87-20.68 nats and the ensembles of 1, 2, 4, 8 masks at 20.68,
20.03, 19.88, 19.69: the ensemble of 8 is below every single mask, by 0.19 to 1.00 nats.
The quick run (1 epoch on 200 images),

    python demos/made_masks.py --quick --out made_masks

prints single masks at 43.21-43.92 nats and ensembles at 43.21, 43.43, 43.61, 43.69. That
is two minibatches, so at most two of the 8 masks take a training step: the ensemble of 8
is 0.48 nats worse than mask 0 alone and at most 0.23 better than the others.
"""
from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from tinyar import data, metrics, train
from tinyar.models import MADE
from tinyar.optim import SGD


def draw_masks(out, plt):
    """The masks of a small MADE and their path counts: made_masks.png, and the counts printed."""
    small = MADE(6, n_hidden=[8, 8], order="random", mask_seed=3, rng=0)
    order, degrees, (hidden, output, _) = small.draw_mask(0)
    paths = output.astype(int) @ hidden[1].astype(int) @ hidden[0].astype(int)    # (D, D)  paths x_d' -> out_d
    in_order = paths[np.ix_(order, order)]                     # rows and columns in the ordering
    if np.triu(in_order).any():
        raise RuntimeError("MADE masks are not autoregressive: a path reaches an output from itself or a later input")
    print(f"ordering {order.tolist()}; degrees of the inputs {degrees[0].tolist()}, "
          f"of the hidden units {degrees[1].tolist()} and {degrees[2].tolist()}")
    print("paths from x_d' (columns) to output d (rows), both in the ordering: strictly lower triangular")
    print("\n".join(" ".join(f"{v:2d}" for v in row) for row in in_order))
    fig, axes = plt.subplots(1, 4, figsize=(15, 4))
    panels = [(hidden[0], "M^1: hidden 1 <- inputs", degrees[1], degrees[0]),
              (hidden[1], "M^2: hidden 2 <- hidden 1", degrees[2], degrees[1]),
              (output, "M^V: outputs <- hidden 2 (strict >)", degrees[0], degrees[2])]
    for ax, (mask, title, rows, cols) in zip(axes, panels):
        ax.imshow(mask, cmap="gray_r", vmin=0, vmax=1)
        ax.set_title(title, fontsize=9)
        ax.set_yticks(range(len(rows)), [f"m={m}" for m in rows], fontsize=7)
        ax.set_xticks(range(len(cols)), [str(m) for m in cols], fontsize=7)
        ax.set_xlabel("degree of the unit it reads", fontsize=8)
    axes[3].imshow(in_order, cmap="Blues")
    for (r, c), v in np.ndenumerate(in_order):
        axes[3].text(c, r, str(v), ha="center", va="center", fontsize=8)
    axes[3].set_xticks(range(6), [f"x{d}" for d in order], fontsize=8)
    axes[3].set_yticks(range(6), [f"out {d}" for d in order], fontsize=8)
    axes[3].set_title("paths M^V M^2 M^1, in the ordering", fontsize=9)
    fig.tight_layout()
    fig.savefig(out / "made_masks.png", dpi=100)
    plt.close(fig)
    return in_order


def ensemble_of_masks(out, plt, quick, n_masks=8, sizes=(1, 2, 4, 8)):
    """A MADE with n_masks masks trained on the digits, one mask drawn at random per minibatch;
    the test NLL of each mask alone and of the ensembles of the first N: made_ensemble.png."""
    digits = data.digits("binary")
    model = MADE(64, n_hidden=[500], n_masks=n_masks, mask_seed=0, rng=0)
    optimizer = SGD(model.parameters(), lr=0.01, momentum=0.9)
    train_x, epochs = (digits.train[:200], 1) if quick else (digits.train, 40)
    # before each minibatch, model.before_batch draws one of the masks uniformly from the run's rng;
    # no validation set: keep the last state
    train.fit(model, train_x, None, optimizer, epochs=epochs, batch_size=100, progress=False, log=lambda s: None)
    test = digits.test
    single = []
    for k in range(n_masks):
        model.use_mask(k)
        single.append(metrics.nll(model, test))
    model.use_mask(0)
    # log (1/N) sum_k p_k(x), averaged over the test images
    ensemble = [float(-model.ensemble_log_prob(test, masks=range(n)).data.astype(np.float64).mean()) for n in sizes]
    gain = np.array(single) - ensemble[-1]                     # how much the full ensemble beats each mask
    print("test NLL of each mask: " + ", ".join(f"{v:.2f}" for v in single))
    print("ensembles of the first N masks: " + ", ".join(f"N={n}: {v:.2f}" for n, v in zip(sizes, ensemble)))
    print(f"each single mask's NLL minus the ensemble of {sizes[-1]}'s: {gain.min():+.2f} to {gain.max():+.2f} nats "
          "(positive: the ensemble is better)")
    fig, ax = plt.subplots(figsize=(6.5, 4.2))
    ax.plot(range(1, n_masks + 1), single, "o", color="#999999", label="each mask alone")
    ax.plot(sizes, ensemble, "o-", color="#c44e52", label="ensemble of the first N masks")
    ax.set_xlabel("mask k / ensemble size N")
    ax.set_ylabel("test NLL (nats per image)")
    ax.set_title(f"MADE with {n_masks} masks on binarized digits ({epochs} epochs)", fontsize=10)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(out / "made_ensemble.png", dpi=100)
    plt.close(fig)
    return dict(single=single, ensemble=ensemble, gain=(float(gain.min()), float(gain.max())))


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="1 epoch on 200 images (for the tests)")
    parser.add_argument("--out", default="made_masks", help="folder for the PNGs")
    args = parser.parse_args(argv)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    paths = draw_masks(out, plt)
    result = ensemble_of_masks(out, plt, args.quick)
    print(f"wrote {out}/made_masks.png, {out}/made_ensemble.png")
    return dict(result, paths=paths)


if __name__ == "__main__":
    main()
