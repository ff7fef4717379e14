"""The command line: python -m tinyar COMMAND ... (see --help).

    python -m tinyar train fvsbn --data digits            train, print test NLL, write a run folder
    python -m tinyar sample runs/fvsbn --n 64 --png s.png draw samples from a trained model
    python -m tinyar eval runs/fvsbn --split test         NLL of a trained model on a split
    python -m tinyar gradcheck                            every op and model loss vs finite differences
    python -m tinyar compare --data digits                train and score every model: one table, one plot

A run folder holds model.npz (the best checkpoint), last.npz (to resume), run.json
(the settings and the metrics of every epoch), curve.png and samples.png, all of one run:
`train` refuses a folder that holds another run unless --resume continues it or --overwrite
replaces it. Every flag is checked before anything is trained or written; a misuse ends in
one line `error: ...` (exit code 2 for a bad flag value, 1 for the rest).
"""
from __future__ import annotations

import argparse
import json
import math
import sys
import time
from pathlib import Path

SAMPLE_SEED = 1234
TEXT_SEQ_LEN = 64         # row length of --data text when neither --seq-len nor the recipe gives one
RUN_RECORDS = ("run.json", "model.npz", "last.npz")               # a folder with one of these holds a run
RUN_FILES = RUN_RECORDS + ("curve.png", "samples.png", "samples.txt")   # what --overwrite removes


def cmd_gradcheck(args):
    from tinyar.gradcheck_cases import run_all
    rows = run_all(include_models=not args.ops_only)
    width = max(len(r[0]) for r in rows)
    swidth = max(len(r[1]) for r in rows)
    print(f"{'op':<{width}}  {'shapes':<{swidth}}  {'max abs err':>11}  {'max rel err':>11}  result")
    for name, shapes, abs_err, rel_err, passed, message in rows:
        print(f"{name:<{width}}  {shapes:<{swidth}}  {abs_err:11.2e}  {rel_err:11.2e}  "
              f"{'pass' if passed else 'FAIL  ' + message}")
    failed = sum(not r[4] for r in rows)
    print(f"{len(rows) - failed} passed, {failed} failed")
    return 1 if failed else 0


# --------------------------------------------------------------------- train
RECIPE_FLAGS = {          # recipe key -> command-line flag
    "lr": "--lr", "momentum": "--momentum", "batch_size": "--batch-size", "epochs": "--epochs",
    "nesterov": "--nesterov", "weight_decay": "--weight-decay", "l1": "--l1", "clip": "--clip", "warmup": "--warmup",
    "schedule": "--schedule", "patience": "--patience", "seq_len": "--seq-len",
}


# Values of the flags: argparse calls these on the flag's text and turns an ArgumentTypeError
# into the one line `error: argument --FLAG: expected ..., got '...'`.
def _number(text, convert, accept, expected):
    """convert(text) (int or float) if accept(value) holds, else an ArgumentTypeError."""
    try:
        value = convert(text)
    except ValueError:
        value = None
    if value is None or not accept(value):
        raise argparse.ArgumentTypeError(f"expected {expected}, got {text!r}")
    return value


def positive_int(text):
    """A count (epochs, batch size, samples, units): an integer >= 1."""
    return _number(text, int, lambda v: v >= 1, "an integer >= 1")


def nonnegative_int(text):
    """A seed or a number of steps: an integer >= 0."""
    return _number(text, int, lambda v: v >= 0, "an integer >= 0")


def positive_float(text):
    """A learning rate, a clipping norm or a temperature: a finite number > 0."""
    return _number(text, float, lambda v: math.isfinite(v) and v > 0, "a finite number > 0")


NO_CLIP = "none"


def clip_norm(text):
    """A clipping norm: a finite number > 0, or `none` (no clipping, whatever the recipe says)."""
    return NO_CLIP if text.strip().lower() == NO_CLIP else positive_float(text)


def nonnegative_float(text):
    """A weight decay, an L1 weight or a standard deviation: a finite number >= 0."""
    return _number(text, float, lambda v: math.isfinite(v) and v >= 0, "a finite number >= 0")


def momentum_value(text):
    """SGD momentum mu (v <- mu v + g): in [0, 1), as with mu >= 1 the velocity never forgets."""
    return _number(text, float, lambda v: 0 <= v < 1, "a number in [0, 1)")


def sequence_length(text):
    """Row length of a text: an integer >= 2 (a row holds a character and the one it predicts)."""
    return _number(text, int, lambda v: v >= 2, "an integer >= 2")


def true_or_false(text):
    """A command-line boolean: true/1/yes or false/0/no."""
    if text.lower() in ("1", "true", "yes"):
        return True
    if text.lower() in ("0", "false", "no"):
        return False
    raise ValueError(f"expected true or false, got {text!r}")


