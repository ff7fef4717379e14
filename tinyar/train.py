"""The training loop, evaluation and checkpoints.

Maximum likelihood by minibatch SGD: each step lowers the mean negative
log-likelihood of a minibatch, an unbiased estimate of KL(p_data || p_theta)
up to the (constant) entropy of the data [1]:

    loss(theta) = -(1/B) sum_b log p_theta(x_b)          (nats per example)

`sgd_steps` is one epoch of the textbook loop (loss, backward, clip, step), and of
truncated BPTT when the minibatches are pieces of parallel streams. `fit` runs epochs
of shuffled minibatches through it, measures the validation NLL after each epoch,
keeps the best parameters, stops early after `patience` epochs without improvement,
and stops (keeping the last good state) if the loss becomes NaN or inf or the run
diverges (the validation NLL climbs far above where it began: fit's docstring). Given
a folder, it writes two checkpoints after each epoch:

    model.npz   the best model so far (lowest validation NLL): what `load` returns
    last.npz    the latest state: parameters, optimizer velocity, the RNG state,
                the schedule's step and the history, so that `fit(..., resume=...)`
                continues exactly as if it had never stopped

A checkpoint is one .npz: the parameters under "param/<name>", the optimizer's
arrays under "optim/<name>", and a JSON record "__tinyar__" holding the format,
the model's class name and constructor arguments (`model.config`) and the
training state. It is written to a temporary file in the same folder and then
renamed (os.replace, atomic), so a crash mid-save never leaves half a file
(atomic_write). A checkpoint whose parameters hold NaN or inf is refused on reading.

References
    [1] S. Ermon, A. Grover, CS236 notes: Autoregressive models (learning).
        https://deepgenerativemodels.github.io/notes/autoregressive/
"""
from __future__ import annotations

import json
import math
import os
import sys
import tempfile
import time
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from tinyar import data as data_
from tinyar import metrics
from tinyar.kernels.runtime import keep_freed_memory
from tinyar.checks import check_count, check_setting
from tinyar.optim import SGD, CosineLR, clip_grad_norm_

FORMAT = "tinyar-checkpoint"
VERSION = 2                # 2: MADE numbers its hidden units by degree (MADE.upgrade_config rebuilds 1)
CHECKPOINTS = ("model.npz", "last.npz")


# ----------------------------------------------------------------- checkpoints
class CheckpointError(ValueError):
    """A file that is not a readable tinyar checkpoint."""


