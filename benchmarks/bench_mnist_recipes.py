"""Time per epoch of every model's binarized-MNIST recipe, and the training time it implies.

    python benchmarks/bench_mnist_recipes.py [--threads 2] [--steps 20] [--models nade,made]

For each model class with a recipe named "mnist" (`Model.recipes["mnist"]`, the one
`python -m tinyar train MODEL --data mnist` uses), this builds the model the recipe asks for
on 28x28 binary images, runs --steps SGD steps of the recipe (loss, backward, clipping if
the recipe clips, the optimizer's step) on random binary minibatches with MNIST's ink
density (13% ones), and prints the median step time, the time of one epoch over the 50,000
training images (steps per epoch x median step, plus one validation pass over 10,000
images), and the recipe's whole training time at that rate, beside the time budget of the
model (60 minutes for FVSBN, NADE and MADE; 3 hours for the others). No data is needed:
the time of a step does not depend on the pixel values beyond their density.
"""
from __future__ import annotations

import argparse
import math
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))     # benchmarks/common.py, from any cwd
import common                                       # noqa: E402  (also puts the repo root on sys.path)

_threads = common.set_threads("2", numba=True)      # before NumPy starts its threads

import numpy as np                                  # noqa: E402

from tinyar import keep_freed_memory, metrics, train   # noqa: E402
from tinyar.data import Dataset                     # noqa: E402
from tinyar.models import REGISTRY                  # noqa: E402
from tinyar.optim import clip_grad_norm_            # noqa: E402

N_TRAIN, N_VALID, INK = 50_000, 10_000, 0.13
BUDGET_MINUTES = {"fvsbn": 60, "nade": 60, "made": 60}         # the others: 180


def mnist_shaped(rng, n):
    """n random 28x28 binary images (flattened) with MNIST's fraction of ink."""
    return (rng.random((n, 784)) < INK).astype(np.float32)


def time_recipe(name, steps, rng):
    """(median seconds per step, seconds per validation pass, recipe) for REGISTRY[name]'s mnist recipe."""
    cls = REGISTRY[name]
    recipe = cls.recipe_named("mnist")
    x = mnist_shaped(rng, 2 * recipe["batch_size"])
    dataset = Dataset("mnist-shaped", "binary", x, x, x, n_dims=784, n_levels=2, image_shape=(28, 28))
    model = cls.for_dataset(dataset, rng=np.random.default_rng(0), **recipe.get("model", {}))
    optimizer, _ = train.make_optimizer(model, recipe, N_TRAIN)
    batch = x[:recipe["batch_size"]]

    def step():
        model.before_batch(rng)
        optimizer.zero_grad()
        model.nll(batch).backward()
        if recipe.get("clip"):
            clip_grad_norm_(model.parameters(), recipe["clip"])
        optimizer.step()

    per_step = common.median_time(step, steps, warmup=2)
    valid = mnist_shaped(rng, 1000)
    model.before_eval()
    per_valid = common.median_time(lambda: metrics.nll(model, valid), 3, warmup=1) * N_VALID / len(valid)
    return per_step, per_valid, recipe


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--threads", default=_threads, help="BLAS and numba threads (default 2)")
    parser.add_argument("--steps", type=int, default=20, help="timed SGD steps per model (median)")
    parser.add_argument("--models", default=None, help="comma-separated names (default: every model with an mnist recipe)")
    args = parser.parse_args(argv)
    names = args.models.split(",") if args.models else sorted(n for n, c in REGISTRY.items() if "mnist" in c.recipes)
    keep_freed_memory()                                 # as train.fit does
    rng = np.random.default_rng(0)
    print(f"threads {args.threads}; {N_TRAIN:,} training images per epoch, {N_VALID:,} validation images\n")
    print("| model | recipe (mnist) | ms / step | s / epoch | epochs | training min | budget min |")
    print("|---|---|---:|---:|---:|---:|---:|")
    for name in names:
        per_step, per_valid, recipe = time_recipe(name, args.steps, rng)
        epoch = math.ceil(N_TRAIN / recipe["batch_size"]) * per_step + per_valid
        shown = {k: v for k, v in recipe.items() if k != "model"}
        print(f"| {name} | {shown} {recipe.get('model', {})} | {1e3 * per_step:.1f} | {epoch:.1f} | "
              f"{recipe['epochs']} | {recipe['epochs'] * epoch / 60:.1f} | {BUDGET_MINUTES.get(name, 180)} |",
              flush=True)


if __name__ == "__main__":
    main()