def parse_sizes(text):
    """'500,500' -> [500, 500]: models.made.parse_sizes, imported when a flag is parsed."""
    from tinyar.models import made
    return made.parse_sizes(text)


# Each model's own flags, by its name in models.REGISTRY: flag -> (constructor keyword, parser
# of the flag's text, help). A parser `bool` makes a switch that takes no value.
_NADE_OPTIONS = {
    "--hidden": ("n_hidden", positive_int, "hidden units H"),
    "--order": ("order", str, "'natural' or 'random' (drawn from the seed)"),
    "--order-agnostic": ("order_agnostic", true_or_false, "true: a fresh random ordering per minibatch"),
    "--mask-inputs": ("mask_inputs", true_or_false, "true: each visited dimension also adds a learned column "
                                                    "(tells x_d = 0 from unseen; for order-agnostic training)"),
}
_MADE_OPTIONS = {
    "--hidden": ("n_hidden", parse_sizes, "hidden layer sizes, comma-separated (e.g. 500,500)"),
    "--masks": ("n_masks", positive_int, "number of masks (orderings and connectivity) drawn in training"),
    "--order": ("order", str, "'natural' or 'random' (default: natural for one mask, random for several)"),
    "--direct": ("direct", bool, "direct input-to-output connections (--no-direct: none)"),
    "--mask-seed": ("mask_seed", nonnegative_int, "seed of the masks"),
}
_RNN_OPTIONS = {"--hidden": ("n_hidden", positive_int, "hidden units H of the tanh RNN")}
_PIXELCNN_OPTIONS = {
    "--channels": ("n_channels", positive_int, "feature maps per layer"),
    "--layers": ("n_layers", nonnegative_int, "masked layers after the first"),
    "--kernel": ("kernel_size", positive_int, "kernel size of the later layers (odd)"),
    "--first-kernel": ("first_kernel_size", positive_int, "kernel size of the first, mask-A layer (odd)"),
}
MODEL_OPTIONS = {
    "fvsbn": {
        "--order": ("order", str, "'natural' or 'random' (drawn from the seed)"),
        "--init-std": ("init_std", nonnegative_float, "std of the initial weights (0 = zero init, the recipe)"),
    },
    "nade": _NADE_OPTIONS,
    "nade-categorical": _NADE_OPTIONS,
    "rnade": dict(_NADE_OPTIONS, **{
        "--components": ("n_components", positive_int, "mixture components M per dimension")}),
    "made": dict(_MADE_OPTIONS, **{
        "--start-at-marginals": ("start_at_marginals", bool, "output biases start at the logits of the training "
                                                             "data's pixel means (--no-start-at-marginals: at 0)")}),
    "made-categorical": _MADE_OPTIONS,
    "char-rnn": _RNN_OPTIONS,
    "pixel-rnn": _RNN_OPTIONS,
    "transformer": {
        "--layers": ("n_layers", nonnegative_int, "number of Transformer blocks"),
        "--d-model": ("d_model", positive_int, "width of the residual stream"),
        "--heads": ("n_heads", positive_int, "attention heads per block (must divide d_model)"),
        "--d-mlp": ("d_mlp", positive_int, "hidden units of each block's MLP"),
    },
    "pixelcnn": _PIXELCNN_OPTIONS,
    "gated-pixelcnn": _PIXELCNN_OPTIONS,
    "pixelcnn-colour": dict(_PIXELCNN_OPTIONS, **{
        "--channels": ("n_channels", positive_int, "feature maps per layer (a multiple of 3: R, G, B groups)")}),
}


def default_data(model):
    """The --data a model (a name in models.REGISTRY) trains on when none is given: its class's
    `default_data`, else text for a token model and digits for the others."""
    cls = _registry()[model]
    return cls.default_data or ("text" if cls.data_kind == "tokens" else "digits")


def _registry():
    from tinyar.models import REGISTRY
    return REGISTRY