def to_jsonable(value):
    """value with its NumPy arrays, scalars and dtypes turned into JSON types (lists, int, float,
    str), and NaN and inf into None (null): strict JSON has no NaN, so json.dumps(...,
    allow_nan=False) and any JSON reader accept the result."""
    if isinstance(value, dict):
        return {str(k): to_jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [to_jsonable(v) for v in value]
    if isinstance(value, np.ndarray):
        return to_jsonable(value.tolist()) if value.dtype.kind == "f" else value.tolist()
    if isinstance(value, np.integer):
        return int(value)
    if isinstance(value, (float, np.floating)):
        return float(value) if math.isfinite(value) else None
    if isinstance(value, np.dtype) or (isinstance(value, type) and issubclass(value, np.generic)):
        return np.dtype(value).name
    return value


def new_file_mode():
    """0o666 minus the process's umask: the mode open() gives a new file (mkstemp gives 0o600)."""
    umask = os.umask(0)                                  # reading the umask means setting it: put it back
    os.umask(umask)
    return 0o666 & ~umask


def remove_stale_temp_files(folder, names=CHECKPOINTS + ("run.json",)):
    """Delete the temporary files `.<name>.*.tmp` (name in `names`) that atomic_write leaves
    in `folder` when its process is killed mid-write (SIGKILL runs no cleanup); returns them."""
    stale = [tmp for name in names for tmp in Path(folder).glob(f".{name}.*.tmp")]
    for tmp in stale:
        tmp.unlink(missing_ok=True)
    return stale


def atomic_write(path, write, mode="wb"):
    """Write the file at `path` whole or not at all: write(f) fills a temporary file in the same
    folder, which is flushed to disk and renamed over `path` (os.replace, atomic), so a crash
    mid-write leaves the old file as it was. The file gets the mode of any new file (0o666
    minus the umask). Stale temporary files of `path` from a killed process are removed first."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_temp_files(path.parent, [path.name])
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        os.chmod(tmp, new_file_mode())
        with os.fdopen(fd, mode) as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)                          # atomic: the old file or the new, never half
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    return path


def save(model, path, optimizer=None, state=None):
    """Write model (and optionally the optimizer's arrays and a JSON-able `state`) to one .npz, atomically."""
    path = Path(path)
    if not hasattr(model, "config"):
        raise TypeError(f"save: {type(model).__name__} has no `config` (its constructor arguments); "
                        "every tinyar model sets self.config at the end of __init__")
    record = dict(format=FORMAT, version=VERSION, model=type(model).__name__,
                  config=to_jsonable(model.config), state=to_jsonable(state or {}))
    arrays = {f"param/{name}": value for name, value in model.state_dict().items()}
    if optimizer is not None:
        arrays.update({f"optim/{name}": value for name, value in optimizer.state_dict().items()})
    arrays["__tinyar__"] = np.array(json.dumps(record, allow_nan=False))
    return atomic_write(path, lambda f: np.savez(f, **arrays))


def read_checkpoint(path):
    """(record, params, optimizer arrays) of a checkpoint, or a CheckpointError that says what is wrong."""
    path = Path(path)
    if path.is_dir():
        path = path / "model.npz"
    if not path.exists():
        raise FileNotFoundError(f"checkpoint not found: {path}")
    try:
        f = np.load(path, allow_pickle=False)
        if not isinstance(f, np.lib.npyio.NpzFile):
            raise CheckpointError(f"{path}: not a tinyar checkpoint (a single .npy array, not an .npz archive)")
        with f:
            if "__tinyar__" not in f.files:
                raise CheckpointError(f"{path}: not a tinyar checkpoint (no '__tinyar__' record; "
                                      f"it holds {f.files[:5]}{'...' if len(f.files) > 5 else ''})")
            record = json.loads(str(f["__tinyar__"]))
            params = {k[len("param/"):]: f[k] for k in f.files if k.startswith("param/")}
            optim = {k[len("optim/"):]: f[k] for k in f.files if k.startswith("optim/")}
    except CheckpointError:
        raise
    except (zipfile.BadZipFile, EOFError, OSError, ValueError, KeyError, json.JSONDecodeError) as e:
        raise CheckpointError(f"{path}: cannot read this checkpoint; the file is truncated, damaged or not "
                              f"a tinyar checkpoint ({type(e).__name__}: {e})") from None
    if not isinstance(record, dict) or record.get("format") != FORMAT:
        found = record.get("format") if isinstance(record, dict) else record
        raise CheckpointError(f"{path}: not a tinyar checkpoint (format {found!r})")
    if record.get("version", 0) > VERSION:
        raise CheckpointError(f"{path}: checkpoint version {record['version']} is newer than this tinyar "
                              f"reads ({VERSION}); upgrade tinyar")
    if record.get("version", 0) < VERSION and isinstance(record.get("config"), dict):
        record["config"] = model_class(record.get("model")).upgrade_config(record["config"], record.get("version", 0))
    _check_finite(path, params, optim)
    return record, params, optim


def _check_finite(path, params, optim):
    """A CheckpointError naming the arrays of a checkpoint that hold NaN or inf, if any."""
    arrays = dict({f"parameter {k}": v for k, v in params.items()},
                  **{f"optimizer array {k}": v for k, v in optim.items()})
    broken = [name for name, value in arrays.items() if value.dtype.kind in "fc" and not np.isfinite(value).all()]
    if broken:
        raise CheckpointError(f"{path}: {', '.join(broken)} hold NaN or inf; "
                              "a model with such weights can be neither scored nor trained")


def model_class(name):
    """The model class called `name` (its class name, or its command-line name in models.REGISTRY)."""
    import tinyar.models as models
    by_class = {cls.__name__: cls for cls in models.REGISTRY.values()}
    by_class.update({n: getattr(models, n) for n in models.__all__})
    cls = by_class.get(name) or models.REGISTRY.get(name)
    if cls is None:
        raise CheckpointError(f"unknown model class {name!r}; this tinyar knows {sorted(by_class)}")
    return cls


def load(path):
    """The model saved at `path` (a .npz, or a run folder holding model.npz), rebuilt from its
    class name and constructor arguments, with its parameters."""
    record, params, _ = read_checkpoint(path)
    cls = model_class(record["model"])
    try:
        model = cls(**record["config"])
    except TypeError as e:
        raise CheckpointError(f"{path}: cannot rebuild {record['model']} from its config "
                              f"{record['config']} ({e})") from None
    dtypes = {p.dtype for p in params.values()}
    if len(dtypes) == 1 and model.parameters() and dtypes != {model.dtype}:
        model.astype(dtypes.pop())
    try:
        model.load_state_dict(params)
    except (KeyError, ValueError) as e:
        raise CheckpointError(f"{path}: parameters do not fit {record['model']}({record['config']}): {e}") from None
    return model


# ------------------------------------------------------------------ training
def make_optimizer(model, recipe, n_train):
    """SGD over model.parameters() as a recipe says (lr, momentum, nesterov, weight_decay, l1), and
    the cosine schedule over all the run's steps if it asks for one (schedule, warmup); else None."""
    check_count("make_optimizer", "epochs", recipe["epochs"])
    check_count("make_optimizer", "batch_size", recipe["batch_size"])
    optimizer = SGD(model.parameters(), lr=recipe["lr"], momentum=recipe.get("momentum", 0.0),
                    nesterov=bool(recipe.get("nesterov", False)), weight_decay=recipe.get("weight_decay", 0.0),
                    l1=recipe.get("l1", 0.0))
    schedule = None
    if recipe.get("schedule") == "cosine" or (recipe.get("warmup") and recipe.get("schedule") != "constant"):
        total = recipe["epochs"] * math.ceil(n_train / recipe["batch_size"])
        # a short run (a few epochs to try things) keeps at most half its steps for the warm-up
        warmup = min(int(recipe.get("warmup") or 0), total // 2)
        schedule = CosineLR(optimizer, total=total, warmup=warmup)
    return optimizer, schedule


class NonFiniteLoss(FloatingPointError):
    """sgd_steps met a NaN or inf loss, at the minibatch numbered `minibatch` (from 1)."""

    def __init__(self, value, minibatch):
        super().__init__(f"the loss became {value} at minibatch {minibatch}")
        self.value, self.minibatch = value, minibatch


def sgd_steps(model, minibatches, optimizer, rng=None, clip=None, schedule=None, stream=False):
    """One epoch of minibatch SGD, one step per minibatch x; yields (x, loss) after each update.

        loss = -(1/B) sum_b log p(x_b)              the minibatch's mean NLL (nats per row)
        g = d loss / d theta, scaled to norm <= clip; then optimizer.step(), schedule.step()

    stream=True is truncated BPTT: the minibatches are consecutive pieces of B parallel
    streams (data.stream_batches), and the model (one with log_prob_chunk, as models.RNN)
    carries its state from each piece into the next, as a constant: the loss is
    -(1/B) sum_b log p(x_b | its past), and gradients stop at the piece's boundary.
    rng goes to model.before_batch (an order-agnostic model draws its ordering or mask there).
    A NaN or inf loss raises NonFiniteLoss before anything is updated.
    """
    params = model.parameters()
    carried = None                                           # stream: the state after the last piece
    for step, x in enumerate(minibatches):
        model.before_batch(rng)
        optimizer.zero_grad()
        if stream:                                           # -(1/B) sum_b log p(x_b | its past)
            logp, carried = model.log_prob_chunk(x, carried)
            loss = -logp.mean()
        else:
            loss = model.nll(x)                              # -(1/B) sum_b log p(x_b)
        value = float(loss.data)
        if not math.isfinite(value):
            raise NonFiniteLoss(value, step + 1)
        loss.backward()
        if clip is not None:
            clip_grad_norm_(params, clip)
        optimizer.step()
        if schedule is not None:
            schedule.step()
        yield x, value


class Diverged(RuntimeError):
    """The loss, a parameter or the validation NLL became NaN or inf, or the run diverged: fit stops."""


def divergence_limit(start_nll, n_dims):
    """The NLL above which fit calls a run diverged: start + max(|start|, D) nats, where start
    is the untrained model's loss on the run's first minibatch and D the number of values in
    a row. Twice the starting NLL, or one nat per value above it, whichever is higher: SGD
    that works lowers the NLL, a learning rate far too high sends it up by orders of
    magnitude (without ever reaching inf), and this catches that without flagging the
    ups and downs of a noisy run."""
    return start_nll + max(abs(start_nll), n_dims)


def checkpoint_note(history, out):
    """One true sentence on the checkpoints fit has in `out` at this point of the run (history
    is fit's): which epoch model.npz and last.npz hold, or that none was written."""
    if out is None:
        return "no checkpoint was written (no output folder)"
    saved = history.get("saved_epoch")
    if saved is None:
        return f"no checkpoint was written to {out} (no epoch finished)"
    best = history["best_epoch"] if history["best_epoch"] is not None else saved   # no valid: the latest
    return f"{out}/model.npz holds epoch {best} (the best), {out}/last.npz epoch {saved} (to resume)"


class _Guard:
    """The divergence guard: remembers the model and optimizer at the end of each good epoch;
    when the loss, a parameter or the validation NLL becomes NaN or inf, or the NLL climbs
    above divergence_limit, it puts them back, says why and which checkpoints hold what
    (history["stopped"], and log) and raises Diverged."""

    def __init__(self, model, optimizer, history, log, out, n_dims):
        self.model, self.optimizer, self.history, self.log, self.out = model, optimizer, history, log, out
        self.n_dims = n_dims
        self.remember()

    def remember(self):
        self.params = self.model.state_dict()
        self.optim = {k: v.copy() for k, v in self.optimizer.state_dict().items()}

    def loss_failed(self, error, epoch):
        self.stop(f"the loss became {error.value} at epoch {epoch}, minibatch {error.minibatch}")

    def check_parameters(self, epoch):
        broken = [name for name, p in self.model.named_parameters() if not np.isfinite(p.data).all()]
        if broken:                                   # the last step's update overflowed: never save it
            self.stop(f"parameters {', '.join(broken)} became inf or NaN at the end of epoch {epoch}")

    def check_nll(self, entry):
        """Stop if the epoch's validation NLL (train NLL without a validation set) is NaN, inf
        or above divergence_limit."""
        name, value = ("validation", entry["valid_nll"]) if "valid_nll" in entry else ("train", entry["train_nll"])
        if not math.isfinite(value):
            self.stop(f"the {name} NLL became {value} at epoch {entry['epoch']}")
        start = self.history["start_nll"]
        if start is not None and value > divergence_limit(start, self.n_dims):
            self.stop(f"the run diverged: the {name} NLL rose to {value:.6g} at epoch {entry['epoch']}, above "
                      f"{divergence_limit(start, self.n_dims):.6g} = start + max(|start|, D), with start "
                      f"{start:.6g} nats (the untrained model) and D = {self.n_dims} values per row")

    def stop(self, what):
        self.model.load_state_dict(self.params)
        self.optimizer.load_state_dict(self.optim)
        files = f"; {checkpoint_note(self.history, self.out)}" if self.out is not None else ""
        self.history["stopped"] = (f"{what}: training stopped, the model is back at its last good state{files}. "
                                   "Try a smaller learning rate (--lr) or gradient clipping (--clip).")
        self.log(self.history["stopped"])
        raise Diverged(self.history["stopped"])


@dataclass
class _RunState:
    """What fit carries from epoch to epoch, and last.npz keeps for a resume."""
    rng: np.random.Generator                 # shuffling and model.before_batch
    history: dict = field(default_factory=lambda: dict(epochs=[], best_epoch=None, best_valid_nll=None,
                                                       stopped=None, diverged=False, start_nll=None,
                                                       saved_epoch=None))
    bad_epochs: int = 0                      # epochs since the lowest validation NLL
    best_params: dict | None = None          # the parameters of that epoch


def _check_fit_arguments(model, train, valid, settings, stream):
    """train and valid as arrays, or a clear error; settings: fit's counts, clip and patience."""
    train = np.asarray(train)
    valid = None if valid is None else np.asarray(valid)
    if len(train) == 0:
        raise ValueError("fit: the training set is empty")
    for name in ("epochs", "batch_size", "eval_batch_size"):
        check_count("fit", name, settings[name])
    if settings["patience"] is not None:
        check_count("fit", "patience", settings["patience"])
    if settings["clip"] is not None:                 # clip -1 would climb the loss, clip 0 freeze the model
        check_setting("fit", "clip", settings["clip"], 0, low_allowed=False)
    if stream and not hasattr(model, "log_prob_chunk"):
        raise ValueError(f"fit: stream=True (truncated BPTT) needs a model that carries a state from one "
                         f"piece to the next (log_prob_chunk, as models.RNN); {type(model).__name__} has none")
    return train, valid


def _resume(run, path, model, optimizer, schedule):
    """Continue from a last.npz (or its folder): the parameters, the optimizer's velocity, the
    rng, the schedule's step, the history, and the best parameters from model.npz beside it."""
    path = path / "last.npz" if path.is_dir() else path
    record, saved_params, saved_optim = read_checkpoint(path)
    if record["model"] != type(model).__name__ or record["config"] != to_jsonable(model.config):
        raise ValueError(f"fit: {path} holds {record['model']}({record['config']}), "
                         f"not this {type(model).__name__}({to_jsonable(model.config)})")
    model.load_state_dict(saved_params)
    optimizer.load_state_dict(saved_optim)
    state = record["state"]
    run.rng.bit_generator.state = state["rng"]
    run.history = state["history"]
    run.history["stopped"], run.history["diverged"] = None, False
    run.history.setdefault("start_nll", None)
    run.history.setdefault("saved_epoch", len(run.history["epochs"]))
    run.bad_epochs = state["bad_epochs"]
    if schedule is not None and state.get("schedule_t") is not None:
        schedule.t = state["schedule_t"]
        optimizer.lr = schedule.lr_at(schedule.t)
    else:
        optimizer.lr = state.get("lr", optimizer.lr)
    best_path = path.with_name("model.npz")
    if run.history["best_epoch"] is not None and best_path.exists():
        run.best_params = read_checkpoint(best_path)[1]


def _train_epoch(model, train, optimizer, run, epoch, batch_size, clip, schedule, stream, guard, bar):
    """One epoch of SGD over the rows of train; returns the epoch's entry of the history."""
    t0 = time.perf_counter()
    total, seen = 0.0, 0
    minibatches = data_.stream_batches(train, batch_size) if stream else data_.batches(train, batch_size, run.rng)
    try:
        for x, value in sgd_steps(model, minibatches, optimizer, run.rng, clip, schedule, stream):
            if run.history["start_nll"] is None:         # the untrained model's loss: divergence_limit
                run.history["start_nll"] = value
            total += value * len(x)
            seen += len(x)
            bar.update(1)
            bar.set_postfix(epoch=epoch, loss=f"{value:.3f}",
                            ex_s=f"{seen / (time.perf_counter() - t0):.0f}", refresh=False)
    except NonFiniteLoss as e:
        guard.loss_failed(e, epoch)
    seconds = time.perf_counter() - t0
    return dict(epoch=epoch, train_nll=total / seen, lr=optimizer.lr, seconds=seconds, examples_per_s=seen / seconds)


def _evaluate_epoch(model, valid, entry, guard, eval_batch_size):
    """Check the parameters are finite, add the validation NLL to the epoch's entry, and check
    that the NLL has not diverged."""
    guard.check_parameters(entry["epoch"])
    if valid is not None:
        model.before_eval()                                  # e.g. MADE: score under mask 0
        entry["valid_nll"] = metrics.nll(model, valid, batch_size=eval_batch_size)
    guard.check_nll(entry)


def _keep_best(model, entry, run, out):
    """Add the epoch to the history; keep (and write to model.npz) the parameters of the lowest
    validation NLL so far, or, with no validation set, the latest ones."""
    history, epoch = run.history, entry["epoch"]
    history["epochs"].append(entry)
    if "valid_nll" not in entry:
        if out is not None:
            save(model, out / "model.npz", state=dict(epoch=epoch))
    elif history["best_valid_nll"] is None or entry["valid_nll"] < history["best_valid_nll"]:
        history["best_epoch"], history["best_valid_nll"] = epoch, entry["valid_nll"]
        run.best_params = model.state_dict()
        run.bad_epochs = 0
        if out is not None:
            save(model, out / "model.npz", state=dict(epoch=epoch, valid_nll=entry["valid_nll"]))
    else:
        run.bad_epochs += 1


def _early_stop(run, patience, epoch, log):
    """Say in history["stopped"] that training ends, after `patience` epochs without a lower validation NLL."""
    history = run.history
    if patience is not None and run.bad_epochs >= patience:
        history["stopped"] = (f"early stop at epoch {epoch}: no lower validation NLL for {patience} "
                              f"epochs (best {history['best_valid_nll']:.4f} at epoch {history['best_epoch']})")
        log(history["stopped"])


def _save_last(model, optimizer, schedule, run, seed, out):
    """last.npz: everything a resumed run needs to go on exactly as this one would."""
    if out is None:
        return
    run.history["saved_epoch"] = len(run.history["epochs"])
    state = dict(rng=run.rng.bit_generator.state, history=run.history, bad_epochs=run.bad_epochs,
                 lr=optimizer.lr, schedule_t=getattr(schedule, "t", None), seed=seed)
    save(model, out / "last.npz", optimizer=optimizer, state=state)


def _prepare_folder(out, resume):
    """Remove the temporary files a killed run left in `out`; unless the run resumes from `out`
    itself, also an earlier run's checkpoints, so that the folder never mixes files of two runs."""
    if out is None or not out.is_dir():
        return
    remove_stale_temp_files(out)
    resumed_from = None if resume is None else (resume if resume.is_dir() else resume.parent)
    if resumed_from is None or resumed_from.resolve() != out.resolve():
        for name in CHECKPOINTS:
            (out / name).unlink(missing_ok=True)


def _is_terminal(stream):
    isatty = getattr(stream, "isatty", None)
    return bool(isatty is not None and isatty())


def _progress_bar(n_train, batch_size, stream, epochs, start, live):
    """A tqdm bar on stderr over all the run's minibatches; it draws nothing unless `live`."""
    from tqdm.auto import tqdm
    n_batches = n_train // min(batch_size, n_train) if stream else math.ceil(n_train / batch_size)
    return tqdm(total=epochs * n_batches, initial=start * n_batches, unit="batch", disable=not live,
                dynamic_ncols=True, leave=False, file=sys.stderr)


def epoch_line(entry, epochs, elapsed):
    """One epoch of the history as a line for a log file, e.g.
    'epoch 3/10  train NLL 41.2345  valid NLL 42.0012  5230 ex/s  elapsed 12.4 s'."""
    valid = f"  valid NLL {entry['valid_nll']:.4f}" if "valid_nll" in entry else ""
    return (f"epoch {entry['epoch']}/{epochs}  train NLL {entry['train_nll']:.4f}{valid}  "
            f"{entry['examples_per_s']:.0f} ex/s  elapsed {elapsed:.1f} s")


def _show_epoch(bar, entry, lines, epochs, elapsed):
    """The epoch's numbers on the live bar, or, with `lines` (stderr is a file or a pipe, where
    nobody watches a bar), as one epoch_line on stderr."""
    if lines:
        print(epoch_line(entry, epochs, elapsed), file=sys.stderr, flush=True)
        return
    bar.set_postfix(epoch=entry["epoch"], train=f"{entry['train_nll']:.3f}",
                    valid=f"{entry.get('valid_nll', float('nan')):.3f}", ex_s=f"{entry['examples_per_s']:.0f}")


def fit(model, train, valid, optimizer, epochs, batch_size, seed=0, out=None, patience=None, clip=None,
        schedule=None, resume=None, progress=True, callback=None, log=None, eval_batch_size=1000,
        stream=False):
    """Train `model` by minibatch SGD on the rows of `train`; returns the history (a dict).

    optimizer   an optim.SGD over model.parameters()
    epochs      the total number of epochs (a resumed run counts the epochs already done)
    seed        seeds the shuffling and model.before_batch: the same seed, the same run
    out         a folder for model.npz (best) and last.npz (resume state); None: no files.
                A run that does not resume from `out` removes the checkpoints there first;
                every run removes the temporary files a killed save left (.model.npz.*.tmp)
    patience    stop after this many epochs without a lower validation NLL (None: never)
    clip        scale the gradient to norm <= clip (> 0) before each step (None: no clipping)
    schedule    called after every step: schedule.step() (e.g. optim.CosineLR over
                epochs * ceil(len(train) / batch_size) steps); its step count is checkpointed
    resume      a last.npz (or its folder) to continue from
    callback    callback(entry) after each epoch; raising from it stops training (as a kill does)
    log         a function of one string (default: write to stderr, above the progress bar)
    progress    show progress on stderr: a live bar on a terminal; else (a log file, a pipe)
                one line per epoch (epoch_line: epoch, train and valid NLL, examples/s, elapsed)
    stream      the rows of train are consecutive pieces of one stream (data.text()): truncated
                BPTT along batch_size parallel streams, each epoch from <s> (sgd_steps)

    History: {"epochs": [{"epoch", "train_nll", "lr", "seconds", "examples_per_s", "valid_nll"}, ...],
    "best_epoch", "best_valid_nll", "stopped" (why it stopped early, or None), "diverged",
    "start_nll" (the untrained model's loss on the first minibatch), "saved_epoch" (the epoch
    last.npz holds, None if no checkpoint was written; checkpoint_note says it in words)}.
    train_nll is the epoch's mean loss per example: each minibatch's loss weighted by its size.
    After fit the model holds the best parameters (lowest validation NLL) if valid was given,
    else the last ones. A NaN or inf loss (or parameter, checked at the end of each epoch)
    stops training, and so does divergence: a validation NLL (train NLL without a validation
    set) above divergence_limit(start_nll, D). The model is put back to its last good state,
    nothing of the failed epoch is saved, and "stopped" says why and what the checkpoints hold.
    Scores are taken after model.before_eval() (MADE with several masks: mask 0).
    """
    from tqdm.auto import tqdm
    t0 = time.perf_counter()
    log = log or (lambda message: tqdm.write(message, file=sys.stderr))     # above the progress bar
    settings = dict(epochs=epochs, batch_size=batch_size, eval_batch_size=eval_batch_size, patience=patience,
                    clip=clip)
    train, valid = _check_fit_arguments(model, train, valid, settings, stream)
    out = Path(out) if out is not None else None
    keep_freed_memory()                  # every step allocates the same arrays again (kernels/runtime.py)
    run = _RunState(rng=np.random.default_rng(seed))
    if resume is not None:
        _resume(run, Path(resume), model, optimizer, schedule)
    _prepare_folder(out, None if resume is None else Path(resume))
    start = len(run.history["epochs"])
    if start >= epochs:
        log(f"fit: already trained {start} epochs (asked for {epochs}); nothing to do")
    guard = _Guard(model, optimizer, run.history, log, out, n_dims=int(np.prod(train.shape[1:])))
    lines = progress and not _is_terminal(sys.stderr)         # a log file or a pipe: a line per epoch
    bar = _progress_bar(len(train), batch_size, stream, epochs, start, live=progress and not lines)
    try:
        for epoch in range(start + 1, epochs + 1):
            entry = _train_epoch(model, train, optimizer, run, epoch, batch_size, clip, schedule, stream, guard, bar)
            _evaluate_epoch(model, valid, entry, guard, eval_batch_size)
            _keep_best(model, entry, run, out)
            guard.remember()
            _early_stop(run, patience, epoch, log)
            _save_last(model, optimizer, schedule, run, seed, out)
            _show_epoch(bar, entry, lines, epochs, time.perf_counter() - t0)
            if callback is not None:
                callback(entry)
            if run.history["stopped"]:
                break
    except Diverged:
        run.history["diverged"] = True
    finally:
        bar.close()
    if run.best_params is not None:
        model.load_state_dict(run.best_params)
    model.before_eval()                                      # as a reloaded checkpoint would be
    return run.history


def fit_stream(model, ids, optimizer, seq_len=100, batch_size=32, epochs=1, clip=None, valid_ids=None,
               log=print):
    """Train a token RNN by truncated BPTT on one long (n,) stream of ids, of any length.

    The stream becomes batch_size parallel streams (data.parallel_streams), and each epoch
    walks them seq_len ids at a time (the last piece may be shorter): sgd_steps(stream=True),
    as fit(stream=True) does on the equal rows of a text data set. clip: the gradient-norm
    limit, > 0, as in fit (None: no clipping). Returns a list of per-epoch dicts: train_bpc (the epoch's mean
    loss in bits per id), valid_bpc (model.bits_per_char(valid_ids), if given), seconds.
    """
    for name, value in dict(seq_len=seq_len, batch_size=batch_size, epochs=epochs).items():
        check_count("fit_stream", name, value)
    if clip is not None:                             # clip -1 would climb the loss, clip 0 freeze the model
        check_setting("fit_stream", "clip", clip, 0, low_allowed=False)
    rows = data_.parallel_streams(ids, batch_size)
    history = []
    for epoch in range(1, epochs + 1):
        t0, total, count = time.time(), 0.0, 0
        pieces = (rows[:, s:s + seq_len] for s in range(0, rows.shape[1], seq_len))
        try:
            for x, value in sgd_steps(model, pieces, optimizer, clip=clip, stream=True):
                total += value * len(x)                              # nats: the piece's NLL summed over rows
                count += x.size
        except NonFiniteLoss as e:
            raise FloatingPointError(f"fit_stream: {e} in epoch {epoch}") from None
        record = {"epoch": epoch, "train_bpc": total / count / math.log(2), "seconds": time.time() - t0}
        if valid_ids is not None:
            record["valid_bpc"] = model.bits_per_char(valid_ids)
        history.append(record)
        if log:
            log("  ".join(f"{k} {v:.4f}" if isinstance(v, float) else f"{k} {v}" for k, v in record.items()))
    return history


def evaluate(model, dataset, splits=("train", "valid", "test"), batch_size=1000):
    """{split: {"nll": nats per example, "bits_per_dim": ...}} for each split of a data.Dataset.

    For dequantized data ((x + u) / K, data.digits(form="continuous")) also "nll_levels":
    nll + D log K, the bound on the NLL of the K-level data, comparable with discrete models.
    For order-agnostic NADE and multi-mask MADE also "ensemble_nll": the NLL of the
    test-time ensemble (log-mean-exp over orderings or masks), while "nll" scores the
    model's current ordering alone, or MADE's mask 0 (model.before_eval()).
    For a text (dataset.stream) and an RNN also "stream_bits_per_char": the split read as
    one unbroken stream with the state carried throughout, where "nll" scores each row
    from <s> on its own.
    """
    results = {}
    if hasattr(model, "before_eval"):                        # any object with log_prob can be scored
        model.before_eval()
    for split in splits:
        value = metrics.nll(model, dataset.split(split), batch_size)
        results[split] = dict(nll=value, bits_per_dim=metrics.bits_per_dim(value, dataset.n_dims))
        K = getattr(dataset, "dequantized_levels", None)
        if K:
            results[split]["nll_levels"] = value + dataset.n_dims * math.log(K)
        if metrics.has_ensemble(model):
            results[split]["ensemble_nll"] = metrics.ensemble_nll(model, dataset.split(split), batch_size)
        if getattr(dataset, "stream", False) and hasattr(model, "bits_per_char"):
            # the split as the one unbroken text it is, the state carried throughout (RNN)
            results[split]["stream_bits_per_char"] = model.bits_per_char(dataset.split(split).reshape(-1))
    return results
