"""Colour images with 256 levels: a PixelCNN whose masks order R, G, B, beside NADE and MADE.

The data: 8x8 patches of the two colour photographs that scikit-learn ships
(data.photo_patches): D = 192 values per patch, R, G, B of each pixel with pixels in raster
order, each 0..255, split by position in the photographs (no test pixel is seen in
training). Every model factorizes p(x) = prod_d p(x_d | x_<d) over the 192 subpixels in
that order, each conditional a softmax over the 256 levels:

  ColourPixelCNN   masked convolutions whose masks order the channels too:
                   p(R_i | x_<i) p(G_i | R_i, x_<i) p(B_i | R_i, G_i, x_<i)
  CategoricalNADE  the shared-weight recursion, each x_d entering one-hot (256 columns)
  CategoricalMADE  a masked autoencoder over the 192 x 256 one-hot inputs

The demo trains each with SGD (Nesterov momentum, a cosine schedule) on training patches
drawn at random, each softmax starting at its histogram (start_at_histograms), prints its
test NLL in bits per dimension (8 bits for a uniform guess over 256 levels) beside a
baseline that ignores all context (each subpixel's own histogram of the training split),
and writes one picture: a row of real test patches, then a row of samples of each model.

Full run (5,000 training patches, 2 epochs in minibatches of 50; C = 24 channels, 2
residual layers and a 5x5 first kernel; NADE H = 64; MADE one hidden layer of 256; 8
samples each):

    python demos/colour_patches.py          # writes colour_patches.png (demos/figures.py: the README's copy)

    test bits/dim: ColourPixelCNN 6.71, CategoricalNADE 6.50, CategoricalMADE 6.08;
    per-subpixel histograms 7.44

    All three beat the no-context baseline by 0.7 to 1.4 bits/dim after 200 SGD steps, but
    they are far from trained: the samples are still mostly noise (the PixelCNN's pale, the
    colours of the sky that fills many training patches). In this short run the one-hot models
    gain most; the PixelCNN reads each neighbour as one number x / 255 and must still learn
    to turn it into a sharp softmax over 256 levels.

Quick run (200 patches, 1 epoch in minibatches of 25, tiny models, 2 samples each):

    python demos/colour_patches.py --quick  # writes colour_patches_quick.png

    test bits/dim: ColourPixelCNN 7.55, CategoricalNADE 7.69, CategoricalMADE 7.69;
    per-subpixel histograms 7.44

(--out PATH writes the picture elsewhere.)
"""
from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from tinyar import data, metrics, plot, train
from tinyar.models import CategoricalMADE, CategoricalNADE, ColourPixelCNN

FULL = dict(n_train=5000, epochs=2, batch_size=50, n_samples=8, models={
    "ColourPixelCNN": (ColourPixelCNN, dict(n_channels=24, n_layers=2, first_kernel_size=5), 0.003),
    "CategoricalNADE": (CategoricalNADE, dict(n_hidden=64), 0.1),
    "CategoricalMADE": (CategoricalMADE, dict(n_hidden=[256]), 0.05)})
QUICK = dict(n_train=200, epochs=1, batch_size=25, n_samples=2, models={
    "ColourPixelCNN": (ColourPixelCNN, dict(n_channels=6, n_layers=1, first_kernel_size=3), 0.003),
    "CategoricalNADE": (CategoricalNADE, dict(n_hidden=8), 0.1),
    "CategoricalMADE": (CategoricalMADE, dict(n_hidden=[32]), 0.05)})


def fit(model, photos, lr, settings):
    """SGD with Nesterov momentum and a cosine schedule on n_train training patches drawn at
    random (seed 0) from the whole training split, whose rows come in order of position; each
    model's own learning rate; the kept parameters are those of the best validation NLL."""
    x = photos.train[np.random.default_rng(0).permutation(len(photos.train))[:settings["n_train"]]]
    start_at_histograms(model, x)
    recipe = dict(lr=lr, momentum=0.9, nesterov=True, schedule="cosine", epochs=settings["epochs"],
                  batch_size=settings["batch_size"])
    optimizer, schedule = train.make_optimizer(model, recipe, len(x))
    train.fit(model, x, photos.valid[:300], optimizer, epochs=recipe["epochs"], batch_size=recipe["batch_size"],
              schedule=schedule, progress=False, log=lambda message: None)


def log_histograms(x, n_levels):
    """(D, K) log-frequencies of each subpixel's levels in the rows of x (add-one smoothing)."""
    counts = np.stack([np.bincount(column, minlength=n_levels) for column in x.T]) + 1.0
    return np.log(counts / counts.sum(axis=1, keepdims=True))