def add_train_arguments(p, model=None):
    """The train command's flags; with `model` (a name in models.REGISTRY), also that model's
    own flags (MODEL_OPTIONS[model])."""
    p.add_argument("model", metavar="MODEL", nargs=None if model else "?",
                   help=f"the model to train: {', '.join(sorted(_registry()))}")
    d = p.add_argument_group("data")
    d.add_argument("--data", default=None,
                   help="digits (default; the form the model scores), digits-binary, digits-levels, "
                        "digits-continuous, mnist (binarized, downloaded once), mnist-idx:FOLDER, photos "
                        "(8x8 colour patches, 256 levels), photos-K (K levels), text, "
                        "or PATH.npy / PATH.npz (default: text for token models, photos for pixelcnn-colour, "
                        "else digits)")
    d.add_argument("--text", default=None, metavar="FILE",
                   help="the text file for --data text (default: Python's bundled documentation)")
    seq_len = _registry()[model].recipe.get("seq_len", TEXT_SEQ_LEN) if model else None
    d.add_argument("--seq-len", type=sequence_length, default=None,
                   help=f"sequence length for --data text (default {seq_len})" if model else
                        f"sequence length for --data text (default: the model's recipe, else {TEXT_SEQ_LEN})")
    names = _registry()[model].recipe_names() if model else None
    r = p.add_argument_group("recipe (defaults: the model's recipe for the data set)")
    r.add_argument("--recipe", default=None, metavar="NAME",
                   help=f"the recipe to start from: {', '.join(names)} (default: mnist for --data mnist "
                        "when the model has one, else default)" if model else
                        "the recipe to start from (see train MODEL --help; default: the data set's)")
    r.add_argument("--lr", type=positive_float, default=None, help="learning rate")
    r.add_argument("--momentum", type=momentum_value, default=None, help="SGD momentum, in [0, 1)")
    r.add_argument("--nesterov", action="store_const", const=True, default=None, help="Nesterov momentum")
    r.add_argument("--weight-decay", type=nonnegative_float, default=None, help="L2 weight decay")
    r.add_argument("--l1", type=nonnegative_float, default=None,
                   help="L1 penalty weight (adds l1 sign(p) to each gradient)")
    r.add_argument("--batch-size", type=positive_int, default=None, help="minibatch size")
    r.add_argument("--epochs", type=positive_int, default=None, help="number of epochs (in all, when resuming)")
    r.add_argument("--clip", type=clip_norm, default=None,
                   help="clip the gradient norm to this value (none: no clipping)")
    r.add_argument("--schedule", choices=["constant", "cosine"], default=None,
                   help="learning-rate schedule (cosine: warm-up then cosine decay to 0)")
    r.add_argument("--warmup", type=nonnegative_int, default=None, help="warm-up steps of the cosine schedule")
    r.add_argument("--patience", type=positive_int, default=None,
                   help="stop after this many epochs without a better validation NLL")
    o = p.add_argument_group("run")
    o.add_argument("--seed", type=nonnegative_int, default=None,
                   help="seed of the initial weights, shuffling and sampling (default 0)")
    o.add_argument("--out", default=None, help="run folder (default runs/MODEL)")
    o.add_argument("--resume", action="store_true",
                   help="continue the run in --out from its last.npz (with the settings in its run.json)")
    o.add_argument("--overwrite", action="store_true",
                   help="replace the run that --out holds (its files are removed before training)")
    o.add_argument("--no-progress", action="store_true", help="no progress bar")
    o.add_argument("--n-samples", type=positive_int, default=64, help="samples drawn into samples.png")
    if model is not None and MODEL_OPTIONS.get(model):
        _add_model_options(p, model)
    return p


def _add_model_options(p, model):
    """The flags of MODEL_OPTIONS[model]; each value lands in args.model_<keyword>."""
    m = p.add_argument_group(f"{_registry()[model].__name__} options")
    for flag, (kwarg, parse, help_) in MODEL_OPTIONS[model].items():
        if parse is bool:                              # --flag / --no-flag: True / False
            m.add_argument(flag, dest=f"model_{kwarg}", action=argparse.BooleanOptionalAction, default=None,
                           help=help_)
        else:
            m.add_argument(flag, dest=f"model_{kwarg}", type=parse, default=None, help=help_,
                           metavar=kwarg.upper())


def recipe_name_for(model_cls, spec, asked=None):
    """The recipe a run uses: --recipe NAME if given, else the one named after the data set
    (`mnist` for --data mnist or mnist-idx:FOLDER) when the model has it, else "default"."""
    if asked is not None:
        if asked not in model_cls.recipe_names():
            raise SystemExit(f"error: argument --recipe: {model_cls.__name__} has no recipe {asked!r} "
                             f"(it has {', '.join(model_cls.recipe_names())})")
        return asked
    return model_cls.recipe_for_data(spec)


def recipe_from_args(model_cls, args, name="default"):
    """The model's recipe `name`, with every recipe flag and model option given on the command
    line on top."""
    recipe = dict(model_cls.recipe_named(name))
    recipe["model"] = dict(recipe.get("model", {}))
    for key in RECIPE_FLAGS:
        value = getattr(args, key, None)
        if value is not None:
            recipe[key] = None if value is NO_CLIP else value
    for key, value in vars(args).items():
        if key.startswith("model_") and value is not None:
            recipe["model"][key[len("model_"):]] = value
    missing = [k for k in ("lr", "batch_size", "epochs") if k not in recipe]
    if missing:
        flags = ", ".join(RECIPE_FLAGS[k] for k in missing)
        raise SystemExit(f"error: {model_cls.__name__}.recipe has no {missing}; give {flags}")
    return recipe


