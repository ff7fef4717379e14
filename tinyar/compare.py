"""One comparison of every model on the same data: train each, score each, one table.

    python -m tinyar compare --data digits [--models fvsbn,nade,...] [--quick] [--out compare]

For every model of the list, `compare`
  1. builds it with `cls.for_dataset(dataset, **recipe["model"])` (its default sizes),
  2. trains it with train.fit and its class `recipe` (SGD, momentum, schedule, clipping),
     but with the epoch budget of BUDGETS below, so that the whole run takes a few minutes
     on 2 cores (the recipes themselves aim at the best figure, in up to 200 epochs); on
     binarized MNIST (--data mnist) with its `mnist` recipe as it is, and by default only
     the models that have one,
  3. keeps the parameters of the best validation epoch and reports, on the test split,

         test NLL   -(1/N) sum_n log p(x_n)  in nats per image   (lower is better)
         bits/dim   NLL / (D ln 2)
         params     the numbers stored, and (free) those a mask lets act on the output
         train s    wall-clock seconds of training (including the per-epoch validation)
         sample s   wall-clock seconds to draw 64 samples

and writes results.md (a Markdown table), results.json and nll.png (a bar plot of the test
NLL and the training time) into the output folder.

Every model here scores the same binarized 8x8 digits (data.digits(form="binary"); the
token models read the pixels as the ids 0 and 1), so their NLLs are comparable: each is
an exact log-likelihood of the same 300 test images. The order-agnostic NADE ("nade-oa")
is one NADE trained on a fresh random ordering per minibatch (with the mask inputs of
Uria et al. 2014) and scored as an ensemble: log (1/16) sum_k p_k(x) over 16 orderings,
a mixture of normalized models and so itself a normalized model.

The figures depend on the machine's speed only through the times; the NLLs are fixed by
the seed (each model is trained with the same seed, 0 unless --seed says otherwise).
"""
from __future__ import annotations

import json
import math
import time
from pathlib import Path

import numpy as np

# name -> (REGISTRY name, model kwargs on top of the recipe's, recipe overrides): the budgets
# that keep the full run at ~5-8 minutes on 2 cores (the times: an otherwise idle machine).
# Models whose recipe already fits keep it.
BUDGETS = {
    "fvsbn": ("fvsbn", {}, {}),                                        # recipe: 200 epochs (~1 s)
    "nade": ("nade", {}, {}),                                          # recipe: 200 epochs (~4 s)
    "nade-oa": ("nade", dict(order_agnostic=True, mask_inputs=True), {}),   # the same recipe (~4 s)
    "made": ("made", {}, {}),                                          # recipe: 200 epochs (~3 s)
    "pixel-rnn": ("pixel-rnn", {}, dict(epochs=120, lr=0.003, clip=10.0)),  # recipe: 200 at lr 0.001 (~2 min)
    "transformer": ("transformer", {}, dict(epochs=60)),               # recipe: 100 (~1.5 min)
    "pixelcnn": ("pixelcnn", {}, {}),                                  # recipe: 20 epochs (~12 s)
    "gated-pixelcnn": ("gated-pixelcnn", {}, {}),                      # recipe: 40 epochs (~1.3 min)
}
DEFAULT_MODELS = list(BUDGETS)

# --quick (the tests): a tiny version of each model, one epoch on 200 training images
QUICK_SIZES = {
    "nade": dict(n_hidden=16), "made": dict(n_hidden=[32]), "pixel-rnn": dict(n_hidden=16),
    "transformer": dict(n_layers=1, d_model=16, n_heads=2, d_mlp=32),
    "pixelcnn": dict(n_channels=8, n_layers=1), "gated-pixelcnn": dict(n_channels=8, n_layers=1),
}
QUICK_N = dict(train=200, valid=100, test=100, samples=8)
ENSEMBLE_ORDERINGS = 16


