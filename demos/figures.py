"""The README's figures: seven pictures drawn by the demos, made small enough to commit.

Each figure comes from a demo of this folder; this script loads the demo, calls its
main() (or, for the attention maps, its train_model and plot_maps) with a scratch folder
as output, and nothing is re-implemented here. Then each picture is made fit for a README
column: a figure much wider than the column is cut at a blank column between its panels
and the two parts stacked, anything still wider than 800 pixels is scaled down, and the
colours go into a palette of 128: a few kB to a few tens of kB a figure.

  nade_samples.png      completion.py       32 samples of a NADE trained on the binarized digits
  made_masks.png        made_masks.py       the masks of a small MADE and the path counts they allow
                                            (strictly lower triangular in the ordering); drawn before
                                            any training, so the demo's --quick run gives the same picture
  receptive_field.png   receptive_field.py  the inputs one PixelCNN output pixel depends on, from the
                                            autograd Jacobian: the plain stack's blind spot, the gated none
  attention_maps.png    attention_maps.py   every head's attention over one test digit, for three query pixels
  rnn_gradients.png     rnn_gradients.py    ||dL/dh_t|| against the distance from the loss: vanishing in a
                                            tanh RNN, exploding with a large W_hh, carried by an LSTM
  nade_caching.png      nade_caching.py     time of log p(x) against D: O(D^2 H) uncached, O(D H) cached
  colour_patches.png    colour_patches.py   8x8 colour photo patches beside samples of a colour PixelCNN,
                                            CategoricalNADE and CategoricalMADE, with their bits/dim

Fixed seeds (each demo's own). About three minutes on 2 cores, most of it the colour models'
training, the Transformer's 30 epochs and the NADE caching timings; the timing figure depends on the machine, the
others do not.

    python demos/figures.py                 # writes demos/figures/*.png
    python demos/figures.py --quick         # the demos' quick modes, into a new temporary folder
    python demos/figures.py [--quick] --out DIR [--only nade_caching ...]
"""
from __future__ import annotations

import argparse
import importlib.util
import os
import tempfile
import time
from pathlib import Path

# Set before NumPy loads its BLAS: one BLAS thread is enough for these small models, and
# two-thread OpenBLAS slows down badly when another process is busy (benchmarks/README.md).
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
os.environ.setdefault("MPLBACKEND", "Agg")

import numpy as np  # noqa: E402  (after the environment above)

HERE = Path(__file__).resolve().parent
MAX_WIDTH = 800                       # pixels: about the width of a README column
COLOURS = 128                         # a palette PNG: a few tens of kB per figure