def picture_shape(n_dims):
    """(H, W) to draw an example of n_dims values as: the factor pair H * W = n_dims closest to a
    square, H <= W (12 -> (3, 4); a prime n_dims -> one row (1, n_dims))."""
    height = max(h for h in range(1, math.isqrt(n_dims) + 1) if n_dims % h == 0)
    return height, n_dims // height


def write_samples(model, info, path, n=64, seed=SAMPLE_SEED, **sample_options):
    """Draw n samples and save them as a picture (images) or as text (tokens); returns the samples.

    Images are drawn in grey, or in colour for an image shape (H, W, 3); an example with no
    image shape as a picture_shape(D) image. sample_options
    (e.g. prompt=..., temperature=... for the text models) go to model.sample."""
    import numpy as np

    from tinyar import plot
    from tinyar.data import decode
    if n < 1:
        raise ValueError(f"write_samples: n must be at least 1, got {n}")
    samples = model.sample(n, rng=np.random.default_rng(seed), **sample_options)
    title = f"{info['class']}: {n} samples"
    if info.get("vocab"):
        lines = [decode(row, info["vocab"]) for row in samples[:16]]
        plot.text_samples(lines, path, title=f"{info['class']}: {len(lines)} of the {n} samples in "
                                             f"{Path(path).with_suffix('.txt').name}")
        Path(path).with_suffix(".txt").write_text("\n\n".join(decode(r, info["vocab"]) for r in samples) + "\n")
    else:
        shape = tuple(info.get("image_shape") or picture_shape(info["n_dims"]))
        kind = info["kind"]
        vmax = 1.0 if kind in ("binary", "continuous") else (info.get("n_levels") or 2) - 1
        plot.sample_grid(samples, shape, path, title=title, vmin=0.0, vmax=vmax)
    return samples


def dataset_info(dataset):
    return dict(name=dataset.name, kind=dataset.kind, n_dims=dataset.n_dims, n_levels=dataset.n_levels,
                image_shape=list(dataset.image_shape) if dataset.image_shape else None, vocab=dataset.vocab)


def _print_results(results, dataset):
    for split, r in results.items():
        levels = (f"   ({r['nll_levels']:.4f} nats on the {dataset.dequantized_levels}-level data)"
                  if "nll_levels" in r else "")
        print(f"  {split:<5} NLL {r['nll']:9.4f} nats per example   {r['bits_per_dim']:.4f} bits/dim{levels}")
        if "ensemble_nll" in r:
            print(f"  {split:<5} NLL {r['ensemble_nll']:9.4f} nats per example   (test-time ensemble)")
        if "stream_bits_per_char" in r:
            print(f"  {split:<5} {r['stream_bits_per_char']:.4f} bits/char read as one stream (state carried)")


def _check_run_folder(args, out):
    """Refuse an --out that would mix two runs: a file, or a folder that holds a run unless
    --resume continues it or --overwrite replaces it."""
    if out.exists() and not out.is_dir():
        raise SystemExit(f"error: --out {out} is a file, not a run folder; give the path of a folder")
    if args.resume and args.overwrite:
        raise SystemExit("error: --resume continues the run in --out and --overwrite replaces it: give one of them")
    held = [name for name in RUN_RECORDS if (out / name).exists()]
    if held and not (args.resume or args.overwrite):
        raise SystemExit(f"error: {out} already holds a run ({', '.join(held)}); continue it with --resume, "
                         f"train into another folder with --out, or replace it with --overwrite")


def _refuse_text_flags(args, spec):
    """--text and --seq-len shape the data set `--data text` only: with other data, refuse them
    rather than ignore them."""
    for flag, value in (("--text", args.text), ("--seq-len", args.seq_len)):
        if value is not None and spec != "text":
            data = f"--data {spec}" if spec else "the run's own data set"
            raise SystemExit(f"error: {flag} {value} applies to --data text only, and the data here is {data}: "
                             f"drop {flag}, or give --data text")


