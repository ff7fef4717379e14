"""Pictures: a grid of samples, a learning curve, text samples, ROC curves.

Figures are drawn with matplotlib's object API on the Agg canvas (no pyplot, no
global backend switch), so this works without a display and leaves a user's own
matplotlib settings alone. `figure` and `save` are the two steps of every picture,
for any other module that draws one.
"""
from __future__ import annotations

import math
from pathlib import Path

import numpy as np

from tinyar import metrics


def figure(width, height):
    """A blank matplotlib Figure of width x height inches on the Agg canvas."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    fig = Figure(figsize=(width, height))
    FigureCanvasAgg(fig)
    return fig


def save(fig, path, dpi=100):
    """Write fig to path (PNG), making its folder; returns the path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=dpi)
    return path


def image_grid(images, image_shape, n_cols=None, pad=1):
    """(n, H*W) rows -> one (rows*(H+pad)-pad, cols*(W+pad)-pad) array, images left to right,
    top to bottom, separated by `pad` pixels of NaN (drawn as the background). Colour images,
    image_shape (H, W, 3) with R, G, B at each pixel, give a (..., ..., 3) array."""
    images = np.asarray(images, dtype=np.float64)
    H, W, *channels = image_shape
    size = H * W * math.prod(channels)
    if images.ndim != 2 or images.shape[1] != size:
        raise ValueError(f"image_grid: expected (n, {size}) rows for images of shape {tuple(image_shape)}, "
                         f"got {images.shape}")
    n = len(images)
    n_cols = n_cols or int(math.ceil(math.sqrt(n)))
    n_rows = int(math.ceil(n / n_cols))
    grid = np.full((n_rows * (H + pad) - pad, n_cols * (W + pad) - pad, *channels), np.nan)
    for k, img in enumerate(images.reshape(n, H, W, *channels)):
        r, c = divmod(k, n_cols)
        grid[r * (H + pad):r * (H + pad) + H, c * (W + pad):c * (W + pad) + W] = img
    return grid


def sample_grid(samples, image_shape, path, n_cols=None, title=None, vmin=None, vmax=None):
    """Save samples (n, H*W) as a grid of grey images (white = high) to path (PNG); with
    image_shape (H, W, 3), (n, H*W*3) rows as colour images."""
    grid = image_grid(samples, image_shape, n_cols)
    finite = grid[np.isfinite(grid)]
    vmin = float(finite.min()) if vmin is None else vmin
    vmax = float(finite.max()) if vmax is None else vmax
    if grid.ndim == 3:
        grid = colour_picture(grid, vmin, vmax)
    width = 6.0                                          # inches; the image fills the width
    height = width * grid.shape[0] / grid.shape[1]        # square pixels
    title_height = 0.4 if title else 0.0
    fig = figure(width, height + title_height)
    ax = fig.add_axes((0, 0, 1, height / (height + title_height)))
    ax.imshow(grid, cmap=grey(), vmin=vmin, vmax=vmax if vmax > vmin else vmin + 1, interpolation="nearest",
              aspect="auto")
    ax.set_axis_off()
    if title:
        fig.suptitle(title, fontsize=10)
    return save(fig, path)


def colour_picture(grid, vmin, vmax):
    """An (h, w, 3) grid of values in [vmin, vmax] (NaN padding) as RGB in [0, 1] for imshow,
    the padding in the grey images' background colour."""
    from matplotlib.colors import to_rgb
    rgb = np.clip((grid - vmin) / (vmax - vmin if vmax > vmin else 1.0), 0.0, 1.0)
    return np.where(np.isnan(grid), np.array(to_rgb(BACKGROUND)), rgb)


BACKGROUND = "#7a8ca8"                                          # the padding between images


def grey():
    """The grey colour map of sample pictures, NaN (the padding between images) in BACKGROUND."""
    from matplotlib import colormaps
    return colormaps["gray"].with_extremes(bad=BACKGROUND)       # bad (NaN): the padding between images


def learning_curve(history, path, title=None, unit="nats"):
    """Save the train and validation NLL per epoch (history from train.fit) to path (PNG)."""
    epochs = [e["epoch"] for e in history["epochs"]]
    fig = figure(6, 4)
    ax = fig.add_subplot(1, 1, 1)
    ax.plot(epochs, [e["train_nll"] for e in history["epochs"]], label="train (mean over the epoch's minibatches)")
    if any("valid_nll" in e for e in history["epochs"]):
        ax.plot(epochs, [e.get("valid_nll", np.nan) for e in history["epochs"]], label="valid")
    if history.get("best_epoch"):
        ax.axvline(history["best_epoch"], color="grey", linestyle=":", label=f"best epoch ({history['best_epoch']})")
    ax.set_xlabel("epoch")
    ax.set_ylabel(f"NLL ({unit} per example)")
    values = [e[k] for e in history["epochs"] for k in ("train_nll", "valid_nll") if k in e]
    if values:
        low, high = min(values), np.percentile(values, 95)
        if high > low:
            ax.set_ylim(low - 0.05 * (high - low), high + 0.1 * (high - low))
    ax.grid(alpha=0.3)
    ax.legend()
    if title:
        ax.set_title(title, fontsize=10)
    fig.tight_layout()
    return save(fig, path)


def text_samples(lines, path, title=None):
    """Save text samples (a list of strings) as a PNG of monospaced lines."""
    shown = [line.replace("\n", "\u23ce").replace("\t", " ") for line in lines]
    width = max((len(s) for s in shown), default=10)
    fig = figure(max(4, 0.1 * width), 0.3 * (len(shown) + 1) + 0.3)
    for k, line in enumerate(shown):
        fig.text(0.01, 1 - (k + 1.2) / (len(shown) + 1.5), line, family="monospace", fontsize=9)
    if title:
        fig.suptitle(title, fontsize=10)
    return save(fig, path)


def roc_panels(scores, path, title=None, n_cols=None):
    """Save ROC curves to path (PNG).

    scores: {panel name (e.g. a model): (clean scores, {set name: scores of that set})}.
    Each panel draws, for each set, the curve of flagging scores >= threshold (clean =
    negatives, the set = positives), its AUROC in the legend, and the chance diagonal.
    """
    if not scores:
        raise ValueError("roc_panels: nothing to draw")
    n = len(scores)
    n_cols = n_cols or min(n, 3)
    n_rows = int(math.ceil(n / n_cols))
    fig = figure(3.6 * n_cols, 3.4 * n_rows + (0.4 if title else 0.0))
    for k, (panel, (clean, sets)) in enumerate(scores.items()):
        ax = fig.add_subplot(n_rows, n_cols, k + 1)
        for name, values in sets.items():
            fpr, tpr, _ = metrics.roc_curve(clean, values)
            ax.plot(fpr, tpr, label=f"{name} ({metrics.auroc(clean, values):.2f})", linewidth=1.5)
        ax.plot([0, 1], [0, 1], color="grey", linestyle=":", linewidth=1)
        ax.set_xlim(0, 1)
        ax.set_ylim(0, 1.01)
        ax.set_aspect("equal")
        ax.set_title(panel, fontsize=10)
        ax.set_xlabel("false positive rate (clean flagged)", fontsize=8)
        ax.set_ylabel("true positive rate", fontsize=8)
        ax.tick_params(labelsize=7)
        ax.legend(fontsize=6, loc="lower right", title="set (AUROC)", title_fontsize=6)
        ax.grid(alpha=0.3)
    if title:
        fig.suptitle(title, fontsize=11)
    fig.tight_layout()
    return save(fig, path)