def load_demo(name):
    """Import demos/<name>.py as a module (the demos folder is not a package)."""
    spec = importlib.util.spec_from_file_location(f"demo_{name}", HERE / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def quick_flag(quick):
    return ["--quick"] if quick else []


# One function per figure: (scratch folder, quick) -> (the PNG the demo wrote, fold), where
# fold is None or the fraction of the figure's width near which to cut it into two rows.

def nade_samples(work, quick):
    load_demo("completion").main(quick_flag(quick) + ["--out", str(work)])
    return work / "samples.png", None


def made_masks(work, quick):
    load_demo("made_masks").main(["--quick", "--out", str(work)])        # the masks do not depend on training
    return work / "made_masks.png", 1 / 2                                # M^1, M^2 | M^V, the paths


def receptive_field(work, quick):
    path = work / "receptive_field.png"
    load_demo("receptive_field").main(quick_flag(quick) + ["--out", str(path)])
    return path, None


def attention_maps(work, quick):
    demo = load_demo("attention_maps")
    model, ds, test_nll = demo.train_model(quick)
    print(f"Transformer: test NLL {test_nll:.2f} nats")
    path = work / "attention_maps.png"
    demo.plot_maps(model, ds.test[:1].astype(np.int64), path)         # one digit, the demo's three query pixels
    heads, blocks = model.config["n_heads"], model.config["n_layers"]
    return path, (1 + heads) / (1 + blocks * heads)                   # the digit and block 1 | the other blocks


def rnn_gradients(work, quick):
    path = work / "rnn_gradients.png"
    load_demo("rnn_gradients").main(quick_flag(quick) + ["--out", str(path)])
    return path, None


def colour_patches(work, quick):
    path = work / "colour_patches.png"
    load_demo("colour_patches").main(quick_flag(quick) + ["--out", str(path)])
    return path, None


def nade_caching(work, quick):
    load_demo("nade_caching").main(quick_flag(quick) + ["--out", str(work)])
    return work / "nade_caching.png", None


# nade_caching holds numba and BLAS to one thread for the rest of the process: it runs last.
FIGURES = [nade_samples, made_masks, receptive_field, attention_maps, rnn_gradients, colour_patches, nade_caching]


def fold(image, near):
    """Cut image at its blank (white) column nearest the fraction near of its width and stack
    the two parts, the second right-aligned under the first (panels stay in their columns)."""
    from PIL import Image
    grey = np.asarray(image.convert("L"))
    blank = np.flatnonzero((grey > 245).all(axis=0))
    cut = int(blank[np.argmin(np.abs(blank - near * image.width))])
    left, right = image.crop((0, 0, cut, image.height)), image.crop((cut, 0, image.width, image.height))
    width = max(left.width, right.width)
    folded = Image.new("RGB", (width, 2 * image.height), "white")
    folded.paste(left, (0, 0))
    folded.paste(right, (width - right.width, image.height))
    return folded


def shrink(source, target, fold_at=None, max_width=MAX_WIDTH, colours=COLOURS):
    """Copy the PNG source to target for the README: folded into two rows if it is much wider
    than max_width, scaled down to max_width, its colours in a palette. Returns the bytes written."""
    from PIL import Image
    with Image.open(source) as opened:
        image = opened.convert("RGB")
    if fold_at is not None and image.width > 1.5 * max_width:
        image = fold(image, fold_at)
    if image.width > max_width:
        image = image.resize((max_width, round(image.height * max_width / image.width)), Image.LANCZOS)
    image.quantize(colours, method=Image.Quantize.FASTOCTREE).save(target, optimize=True)
    return Path(target).stat().st_size


def make_figures(out, quick=False, only=None):
    """Draw the figures of FIGURES (those named in only, or all) into the folder out;
    returns {file name: bytes}."""
    out.mkdir(parents=True, exist_ok=True)
    sizes = {}
    with tempfile.TemporaryDirectory(prefix="tinyar-figures-") as scratch:
        for figure in FIGURES:
            if only and figure.__name__ not in only:
                continue
            work = Path(scratch) / figure.__name__
            work.mkdir()
            t0 = time.perf_counter()
            source, fold_at = figure(work, quick)
            name = f"{figure.__name__}.png"
            sizes[name] = shrink(source, out / name, fold_at)
            print(f"== {out / name}: {sizes[name] / 1024:.0f} kB, {time.perf_counter() - t0:.0f} s\n", flush=True)
    return sizes


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="the demos' quick modes (for the tests)")
    parser.add_argument("--out", default=None,
                        help="folder for the PNGs (default: demos/figures, or a new temporary folder with --quick)")
    parser.add_argument("--only", nargs="+", choices=[f.__name__ for f in FIGURES], metavar="NAME",
                        help="draw only these figures: " + ", ".join(f.__name__ for f in FIGURES))
    args = parser.parse_args(argv)
    if args.out is not None:
        out = Path(args.out)
    elif args.quick:
        out = Path(tempfile.mkdtemp(prefix="tinyar-figures-quick-"))
    else:
        out = HERE / "figures"
    sizes = make_figures(out, quick=args.quick, only=args.only)
    print(f"wrote {len(sizes)} figures to {out} ({sum(sizes.values()) / 1024:.0f} kB in all)")
    return dict(out=out, sizes=sizes)


if __name__ == "__main__":
    main()