def _train_settings(args, cls, out):
    """The run's settings (model, recipe, seed, data): from the flags, or with --resume from the
    run's run.json, with --epochs and --patience on top."""
    if not args.resume:
        spec = args.data or default_data(args.model)
        name = recipe_name_for(cls, spec, args.recipe)
        recipe = recipe_from_args(cls, args, name)
        _refuse_text_flags(args, spec)
        return dict(model=args.model, recipe_name=name, recipe=recipe, seed=0 if args.seed is None else args.seed,
                    data=dict(spec=spec, text=args.text, seq_len=recipe.get("seq_len", TEXT_SEQ_LEN)))
    if not (out / "run.json").exists() or not (out / "last.npz").exists():
        raise SystemExit(f"error: --resume: no run.json and last.npz in {out} to continue from")
    settings = read_run_json(out)["settings"]
    if settings["model"] != args.model:
        raise SystemExit(f"error: --resume: {out} is a run of {settings['model']}, not {args.model}")
    _refuse_resume_conflicts(args, settings, out)
    if args.epochs is not None:
        settings["recipe"]["epochs"] = args.epochs
    if args.patience is not None:
        settings["recipe"]["patience"] = args.patience
    return settings


RESUME_MAY_CHANGE = ("epochs", "patience")            # recipe keys that --resume takes from the flags


def _refuse_resume_conflicts(args, settings, out):
    """--resume goes on with the settings in run.json: refuse a flag that asks for another one."""
    recipe = settings["recipe"]
    asked = [(flag, getattr(args, key, None), recipe.get(key))
             for key, flag in RECIPE_FLAGS.items() if key not in RESUME_MAY_CHANGE]
    asked += [(flag, getattr(args, f"model_{kwarg}", None), recipe["model"].get(kwarg))
              for flag, (kwarg, _, _) in MODEL_OPTIONS.get(args.model, {}).items()]
    asked += [("--recipe", args.recipe, settings.get("recipe_name", "default")),
              ("--seed", args.seed, settings["seed"]), ("--data", args.data, settings["data"].get("spec")),
              ("--text", args.text, settings["data"].get("text"))]
    for flag, given, used in asked:
        if given is not None and (None if given is NO_CLIP else given) != used:
            uses = f"{flag} {used}" if used is not None else f"no {flag} (the default)"
            raise SystemExit(f"error: --resume continues the run in {out} with the settings of its run.json, "
                             f"which uses {uses}: drop {flag} {given}, or start a new run (another --out, "
                             f"or --overwrite)")


def _dataset_and_model(cls, settings):
    """The run's data set and a fresh model for it, or an error that says what does not fit."""
    import numpy as np

    from tinyar import data
    recipe, seed, spec = settings["recipe"], settings["seed"], settings["data"]
    try:
        dataset = data.from_spec(spec["spec"], cls.data_kind, text_path=spec.get("text"),
                                 seq_len=spec.get("seq_len") or TEXT_SEQ_LEN, seed=seed)
        try:
            model = cls.for_dataset(dataset, rng=np.random.default_rng(seed), **recipe["model"])
        except ValueError:
            data.check_fits(dataset, cls)              # values the model cannot score: say which
            raise
        data.check_fits(dataset, model)
    except (OSError, ValueError, TypeError, ConnectionError, RuntimeError) as e:
        raise SystemExit(f"error: {e}")
    return dataset, model


def _optimizer(model, recipe, n_train):
    """train.make_optimizer, with a setting it refuses (e.g. from an edited run.json) as one line."""
    from tinyar import train
    try:
        return train.make_optimizer(model, recipe, n_train)
    except (ValueError, TypeError, KeyError) as e:
        raise SystemExit(f"error: the recipe {json.dumps(recipe)} does not make an optimizer: {e}")


def _run_record(args, argv, cls, settings, dataset, model, schedule, out):
    """What run.json says of the run before training: the command, settings, model, data, schedule."""
    from tinyar import data, train
    info = dict(dataset_info(dataset), **{"class": cls.__name__})
    run = dict(command="python -m tinyar " + " ".join(argv), settings=settings, model_class=cls.__name__,
               config=model.config, n_parameters=model.n_parameters(),
               n_free_parameters=model.n_parameters(free=True), data=info,
               data_fingerprint=data.fingerprint(dataset.train),
               schedule=dict(kind="cosine", total_steps=schedule.total, warmup_steps=schedule.warmup)
               if schedule is not None else dict(kind="constant"))
    if args.resume:
        try:                                           # CheckpointError (a ValueError): damaged last.npz
            run["resumed_at_epoch"] = len(train.read_checkpoint(out / "last.npz")[0]["state"]["history"]["epochs"])
        except ValueError as e:
            raise SystemExit(f"error: {e}")
    return run