def _spec(name, data="digits"):
    """(model class, recipe) of one entry of the comparison: the class's recipe for the data
    set (Model.recipe_for_data: `mnist` for binarized MNIST), with the budget of BUDGETS
    applied to the default recipe."""
    from tinyar.models import REGISTRY
    if name not in BUDGETS:
        known = ", ".join(BUDGETS)
        raise ValueError(f"compare: unknown model {name!r}; choose from {known}")
    registry_name, model_kwargs, overrides = BUDGETS[name]
    cls = REGISTRY[registry_name]
    recipe_name = cls.recipe_for_data(data)
    recipe = dict(cls.recipe_named(recipe_name), **(overrides if recipe_name == "default" else {}))
    recipe["model"] = dict(recipe.get("model", {}), **model_kwargs)
    return cls, recipe


def default_models(data="digits"):
    """Every entry of BUDGETS; for binarized MNIST, those whose class has an MNIST recipe (the
    others' digits recipes would take hours on 28x28 images)."""
    from tinyar.models import REGISTRY
    if str(data) == "mnist" or str(data).startswith("mnist-idx:"):
        return [n for n, (registry_name, _, _) in BUDGETS.items() if "mnist" in REGISTRY[registry_name].recipes]
    return list(BUDGETS)


def run_one(name, dataset, quick=False, seed=0, n_samples=64, progress=False, log=print, data="digits"):
    """Train and evaluate one model on `dataset` (named `data` on the command line, which picks
    the recipe); returns its row of the table (a dict)."""
    from tinyar import metrics, train
    cls, recipe = _spec(name, data)
    registry_name = BUDGETS[name][0]
    if quick:
        recipe = dict(recipe, epochs=1)
        recipe["model"] = dict(recipe["model"], **QUICK_SIZES.get(registry_name, {}))
        recipe.pop("warmup", None)                               # one epoch: no warm-up
    rng = np.random.default_rng(seed)
    model = cls.for_dataset(dataset, rng=rng, **recipe["model"])
    train_x = dataset.train[:QUICK_N["train"]] if quick else dataset.train
    valid_x = dataset.valid[:QUICK_N["valid"]] if quick else dataset.valid
    test_x = dataset.test[:QUICK_N["test"]] if quick else dataset.test
    optimizer, schedule = train.make_optimizer(model, recipe, len(train_x))

    t0 = time.perf_counter()
    history = train.fit(model, train_x, valid_x, optimizer, epochs=recipe["epochs"],
                        batch_size=recipe["batch_size"], seed=seed, patience=recipe.get("patience"),
                        clip=recipe.get("clip"), schedule=schedule, progress=progress, log=log)
    train_seconds = time.perf_counter() - t0

    if getattr(model, "order_agnostic", False):                  # the ensemble of orderings
        scores = []
        for start in range(0, len(test_x), 1000):
            batch = test_x[start:start + 1000]
            scores.append(model.ensemble_log_prob(batch, n_orderings=ENSEMBLE_ORDERINGS,
                                                  rng=np.random.default_rng(seed)).data)
        nll = float(-np.concatenate(scores).astype(np.float64).mean())
    else:
        nll = metrics.nll(model, test_x)

    t0 = time.perf_counter()
    model.sample(n_samples, rng=np.random.default_rng(seed))
    sample_seconds = time.perf_counter() - t0
    class_name = cls.__name__
    if getattr(model, "order_agnostic", False):
        class_name += f", {ENSEMBLE_ORDERINGS}-ordering ensemble"
    return dict(model=name, class_name=class_name, test_nll=nll,
                bits_per_dim=metrics.bits_per_dim(nll, dataset.n_dims), n_parameters=model.n_parameters(),
                n_free_parameters=model.n_parameters(free=True),
                epochs=len(history["epochs"]), best_epoch=history["best_epoch"],
                train_seconds=train_seconds, sample_seconds=sample_seconds, n_samples=n_samples,
                diverged=bool(history["diverged"]), model_obj=model)


