"""Where a Transformer looks when it draws a digit, and what attention costs as images grow.

A 2-block, 4-head Transformer (tinyar.models.Transformer) is trained on the
binarized 8x8 digits, read as a sequence of 64 pixel tokens in raster order
behind a start token <s>. Then, for a few test digits and a few query pixels,
the attention weights of every head are drawn over the 8x8 image: the query at
pixel t sees only the pixels before it in raster order (the causal mask), so
everything from pixel t on is blank. Expect some heads to concentrate on a
few pixels near the query, such as the one just above it (8 positions back) or
just to its left, and others to spread over the strokes drawn so far; little
weight goes to <s> (it is in each panel's title).

Then a table of the cost of attention against the number of pixels D: the
scores q k^T and the mix P v take 2 D^2 d_model multiply-adds per block and
image, against D (4 d_model^2 + 2 d_model d_mlp) for the projections and the
MLP. The attention matrix P of a block holds H D^2 floats: what attention built
from primitives (`fused=False`) keeps for the backward pass; the fused op keeps
H D (one log-normalizer per row) and recomputes P in the backward. At D = 64
attention is a small share; at 64x64 = 4,096 pixels it dominates, and P of one
block for one image takes 256 MB. The last column measures one forward pass
over 8 random images.

Full run: 30 epochs of the recipe (warm-up, then cosine decay over the 30
epochs; about a minute on one core), test NLL 17.60 nats (the full recipe,
100 epochs, reaches 17.12). --quick (for the tests): a smaller model for 1
epoch on 200 images.

    python demos/attention_maps.py [--quick] [--out attention_maps.png]
"""
from __future__ import annotations

import argparse
import os
import time

import numpy as np

from tinyar import data, train
from tinyar.models import Transformer
from tinyar.optim import SGD, CosineLR
from tinyar.tensor import no_grad

QUERIES = [27, 36, 52]                 # pixels (3, 3), (4, 4), (6, 4): where the query sits


def train_model(quick, seed=0):
    ds = data.digits("binary")
    recipe = dict(Transformer.recipe)
    options = dict(recipe["model"])
    train_x, epochs = ds.train, 30
    if quick:
        options.update(d_model=32, d_mlp=64)
        train_x, epochs = ds.train[:200], 1
    model = Transformer.for_dataset(ds, rng=seed, **options)
    optimizer = SGD(model.parameters(), lr=recipe["lr"], momentum=recipe["momentum"])
    steps = epochs * int(np.ceil(len(train_x) / recipe["batch_size"]))
    schedule = CosineLR(optimizer, total=steps, warmup=min(recipe["warmup"], steps // 2))
    train.fit(model, train_x, ds.valid, optimizer, epochs=epochs, batch_size=recipe["batch_size"], seed=seed,
              clip=recipe["clip"], schedule=schedule, progress=False, log=lambda message: None)
    with no_grad():
        test_nll = float(-model.log_prob(ds.test).data.mean())
    return model, ds, test_nll


def plot_maps(model, images, path):
    """Rows: (digit, query pixel); columns: the digit, then every head of every block."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    maps = model.attention_maps(images)                      # L arrays (B, H, T, T)
    L, H = len(maps), maps[0].shape[1]
    rows = [(b, t) for b in range(len(images)) for t in QUERIES]
    fig = Figure(figsize=(1.6 * (1 + L * H), 1.7 * len(rows)))
    FigureCanvasAgg(fig)
    for r, (b, t) in enumerate(rows):
        ax = fig.add_subplot(len(rows), 1 + L * H, r * (1 + L * H) + 1)
        ax.imshow(images[b].reshape(8, 8), cmap="gray_r", vmin=0, vmax=1)
        ax.scatter([t % 8], [t // 8], marker="s", s=60, facecolors="none", edgecolors="red", linewidths=2)
        ax.set_title(f"query pixel {t}", fontsize=8)
        ax.set_axis_off()
        for l in range(L):
            for h in range(H):
                P = maps[l][b, h, t]                         # (T,) weights of query t over keys 0..t
                grid = np.full(64, np.nan)
                grid[:t] = P[1:t + 1]                        # key s >= 1 is pixel s - 1; key 0 is <s>
                ax = fig.add_subplot(len(rows), 1 + L * H, r * (1 + L * H) + 2 + l * H + h)
                ax.imshow(grid.reshape(8, 8), cmap="viridis", vmin=0, vmax=max(float(np.nanmax(grid)), 1e-6))
                ax.scatter([t % 8], [t // 8], marker="s", s=60, facecolors="none", edgecolors="red", linewidths=1)
                ax.set_title(f"block {l + 1} head {h + 1}\n<s>: {P[0]:.2f}", fontsize=7)
                ax.set_axis_off()
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    return maps


def attention_cost(model, sizes, time_up_to):
    """Rows (D, attention MACs, other MACs, attention share, MB of P per block and image, forward ms)."""
    cfg = model.config
    C, H, M, L = cfg["d_model"], cfg["n_heads"], cfg["d_mlp"], cfg["n_layers"]
    rows = []
    for D in sizes:
        attn = 2 * D * D * C                                 # q k^T and P v, per block and image
        other = D * (4 * C * C + 2 * C * M)                  # q, k, v, output projections and the MLP
        mb = H * D * D * 4 / 2 ** 20                         # float32 probabilities of one block
        ms = float("nan")
        if D <= time_up_to:
            m = Transformer(2, max_len=D, n_layers=L, d_model=C, n_heads=H, d_mlp=M, rng=0)
            x = np.random.default_rng(0).integers(0, 2, (8, D))
            with no_grad():
                m.log_prob(x)                                # warm-up
                t0 = time.perf_counter()
                m.log_prob(x)
                ms = 1e3 * (time.perf_counter() - t0)
        rows.append((D, attn, other, attn / (attn + other), mb, ms))
    return rows


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="a small model, 1 epoch on 200 images (for the tests)")
    parser.add_argument("--out", default="attention_maps.png", help="PNG file, or a folder to write it in")
    args = parser.parse_args(argv)

    model, ds, test_nll = train_model(args.quick)
    print(f"Transformer ({model.n_parameters():,} parameters) on binarized digits: test NLL {test_nll:.2f} nats")
    out = os.path.join(args.out, "attention_maps.png") if os.path.isdir(args.out) else args.out
    images = ds.test[:3].astype(np.int64)
    maps = plot_maps(model, images, out)
    print(f"wrote {out}")

    sizes = [64, 256, 784, 1024, 4096]
    rows = attention_cost(model, sizes, time_up_to=64 if args.quick else 1024)
    print(f"\ncost of attention per block and image (d_model {model.config['d_model']}, "
          f"{model.config['n_heads']} heads, MLP {model.config['d_mlp']})")
    print(f"{'D':>6} {'image':>7} {'attention MACs':>15} {'other MACs':>12} {'attention':>10} "
          f"{'P (MB)':>8} {'forward, 8 images':>18}")
    print("(P (MB): the attention matrix of one block and image, kept by attention built from primitives)")
    for D, attn, other, share, mb, ms in rows:
        side = int(round(np.sqrt(D)))
        print(f"{D:>6} {side:>3}x{side:<3} {attn:>15,} {other:>12,} {share:>9.0%} {mb:>8.2f} "
              + (f"{ms:>15.1f} ms" if np.isfinite(ms) else f"{'-':>18}"))
    return dict(test_nll=test_nll, maps=maps, cost=rows, path=out)


if __name__ == "__main__":
    main()