def _prepare_run_folder(out, overwrite):
    """Make the run folder; with --overwrite, first remove the files of the run it holds."""
    try:
        out.mkdir(parents=True, exist_ok=True)
        if overwrite:
            for name in RUN_FILES:
                (out / name).unlink(missing_ok=True)
    except OSError as e:
        raise SystemExit(f"error: cannot prepare the run folder {out}: {e}")


def _fit(args, model, dataset, optimizer, schedule, settings, out):
    """train.fit as the run's settings say; (history, seconds)."""
    from tinyar import train
    recipe = settings["recipe"]
    t0 = time.perf_counter()
    try:
        history = train.fit(model, dataset.train, dataset.valid, optimizer, epochs=recipe["epochs"],
                            batch_size=recipe["batch_size"], seed=settings["seed"], out=out,
                            patience=recipe.get("patience"), clip=recipe.get("clip"), schedule=schedule,
                            resume=out / "last.npz" if args.resume else None, progress=not args.no_progress,
                            stream=dataset.stream and hasattr(model, "log_prob_chunk"))   # text + RNN: truncated BPTT
    except ValueError as e:                            # e.g. --resume from a last.npz of another model
        raise SystemExit(f"error: {e}")
    return history, time.perf_counter() - t0


def _print_summary(history, seconds, results, dataset, out):
    from tinyar.train import checkpoint_note
    print(f"trained {len(history['epochs'])} epochs in {seconds:.1f} s (best epoch {history['best_epoch']})"
          + (f"; {history['stopped']}" if history["stopped"] else ""))
    _print_results(results, dataset)
    print(f"test NLL: {results['test']['nll']:.4f} nats ({results['test']['bits_per_dim']:.4f} bits/dim)")
    print(f"wrote {out}/run.json, curve.png, samples.png; {checkpoint_note(history, out)}")


def cmd_train(args, argv):
    from tinyar import plot, train
    cls = _registry()[args.model]
    out = Path(args.out) if args.out else Path("runs") / args.model
    _check_run_folder(args, out)                       # everything is checked before anything is written
    settings = _train_settings(args, cls, out)
    dataset, model = _dataset_and_model(cls, settings)
    optimizer, schedule = _optimizer(model, settings["recipe"], len(dataset.train))
    run = _run_record(args, argv, cls, settings, dataset, model, schedule, out)
    print(f"{cls.__name__} ({model.n_parameters():,} parameters, {model.n_parameters(free=True):,} free) "
          f"on {dataset.describe()}")
    print(f"recipe ({settings.get('recipe_name', 'default')}): {json.dumps(settings['recipe'])}, seed {settings['seed']} -> {out}")
    _prepare_run_folder(out, args.overwrite)
    if not args.resume:
        _write_json(out / "run.json", dict(run, history=None, final=None))    # settings, for --resume
    history, seconds = _fit(args, model, dataset, optimizer, schedule, settings, out)
    results = train.evaluate(model, dataset)
    run.update(history=history, train_seconds=seconds, final=results)
    plot.learning_curve(history, out / "curve.png",
                        title=f"{cls.__name__} on {dataset.name}: test NLL {results['test']['nll']:.3f} nats")
    write_samples(model, run["data"], out / "samples.png", n=args.n_samples)
    _write_json(out / "run.json", run)
    _print_summary(history, seconds, results, dataset, out)
    return 1 if history["diverged"] else 0


def _write_json(path, obj):
    """obj as JSON at path, written whole or not at all (train.atomic_write)."""
    from tinyar.train import atomic_write, to_jsonable
    atomic_write(path, lambda f: json.dump(to_jsonable(obj), f, indent=1), mode="w")


# ------------------------------------------------------------ sample and eval
# What eval, sample and --resume read from a run.json: dotted key -> the type it must have.
RUN_JSON_KEYS = {"model_class": str, "data": dict, "settings": dict, "settings.model": str,
                 "settings.recipe": dict, "settings.recipe.model": dict, "settings.seed": int,
                 "settings.data": dict, "settings.data.spec": str}


def read_run_json(folder):
    """The run.json of a run folder, with every key of RUN_JSON_KEYS; else a one-line error."""
    path = Path(folder) / "run.json"
    try:
        run = json.loads(path.read_text())
    except (OSError, ValueError) as e:                 # json.JSONDecodeError and UnicodeDecodeError too
        raise SystemExit(f"error: {path} is damaged or empty ({type(e).__name__}: {e})")
    missing = []
    for dotted, kind in RUN_JSON_KEYS.items():
        value = run
        for key in dotted.split("."):
            value = value.get(key) if isinstance(value, dict) else None
        if not isinstance(value, kind):
            missing.append(dotted)
    if missing:
        raise SystemExit(f"error: {path} is damaged: it has no {', '.join(missing)} "
                         f"(every run.json that `python -m tinyar train` writes has them)")
    return run


