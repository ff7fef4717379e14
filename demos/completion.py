"""Sampling and completion: draw whole digits, or the bottom half given the top half.

An autoregressive model samples one dimension at a time: x_1 ~ p(x_1), x_2 ~ p(x_2 | x_1),
... Stopping the chain rule after the observed dimensions turns the same sampler into an
exact conditional sampler, when the observed ones come first in the model's ordering:

    p(x) = p(x_O) p(x_U | x_O)   so   x_U ~ prod_{k > m} p(x_{o_k} | x_{o_<k})

(tinyar.queries.complete; log p(x_O), the first m terms, is queries.log_prob_observed).
The top half of an image is a prefix of the raster order, so any model trained in that
order completes the bottom half exactly. The left half is not a prefix: that needs a model
trained on every ordering, the order-agnostic NADE (Uria et al. 2014), which conditions on
any observed set by visiting it first.

The demo trains a NADE (raster order) and an order-agnostic NADE with mask inputs on the
binarized digits (60 epochs each, ~25 s; --quick: 1 epoch on 200 images) and draws:

  samples.png          32 unconditional NADE samples
  completion_top.png   6 test digits: the original, the observed top half (the rest grey),
                       and 4 completions of the bottom half by the NADE
  completion_left.png  the same with the LEFT half observed, completed by the
                       order-agnostic NADE

Expect completions that continue the observed strokes into plausible digits (a 0's top
half mostly closes into a 0; an ambiguous top gives different digits in different
samples), and the observed pixels unchanged (checked). Printed: the NADE's test NLL, 17.99
nats, and the mean log p(top half) of the test digits, -9.70 nats (the whole image: -17.99).

    python demos/completion.py [--quick] [--out DIR]
"""
from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from tinyar import data, metrics, queries, train
from tinyar.models import NADE
from tinyar.optim import SGD
from tinyar.plot import sample_grid


def completions_figure(x, observed, completions, path, title):
    """Rows: original | observed (unobserved grey) | completions."""
    n, k = completions.shape[:2]
    shown = np.where(observed, x, 0.5)
    rows = [np.concatenate([x[i:i + 1], shown[i:i + 1], completions[i]], axis=0) for i in range(n)]
    sample_grid(np.concatenate(rows), (8, 8), path, n_cols=k + 2, title=title, vmin=0, vmax=1)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="1 epoch on 200 images (for the tests)")
    parser.add_argument("--out", default="completion", help="folder for the PNGs")
    args = parser.parse_args(argv)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)

    digits = data.digits("binary")
    train_x, epochs = (digits.train[:200], 1) if args.quick else (digits.train, 60)
    models = {}
    for name, options in (("NADE", {}), ("order-agnostic NADE", dict(order_agnostic=True, mask_inputs=True))):
        model = NADE(64, n_hidden=100, rng=0, **options)
        optimizer = SGD(model.parameters(), lr=0.03, momentum=0.9)
        train.fit(model, train_x, digits.valid, optimizer, epochs=epochs, batch_size=100, seed=0, progress=False,
                  log=lambda s: None)
        models[name] = model
    nade, oa = models["NADE"], models["order-agnostic NADE"]
    print(f"NADE, {epochs} epochs: test NLL {metrics.nll(nade, digits.test):.2f} nats")

    rng = np.random.default_rng(0)
    sample_grid(nade.sample(32, rng=rng), (8, 8), out / "samples.png", n_cols=8, title="NADE: 32 samples",
                vmin=0, vmax=1)

    x = digits.test[:6]
    n_completions = 4
    for where, model, mask, name in (("top", nade, queries.mask_top(64, (8, 8), 4), "NADE"),
                                     ("left", oa, queries.mask_left(64, (8, 8), 4), "order-agnostic NADE")):
        repeated = np.repeat(x, n_completions, axis=0)                       # (6 * 4, 64)
        filled = queries.complete(model, repeated, mask, rng=rng)
        assert np.array_equal(filled[:, mask], repeated[:, mask]), "completion changed observed pixels"
        completions = filled.reshape(len(x), n_completions, 64)
        completions_figure(x, mask, completions, out / f"completion_{where}.png",
                           f"{name}: {where} half observed | {n_completions} completions")
    log_top = queries.log_prob_observed(nade, digits.test, queries.mask_top(64, (8, 8), 4))
    print(f"mean log p(top half) of the test digits: {log_top.mean():.2f} nats; "
          f"whole image: {-metrics.nll(nade, digits.test):.2f} nats")
    print(f"wrote {out}/samples.png, {out}/completion_top.png, {out}/completion_left.png")
    return dict(log_top=float(log_top.mean()))


if __name__ == "__main__":
    main()