def histogram_bits(photos):
    """Bits/dim of independent subpixels, each its own 256-level histogram of the training
    patches: what no context at all gives."""
    log_hist = log_histograms(photos.train, photos.n_levels)                            # (D, K)
    nll = -log_hist[np.arange(photos.n_dims), photos.test].sum(axis=1).mean()
    return metrics.bits_per_dim(nll, photos.n_dims)


def start_at_histograms(model, x):
    """Start every softmax at the histogram of its levels in x: the output layer's weights 0,
    its biases the log-frequencies, so that training begins at the no-context baseline and
    spends its steps on context. (From random output weights and zero biases, SGD moves a
    bias by about lr times its level's frequency per step, 1/256 of lr for an average level:
    a short run would not even get to the histograms.) NADE and MADE have a softmax per
    subpixel (D, K); the PixelCNN's is shared by all pixels, one histogram per channel (3, K)."""
    log_hist = log_histograms(x, model.n_levels)                                        # (D, K)
    if isinstance(model, CategoricalNADE):
        model.V.data[...] = 0.0
        model.b.data[...] = log_hist                                                     # b (D, K)
    elif isinstance(model, CategoricalMADE):
        model.output.weight.data[...] = 0.0
        model.output.bias.data[...] = log_hist.reshape(-1)                               # (D K,), d-major
    else:
        model.out_logits.weight.data[...] = 0.0
        pooled = log_histograms(x.reshape(-1, 3), model.n_levels)                       # (3, K) R, G, B
        model.out_logits.bias.data[...] = pooled.reshape(-1)                             # R block, G, B


def colour_rows(rows, image_shape):
    """A list of (n, H W 3) arrays of 0..255, each a row of patches -> one RGB picture in [0, 1]
    (plot.image_grid, one row per list entry)."""
    n_cols = max(len(r) for r in rows)
    padded = [np.vstack([r, np.full((n_cols - len(r), np.shape(r)[1]), np.nan)]) for r in rows]
    return plot.colour_picture(plot.image_grid(np.vstack(padded), image_shape, n_cols=n_cols), 0.0, 255.0)


def draw(rows, labels, image_shape, path):
    """The rows of patches as one picture, each row labelled on its left."""
    picture = colour_rows(rows, image_shape)
    height = 0.9 * len(rows)                                             # inches
    width = 1.4 + height * picture.shape[1] / picture.shape[0]           # 1.4 inches for the labels
    fig = plot.figure(width, height)
    ax = fig.add_axes((1.4 / width, 0.02, 1 - 1.4 / width - 0.01, 0.96))
    ax.imshow(picture, interpolation="nearest")
    ax.set_yticks([(image_shape[0] + 1) * i + image_shape[0] / 2 - 0.5 for i in range(len(rows))], labels)
    ax.set_xticks([])
    ax.tick_params(length=0, labelsize=8)
    for spine in ax.spines.values():
        spine.set_visible(False)
    return plot.save(fig, path)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="tiny models, 200 patches, 1 epoch (for the tests)")
    parser.add_argument("--out", default=None, help="the PNG to write (default: colour_patches.png, "
                                                    "or colour_patches_quick.png with --quick)")
    args = parser.parse_args(argv)
    settings = QUICK if args.quick else FULL
    out = Path(args.out) if args.out else Path("colour_patches_quick.png") if args.quick else Path("colour_patches.png")

    photos = data.photo_patches()                                        # (n, 192) ints 0..255
    print(photos.describe())
    bits = {}
    rows, labels = [photos.test[::97][:settings["n_samples"]]], ["test patches"]
    for name, (cls, size, lr) in settings["models"].items():
        model = cls.for_dataset(photos, rng=0, **size)
        fit(model, photos, lr, settings)
        bits[name] = metrics.bits_per_dim(metrics.nll(model, photos.test), photos.n_dims)
        rows.append(model.sample(settings["n_samples"], rng=np.random.default_rng(0)))
        labels.append(f"{name}\n{bits[name]:.2f} bits/dim")
        print(f"{name:16s} test {bits[name]:.2f} bits/dim")
    bits["histograms"] = histogram_bits(photos)
    print(f"{'histograms':16s} test {bits['histograms']:.2f} bits/dim (each subpixel on its own; uniform: 8)")
    print(f"wrote {draw(rows, labels, photos.image_shape, out)}")
    return bits


if __name__ == "__main__":
    main()