def _open_run(path):
    """(model, run.json or None) of a run folder or a checkpoint file."""
    from tinyar import train
    path = Path(path)
    run = None
    if path.is_dir():
        if not (path / "model.npz").exists():
            raise SystemExit(f"error: {path} holds no model.npz (is it a run folder of `python -m tinyar train`, "
                             f"and did an epoch of it end?)")
        if (path / "run.json").exists():
            run = read_run_json(path)
    elif not path.exists():
        raise SystemExit(f"error: no such run folder or checkpoint: {path}")
    try:
        model = train.load(path)
    except (train.CheckpointError, FileNotFoundError) as e:
        raise SystemExit(f"error: {e}")
    if run is not None and run["model_class"] != type(model).__name__:
        raise SystemExit(f"error: {path} mixes two runs: run.json is a run of {run['model_class']}, model.npz "
                         f"holds a {type(model).__name__}; train into it again with --overwrite")
    return model, run


def cmd_sample(args):
    model, run = _open_run(args.run)
    if run is None:
        raise SystemExit("error: sample needs a run folder (its run.json says how to draw the samples)")
    png = Path(args.png) if args.png else Path(args.run) / "samples.png"
    options = {k: v for k, v in (("prompt", args.prompt), ("temperature", args.temperature)) if v is not None}
    try:
        samples = write_samples(model, run["data"], png, n=args.n, seed=args.seed, **options)
    except TypeError as e:
        if not options:
            raise
        raise SystemExit(f"error: {type(model).__name__}.sample does not take {sorted(options)} ({e})")
    except ValueError as e:
        raise SystemExit(f"error: {e}")
    if options and run["data"].get("vocab"):
        from tinyar.data import decode
        for row in samples[:min(args.n, 4)]:
            print(decode(row, run["data"]["vocab"]) + "\n")
    print(f"wrote {args.n} samples to {png}")
    return 0


def cmd_eval(args):
    from tinyar import data, train
    _refuse_text_flags(args, args.data)
    model, run = _open_run(args.run)
    if args.data is not None:
        source = dict(spec=args.data, text=args.text, seq_len=args.seq_len or TEXT_SEQ_LEN, seed=0)
    elif run is not None:
        source = dict(run["settings"]["data"], seed=run["settings"]["seed"])
    else:
        raise SystemExit("error: eval of a checkpoint file needs --data")
    try:
        dataset = data.from_spec(source["spec"], model.data_kind, text_path=source.get("text"),
                                 seq_len=source.get("seq_len") or TEXT_SEQ_LEN, seed=source["seed"])
        data.check_fits(dataset, model)
    except (OSError, ValueError, TypeError, ConnectionError, RuntimeError) as e:
        raise SystemExit(f"error: {e}")
    splits = ["train", "valid", "test"] if args.split == "all" else [args.split]
    results = train.evaluate(model, dataset, splits, batch_size=args.batch_size)
    print(f"{type(model).__name__} on {dataset.describe()}")
    _print_results(results, dataset)
    return 0


# ------------------------------------------------------------------ compare
def cmd_compare(args):
    from tinyar import compare
    models = [m.strip() for m in args.models.split(",") if m.strip()] if args.models else None
    try:
        compare.compare(args.data, models=models, out=args.out, quick=args.quick, seed=args.seed,
                        progress=args.progress)
    except ValueError as e:
        raise SystemExit(f"error: {e}")
    print((Path(args.out) / "results.md").read_text())
    print(f"wrote {args.out}/results.md, results.json, nll.png")
    return 0


# -------------------------------------------------------------------- parser
def _add_gradcheck_parser(sub):
    p = sub.add_parser("gradcheck", help="check every op's and every model's gradients against finite differences",
                       description="Gradcheck every registered op, composite and model loss in float64; "
                                   "prints a table and exits non-zero if any fails.")
    p.add_argument("--ops-only", action="store_true", help="skip the models' losses")
    p.set_defaults(run=cmd_gradcheck)


def _add_train_parser(sub, model):
    p = sub.add_parser("train", help="train a model; prints its test NLL and writes a run folder",
                       description="Train MODEL by SGD with its default recipe (every flag overrides one "
                                   "setting), keep the best checkpoint by validation NLL, print the final "
                                   "train/valid/test NLL, and write model.npz, last.npz, run.json, curve.png "
                                   "and samples.png into the run folder. `train MODEL --help` also lists "
                                   "the model's own options.")
    add_train_arguments(p, model)
    p.set_defaults(run=None)


