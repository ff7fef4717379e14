"""Samples of trained runs side by side: one panel of samples per run folder, titled with its NLL.

A run folder of `python -m tinyar train MODEL --data mnist --out RUN` holds the model
(model.npz) and what it reached (run.json). This draws --n samples from each run's model
with the same seed (x_1 ~ p(x_1), then x_2 ~ p(x_2 | x_1), ...: each model's own sampler)
and puts them in one picture, a panel per run titled with the model, its hidden or channel
sizes and its validation NLL in nats, so that the numbers of the README's binarized-MNIST
table can be set beside what each model draws. The runs themselves take minutes to hours
(the README's table gives each recipe's time); drawing takes seconds. From the README's runs
the titles read "FVSBN: 98.67", "NADE, H = 500: 88.83" and so on, and the likelihood gap
shows: FVSBN draws blotches with a digit's rough outline, NADE whole strokes.

    python demos/mnist_samples.py RUN [RUN ...] [--n 16] [--seed 0] [--out mnist_samples.png]
    python demos/mnist_samples.py --quick       # two runs of one epoch on the 8x8 digits, made here
"""
from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path

import numpy as np

from tinyar import cli, plot, train


def panel_title(run, model):
    """'NADE, H = 500: 88.83' from a run's run.json and model: class, size, validation NLL."""
    config, name = run["config"], type(model).__name__
    if "n_hidden" in config:
        name += f", H = {config['n_hidden']}".replace("[", "").replace("]", "")
    elif "n_channels" in config:
        name += f", {config['n_layers']} x {config['n_channels']}"
    valid = ((run.get("final") or {}).get("valid") or {}).get("nll")     # None until an epoch has ended
    return name if valid is None else f"{name}: {valid:.2f}"


def draw_panels(runs, path, n=16, seed=0):
    """One figure, a panel of n samples per run folder, each drawn with the same seed (values
    scaled to [0, 1]: K-level samples divided by K - 1)."""
    panels = []
    for folder in runs:
        run = json.loads((Path(folder) / "run.json").read_text())
        model = train.load(folder)
        info = run["data"]
        shape = tuple(info.get("image_shape") or cli.picture_shape(info["n_dims"]))
        samples = model.sample(n, rng=np.random.default_rng(seed))
        top = 1.0 if info["kind"] in ("binary", "continuous") else (info.get("n_levels") or 2) - 1
        panels.append((panel_title(run, model), plot.image_grid(samples / top, shape)))
    fig = plot.figure(3.0 * len(panels), 3.4)
    for k, (title, grid) in enumerate(panels):
        ax = fig.add_subplot(1, len(panels), k + 1)
        ax.imshow(grid, cmap=plot.grey(), vmin=0.0, vmax=1.0, interpolation="nearest")
        ax.set_title(title, fontsize=9)
        ax.set_axis_off()
    fig.tight_layout()
    return plot.save(fig, path)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("runs", nargs="*", help="run folders of `python -m tinyar train`")
    parser.add_argument("--n", type=int, default=16, help="samples per run")
    parser.add_argument("--seed", type=int, default=0, help="seed of the samples")
    parser.add_argument("--out", default="mnist_samples.png", help="the PNG to write")
    parser.add_argument("--quick", action="store_true", help="train two small runs on the digits here and draw them")
    args = parser.parse_args(argv)
    if not args.runs and not args.quick:
        parser.error("give one or more run folders (or --quick)")
    if not args.quick:
        print(f"wrote {draw_panels(args.runs, args.out, n=args.n, seed=args.seed)}")
        return
    with tempfile.TemporaryDirectory() as scratch:
        runs = [str(Path(scratch) / name) for name in ("fvsbn", "nade")]
        for name, folder in zip(("fvsbn", "nade"), runs):
            code = cli.main(["train", name, "--data", "digits-binary", "--epochs", "1", "--out", folder,
                             "--no-progress", "--n-samples", "4"])
            if code:
                raise SystemExit(f"error: training the quick {name} run failed ({code})")
        print(f"wrote {draw_panels(runs, args.out, n=args.n, seed=args.seed)}")


if __name__ == "__main__":
    main()