def compare(data="digits", models=None, out="compare", quick=False, seed=0, progress=False, log=print):
    """Train and evaluate each model of `models` (default: all of BUDGETS) on `data` (a
    data.from_spec name); write results.md, results.json and nll.png into `out`.

    Returns the rows (dicts; "model_obj" holds each trained model)."""
    from tinyar import data as data_
    names = list(default_models(data) if models is None else models)
    for name in names:
        _spec(name, data)                                        # unknown names fail before any training
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    n_samples = QUICK_N["samples"] if quick else 64
    rows = []
    for name in names:
        cls, _ = _spec(name, data)
        dataset = data_.from_spec(data, cls.data_kind, seed=seed)
        log(f"compare: {name} ({cls.__name__}) on {dataset.describe()}")
        row = run_one(name, dataset, quick=quick, seed=seed, n_samples=n_samples, progress=progress, log=log,
                      data=data)
        log(f"  test NLL {row['test_nll']:.2f} nats ({row['bits_per_dim']:.4f} bits/dim), "
            f"{row['n_parameters']:,} params ({row['n_free_parameters']:,} free), "
            f"{row['epochs']} epochs in {row['train_seconds']:.1f} s, "
            f"{n_samples} samples in {row['sample_seconds']:.2f} s")
        rows.append(row)
    title = f"{data}{' (quick)' if quick else ''}"
    (out / "results.md").write_text(markdown_table(rows, title=title, seed=seed))
    plain = [{k: v for k, v in row.items() if k != "model_obj"} for row in rows]
    (out / "results.json").write_text(json.dumps(dict(data=data, quick=quick, seed=seed, rows=plain), indent=1))
    bar_plot(rows, out / "nll.png", title=f"test NLL on {title}")
    return rows


def markdown_table(rows, title="digits", seed=0):
    """The rows as a Markdown table, best test NLL first (a run with no finite NLL last)."""
    n_samples = rows[0]["n_samples"] if rows else 64
    lines = [f"Test NLL on {title}: nats per image (lower is better), trained with seed {seed}.", "",
             f"| model | test NLL (nats) | bits/dim | parameters (free) | epochs (best) | train s | sample {n_samples} s |",
             "|---|---:|---:|---:|---:|---:|---:|"]
    for r in sorted(rows, key=lambda r: (not math.isfinite(r["test_nll"]), r["test_nll"])):
        note = " (diverged)" if r["diverged"] else ""
        lines.append(f"| {r['model']} ({r['class_name']}){note} | {r['test_nll']:.2f} | {r['bits_per_dim']:.4f} | "
                     f"{r['n_parameters']:,} ({r['n_free_parameters']:,}) | {r['epochs']} ({r['best_epoch']}) | {r['train_seconds']:.1f} | "
                     f"{r['sample_seconds']:.2f} |")
    return "\n".join(lines) + "\n"


def bar_plot(rows, path, title="test NLL"):
    """Two bar charts side by side: test NLL (nats) and training time (s) per model."""
    from tinyar.plot import figure, save
    names = [r["model"] for r in rows]
    fig = figure(11, 4)
    ax1, ax2 = fig.subplots(1, 2)
    nll = [r["test_nll"] for r in rows]
    bars = ax1.bar(names, nll, color="#4c72b0")
    ax1.bar_label(bars, fmt="%.2f", fontsize=8)
    low = min(nll)
    ax1.set_ylim(max(0.0, math.floor(low - 0.25 * (max(nll) - low + 1))), max(nll) + 0.1 * (max(nll) - low + 1))
    ax1.set_ylabel("test NLL (nats per image)")
    ax1.set_title(title)
    bars = ax2.bar(names, [r["train_seconds"] for r in rows], color="#dd8452")
    ax2.bar_label(bars, fmt="%.0f", fontsize=8)
    ax2.set_ylabel("training time (s)")
    ax2.set_title("training time")
    for ax in (ax1, ax2):
        ax.tick_params(axis="x", labelrotation=40, labelsize=8)
    fig.tight_layout()
    return save(fig, path)