def _run_parser(sub, command, help_, description, run_help):
    """The parser of a command that reads a run folder: its positional RUN_DIR argument."""
    p = sub.add_parser(command, help=help_, description=description)
    p.add_argument("run", metavar="RUN_DIR", help=run_help)
    return p


def _add_sample_parser(sub):
    p = _run_parser(sub, "sample", "draw samples from a trained model into a PNG",
                    "Draw samples from the model of a run folder and save them as a grid of images (or as "
                    "text, for a text model).", "a run folder written by `train`")
    p.add_argument("--n", type=positive_int, default=64, help="number of samples (default 64)")
    p.add_argument("--png", default=None, help="output file (default RUN_DIR/samples.png)")
    p.add_argument("--seed", type=nonnegative_int, default=SAMPLE_SEED, help="seed of the sampler")
    p.add_argument("--prompt", default=None, help="text the samples start from (text models; printed too)")
    p.add_argument("--temperature", type=positive_float, default=None,
                   help="sample from softmax(logits / temperature) (< 1 sharper, > 1 flatter)")
    p.set_defaults(run_fn=cmd_sample)


def _add_eval_parser(sub):
    p = _run_parser(sub, "eval", "NLL (nats, bits/dim) of a trained model on a split",
                    "Negative log-likelihood of the model of a run folder (or a checkpoint with --data) on a "
                    "split of its data set.", "a run folder written by `train`, or a checkpoint .npz")
    p.add_argument("--split", choices=["train", "valid", "test", "all"], default="test", help="default test")
    p.add_argument("--data", default=None, help="data set (default: the run's); see `train --help`")
    p.add_argument("--text", default=None, metavar="FILE", help="text file for --data text")
    p.add_argument("--seq-len", type=sequence_length, default=None,
                   help=f"sequence length for --data text (default {TEXT_SEQ_LEN})")
    p.add_argument("--batch-size", type=positive_int, default=1000, help="examples per evaluation batch")
    p.set_defaults(run_fn=cmd_eval)


def _add_compare_parser(sub):
    from tinyar.compare import DEFAULT_MODELS
    p = sub.add_parser("compare", help="train and evaluate every model on one data set; a table and a plot",
                       description="Train every model (each with its recipe, on a budget of epochs that keeps "
                                   "the whole run to a few minutes on 2 cores), then write the test NLL (nats, "
                                   "bits/dim), parameters, training time and the time to draw 64 samples as "
                                   "OUT/results.md, OUT/results.json and a bar plot OUT/nll.png.")
    p.add_argument("--data", default="digits", help="data set (default digits: the binarized digits)")
    p.add_argument("--models", default=None,
                   help=f"comma-separated subset of: {','.join(DEFAULT_MODELS)} (default: all; for --data "
                        "mnist, the models with an MNIST recipe)")
    p.add_argument("--out", default="compare", help="output folder (default compare)")
    p.add_argument("--quick", action="store_true", help="tiny models, one epoch on 200 images (for the tests)")
    p.add_argument("--seed", type=nonnegative_int, default=0, help="seed of every model's weights and shuffling")
    p.add_argument("--progress", action="store_true", help="show each run's progress bar")
    p.set_defaults(run_fn=cmd_compare)


def build_parser(model=None):
    """The parser of every command; with `model` (a name in models.REGISTRY), `train` also takes its options."""
    parser = argparse.ArgumentParser(prog="python -m tinyar",
                                     description="Autoregressive generative models on a small NumPy autograd.")
    sub = parser.add_subparsers(dest="command", required=True)
    _add_gradcheck_parser(sub)
    _add_train_parser(sub, model)
    _add_sample_parser(sub)
    _add_eval_parser(sub)
    _add_compare_parser(sub)
    return parser


def _train_model_name(argv):
    """First pass over `train ...`: the MODEL name (so that its options join the parser), or None."""
    pre = argparse.ArgumentParser(prog="python -m tinyar train", add_help=False)
    add_train_arguments(pre)
    known, _ = pre.parse_known_args(argv[1:])
    return known.model


def main(argv=None):
    argv = list(sys.argv[1:] if argv is None else argv)
    model = None
    if argv and argv[0] == "train":
        model = _train_model_name(argv)
        registry = _registry()
        if model is not None and model not in registry:
            print(f"python -m tinyar train: error: unknown model {model!r}; choose from {', '.join(sorted(registry))}",
                  file=sys.stderr)
            return 2
    args = build_parser(model).parse_args(argv)
    if args.command == "train":
        if model is None:
            build_parser().error(f"train: give a MODEL: {', '.join(sorted(_registry()))}")
        return cmd_train(args, argv)
    if args.command == "gradcheck":
        return args.run(args)
    return args.run_fn(args)


if __name__ == "__main__":
    sys.exit(main())
