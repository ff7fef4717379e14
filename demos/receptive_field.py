"""The receptive field of one output pixel of a PixelCNN, read off the autograd Jacobian.

For the logit of the centre pixel i of an image, backpropagate once and look at
|d logit_i / d x_j| for every input pixel j (summed over a batch of 16 random inputs,
so that no dependence hides behind a ReLU that happens to be off). Two models, as
initialised (the receptive field is a property of the architecture, not of training):

  PixelCNN (plain stack of masked convolutions, 3x3 mask A then 3x3 mask B layers):
      pixels after i get exactly zero (the masks work), but so does a wedge of pixels
      *before* i, above and to the right: the blind spot. The demo prints the blind
      pixels and checks them against the rule in tinyar/models/pixelcnn.py
      (blind_spot_offsets: t rows above output (i, j), the columns beyond
      j + r(t), r(t) = max(p1 + p min(L, t - 1), p min(L, t) - 1)).
  GatedPixelCNN (vertical and horizontal stacks [van den Oord et al. 2016]):
      every pixel before i inside the window is seen; nothing after it. Expect 0 blind.

What its run prints:
    python demos/receptive_field.py
        17x17 image, output (8, 8), a 3x3 first layer and 5 more (reach 6): the PixelCNN
        misses 15 pixels, (3, 14), (4, 13), (4, 14), ..., (7, 10) .. (7, 14), the nearest
        (7, 10) = (i-1, j+2), as the rule says; the GatedPixelCNN misses 0. Then the rule
        for the default PixelCNN (7x7 mask A, four 3x3 layers): 10 blind pixels, the
        nearest (i-1, j+4), e.g. (4, 6) for output (5, 2).
    python demos/receptive_field.py --quick
        9x9 image, output (4, 4), 2 more layers (reach 3): 3 blind pixels, (2, 7), (3, 6),
        (3, 7), as the rule says; the GatedPixelCNN misses 0.

Writes a PNG with the two maps side by side (white: not seen, dark: large gradient,
red outline: the output pixel, orange: the blind spot) and prints each as ASCII ('#' seen,
'.' not seen, 'o' the output pixel). Runs in a few seconds (--quick: under one).

    python demos/receptive_field.py [--quick] [--out receptive_field.png]
"""
from __future__ import annotations

import argparse

import numpy as np

from tinyar.models import GatedPixelCNN, PixelCNN
from tinyar.models.pixelcnn import blind_spot_offsets
from tinyar.tensor import Tensor


def receptive_field(model, row, col, n_inputs=16, seed=0):
    """|d logit(row, col) / d x|, summed over n_inputs random (standard normal) inputs: an (H, W) array."""
    H, W = model.image_shape
    i = row * W + col
    x = Tensor(np.random.default_rng(seed).standard_normal((n_inputs, H * W)).astype(model.dtype), requires_grad=True)
    logits = model.forward(x)                                  # (B, D) or (B, D, K)
    upstream = np.zeros(logits.shape, dtype=logits.dtype)
    upstream[:, i] = 1.0                                       # one row of the Jacobian
    logits.backward(upstream)
    return np.abs(x.grad).sum(axis=0).reshape(H, W)


def blind_spot(field, row, col, reach):
    """Pixels before (row, col) in raster order, inside the (2 reach + 1)-wide window of rows
    row - reach .. row, that the output does not see; and whether any pixel at or after it is seen."""
    H, W = field.shape
    blind = [(a, b) for a in range(max(0, row - reach), row + 1)
             for b in range(max(0, col - reach), min(W, col + reach + 1)) if (a, b) < (row, col) and field[a, b] == 0]
    future_seen = any(field[a, b] != 0 for a in range(H) for b in range(W) if (a, b) >= (row, col))
    return blind, future_seen


def ascii_map(field, row, col):
    lines = []
    for a in range(field.shape[0]):
        lines.append(" ".join("o" if (a, b) == (row, col) else "#" if field[a, b] != 0 else "."
                              for b in range(field.shape[1])))
    return "\n".join(lines)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="a 9x9 image and 3 layers (for the tests)")
    parser.add_argument("--out", default="receptive_field.png", help="PNG to write")
    args = parser.parse_args(argv)

    size, n_layers, n_channels = (9, 2, 8) if args.quick else (17, 5, 16)
    first_kernel, kernel = 3, 3
    reach = first_kernel // 2 + n_layers * (kernel // 2)       # how far the n_layers + 1 layers could see
    row = col = size // 2
    results = {}
    for cls in (PixelCNN, GatedPixelCNN):
        model = cls(size * size, image_shape=(size, size), n_channels=n_channels, n_layers=n_layers,
                    kernel_size=kernel, first_kernel_size=first_kernel, rng=0, dtype=np.float64)
        field = receptive_field(model, row, col)
        blind, future_seen = blind_spot(field, row, col, reach)
        rule = [(row + dy, col + dx) for dy, dx in blind_spot_offsets(first_kernel, kernel, n_layers)]
        expected = rule if cls is PixelCNN else []                   # the gated stacks: no blind spot
        results[cls.__name__] = dict(field=field, blind=blind, future_seen=future_seen,
                                     rule_agrees=sorted(blind) == sorted(expected))
        print(f"{cls.__name__}: {len(blind)} pixels before ({row}, {col}) within reach {reach} are not seen; "
              f"pixels at or after it seen: {future_seen}")
        print(f"  blind: {blind}")
        print(f"  as the rule says ({'blind_spot_offsets' if cls is PixelCNN else 'none'}): "
              f"{results[cls.__name__]['rule_agrees']}")
        print(ascii_map(field, row, col), "\n")
    default = PixelCNN.recipe["model"]
    offsets = blind_spot_offsets(default["first_kernel_size"], default["kernel_size"], default["n_layers"])
    nearest = min(dx for dy, dx in offsets if dy == -1)              # on the row above, the leftmost
    print(f"The rule for the default PixelCNN ({default['first_kernel_size']}x{default['first_kernel_size']} mask A, "
          f"{default['n_layers']} {default['kernel_size']}x{default['kernel_size']} layers): {len(offsets)} blind "
          f"pixels, the nearest (i-1, j+{nearest}), e.g. (4, {2 + nearest}) for output (5, 2)\n")

    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, axes = plt.subplots(1, 2, figsize=(9, 4.6))
    for ax, (name, r) in zip(axes, results.items()):
        field = r["field"]
        shown = np.where(field > 0, np.log10(np.maximum(field, 1e-300)), np.nan)
        ax.imshow(np.ones_like(field), cmap="gray", vmin=0, vmax=1)
        ax.imshow(shown, cmap="viridis_r")
        ax.add_patch(plt.Rectangle((col - 0.5, row - 0.5), 1, 1, fill=False, edgecolor="red", linewidth=2))
        for a, b in r["blind"]:
            ax.add_patch(plt.Rectangle((b - 0.5, a - 0.5), 1, 1, fill=False, edgecolor="orange",
                                       linewidth=1, linestyle=":"))
        ax.set_title(f"{name}: {len(r['blind'])} blind pixels")
        ax.set_xticks([])
        ax.set_yticks([])
    fig.suptitle(f"|d logit(pixel {row},{col}) / d x|  (log scale; white: zero; orange: blind spot)")
    fig.tight_layout()
    fig.savefig(args.out, dpi=100)
    plt.close(fig)
    print(f"wrote {args.out}")
    return {name: dict(n_blind=len(r["blind"]), future_seen=r["future_seen"], rule_agrees=r["rule_agrees"])
            for name, r in results.items()}


if __name__ == "__main__":
    main()
