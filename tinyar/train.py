"""The training loop, evaluation and checkpoints.

Maximum likelihood by minibatch SGD: each step lowers the mean negative
log-likelihood of a minibatch, an unbiased estimate of KL(p_data || p_theta)
up to the (constant) entropy of the data [1]:

    loss(theta) = -(1/B) sum_b log p_theta(x_b)          (nats per example)

`fit` runs epochs of shuffled minibatches, measures the validation NLL after
each epoch, keeps the best parameters, stops early after `patience` epochs
without improvement, and stops (keeping the last good state) if the loss becomes
NaN or inf. Given a folder, it writes two checkpoints after each epoch:

    model.npz   the best model so far (lowest validation NLL): what `load` returns
    last.npz    the latest state: parameters, optimizer velocity, the RNG state,
                the schedule's step and the history, so that `fit(..., resume=...)`
                continues exactly as if it had never stopped

A checkpoint is one .npz: the parameters under "param/<name>", the optimizer's
arrays under "optim/<name>", and a JSON record "__tinyar__" holding the format,
the model's class name and constructor arguments (`model.config`) and the
training state. It is written to a temporary file in the same folder and then
renamed (os.replace, atomic), so a crash mid-save never leaves half a file.

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
from pathlib import Path

import numpy as np

from tinyar import data as data_
from tinyar import metrics
from tinyar.kernels.runtime import keep_freed_memory
from tinyar.optim import clip_grad_norm_

FORMAT = "tinyar-checkpoint"
VERSION = 2                # 2: MADE numbers its hidden units by degree (MADE.upgrade_config rebuilds 1)


# ----------------------------------------------------------------- checkpoints
class CheckpointError(ValueError):
    """A file that is not a readable tinyar checkpoint."""


def _to_jsonable(value):
    if isinstance(value, dict):
        return {str(k): _to_jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_to_jsonable(v) for v in value]
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, np.integer):
        return int(value)
    if isinstance(value, np.floating):
        return float(value)
    if isinstance(value, np.dtype) or (isinstance(value, type) and issubclass(value, np.generic)):
        return np.dtype(value).name
    return value


def save(model, path, optimizer=None, state=None):
    """Write model (and optionally the optimizer's arrays and a JSON-able `state`) to one .npz, atomically."""
    path = Path(path)
    if not hasattr(model, "config"):
        raise TypeError(f"save: {type(model).__name__} has no `config` (its constructor arguments); "
                        "every tinyar model sets self.config at the end of __init__")
    record = dict(format=FORMAT, version=VERSION, model=type(model).__name__,
                  config=_to_jsonable(model.config), state=_to_jsonable(state or {}))
    arrays = {f"param/{name}": value for name, value in model.state_dict().items()}
    if optimizer is not None:
        arrays.update({f"optim/{name}": value for name, value in optimizer.state_dict().items()})
    arrays["__tinyar__"] = np.array(json.dumps(record))
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            np.savez(f, **arrays)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)                          # atomic: the old file or the new, never half
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    return path


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
    return record, params, optim


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
class Diverged(RuntimeError):
    pass


def _rng_state(rng):
    return rng.bit_generator.state


def fit(model, train, valid, optimizer, epochs, batch_size, seed=0, out=None, patience=None, clip=None,
        schedule=None, resume=None, progress=True, callback=None, log=None, eval_batch_size=1000,
        stream=False):
    """Train `model` by minibatch SGD on the rows of `train`; returns the history (a dict).

    optimizer   an optim.SGD over model.parameters()
    epochs      the total number of epochs (a resumed run counts the epochs already done)
    seed        seeds the shuffling and model.before_batch: the same seed, the same run
    out         a folder for model.npz (best) and last.npz (resume state); None: no files
    patience    stop after this many epochs without a lower validation NLL (None: never)
    clip        scale the gradient to norm <= clip before each step (None: no clipping)
    schedule    called after every step: schedule.step() (e.g. optim.CosineLR over
                epochs * ceil(len(train) / batch_size) steps); its step count is checkpointed
    resume      a last.npz (or its folder) to continue from
    callback    callback(epoch_record) after each epoch; raising from it stops training
                (the tests use this to "kill" a run)
    log         a function of one string (default: write to stderr, above the progress bar)
    stream      the rows of train are consecutive pieces of one stream (data.text()): train by
                truncated BPTT, a model with log_prob_chunk (models.RNN) carrying its state
                from each minibatch into the next along batch_size parallel streams
                (data.stream_batches; gradients stop at the minibatch boundary). Each epoch
                starts from <s>. The loss is still the mean NLL per row, now given the past.

    History: {"epochs": [{"epoch", "train_nll", "valid_nll", "lr", "seconds", "examples_per_s"}, ...],
    "best_epoch", "best_valid_nll", "stopped" (why it stopped early, or None), "diverged"}.
    After fit the model holds the best parameters (lowest validation NLL) if valid was given,
    else the last ones. A NaN or inf loss (or parameter, checked at the end of each epoch)
    stops training: the model is put back to its last good state, and "stopped" says why.
    Scores (validation, and the model after fit) are taken after model.before_eval()
    (MADE with several masks: mask 0).
    fit asks glibc to keep freed memory for reuse (kernels.runtime.keep_freed_memory): every step
    allocates the same arrays again, and fresh pages cost page faults.
    """
    from tqdm.auto import tqdm

    log = log or (lambda message: tqdm.write(message, file=sys.stderr))     # above the progress bar
    train = np.asarray(train)
    valid = None if valid is None else np.asarray(valid)
    if len(train) == 0:
        raise ValueError("fit: the training set is empty")
    if epochs < 1 or batch_size < 1:
        raise ValueError(f"fit: need epochs >= 1 and batch_size >= 1, got {epochs} and {batch_size}")
    if stream and not hasattr(model, "log_prob_chunk"):
        raise ValueError(f"fit: stream=True (truncated BPTT) needs a model that carries a state from one "
                         f"piece to the next (log_prob_chunk, as models.RNN); {type(model).__name__} has none")
    out = Path(out) if out is not None else None
    keep_freed_memory()
    params = model.parameters()
    rng = np.random.default_rng(seed)
    history = dict(epochs=[], best_epoch=None, best_valid_nll=None, stopped=None, diverged=False)
    best_state = None
    bad_epochs = 0

    if resume is not None:
        resume = Path(resume)
        resume = resume / "last.npz" if resume.is_dir() else resume
        record, saved_params, saved_optim = read_checkpoint(resume)
        if record["model"] != type(model).__name__ or record["config"] != _to_jsonable(model.config):
            raise ValueError(f"fit: {resume} holds {record['model']}({record['config']}), "
                             f"not this {type(model).__name__}({_to_jsonable(model.config)})")
        model.load_state_dict(saved_params)
        optimizer.load_state_dict(saved_optim)
        state = record["state"]
        rng.bit_generator.state = state["rng"]
        history = state["history"]
        history["stopped"], history["diverged"] = None, False
        bad_epochs = state["bad_epochs"]
        if schedule is not None and state.get("schedule_t") is not None:
            schedule.t = state["schedule_t"]
            optimizer.lr = schedule.lr_at(schedule.t)
        else:
            optimizer.lr = state.get("lr", optimizer.lr)
        best_path = resume.with_name("model.npz")             # the best model so far, beside last.npz
        if history["best_epoch"] is not None and best_path.exists():
            best_state = read_checkpoint(best_path)[1]
    start = len(history["epochs"])
    if start >= epochs:
        log(f"fit: already trained {start} epochs (asked for {epochs}); nothing to do")

    def save_last():
        if out is None:
            return
        state = dict(rng=_rng_state(rng), history=history, bad_epochs=bad_epochs, lr=optimizer.lr,
                     schedule_t=getattr(schedule, "t", None), seed=seed)
        save(model, out / "last.npz", optimizer=optimizer, state=state)

    n_batches = len(train) // min(batch_size, len(train)) if stream else math.ceil(len(train) / batch_size)
    bar = tqdm(total=epochs * n_batches, initial=start * n_batches, unit="batch",
               disable=None if progress else True,           # None: off when stderr is not a terminal
               dynamic_ncols=True, leave=False, file=sys.stderr)
    last_good = model.state_dict()
    last_good_optim = {k: v.copy() for k, v in optimizer.state_dict().items()}

    def diverge(what):
        """Put the model and optimizer back at the last good epoch, say why, stop."""
        model.load_state_dict(last_good)
        optimizer.load_state_dict(last_good_optim)
        history["stopped"] = (f"{what}: training stopped, the model is back at its last good state. "
                              "Try a smaller learning rate (--lr) or gradient clipping (--clip).")
        log(history["stopped"])
        raise Diverged(history["stopped"])

    try:
        for epoch in range(start + 1, epochs + 1):
            t0 = time.perf_counter()
            total, seen, carried = 0.0, 0, None
            minibatches = data_.stream_batches(train, batch_size) if stream else data_.batches(train, batch_size, rng)
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
                    kept = f" (the last good checkpoint, epoch {epoch - 1}, is in {out})" if out else ""
                    diverge(f"the loss became {value} at epoch {epoch}, minibatch {step + 1}{kept}")
                loss.backward()
                if clip is not None:
                    clip_grad_norm_(params, clip)
                optimizer.step()
                if schedule is not None:
                    schedule.step()
                total += value * len(x)
                seen += len(x)
                bar.update(1)
                bar.set_postfix(epoch=epoch, loss=f"{value:.3f}",
                                ex_s=f"{seen / (time.perf_counter() - t0):.0f}", refresh=False)
            seconds = time.perf_counter() - t0
            entry = dict(epoch=epoch, train_nll=total / seen, lr=optimizer.lr, seconds=seconds,
                         examples_per_s=seen / seconds)
            broken = [name for name, p in model.named_parameters() if not np.isfinite(p.data).all()]
            if broken:                                # the last step's update overflowed: never save it
                diverge(f"parameters {', '.join(broken)} became inf or NaN at the end of epoch {epoch}")
            if valid is not None:
                model.before_eval()                                  # e.g. MADE: score under mask 0
                entry["valid_nll"] = metrics.nll(model, valid, batch_size=eval_batch_size)
                if not math.isfinite(entry["valid_nll"]):
                    diverge(f"the validation NLL became {entry['valid_nll']} at epoch {epoch}")
            history["epochs"].append(entry)
            improved = valid is not None and (history["best_valid_nll"] is None
                                              or entry["valid_nll"] < history["best_valid_nll"])
            if improved:
                history["best_epoch"], history["best_valid_nll"] = epoch, entry["valid_nll"]
                best_state = model.state_dict()
                bad_epochs = 0
                if out is not None:
                    save(model, out / "model.npz", state=dict(epoch=epoch, valid_nll=entry["valid_nll"]))
            elif valid is not None:
                bad_epochs += 1
            elif out is not None:
                save(model, out / "model.npz", state=dict(epoch=epoch))
            last_good = model.state_dict()
            last_good_optim = {k: v.copy() for k, v in optimizer.state_dict().items()}
            if patience is not None and bad_epochs >= patience:
                history["stopped"] = (f"early stop at epoch {epoch}: no lower validation NLL for {patience} "
                                      f"epochs (best {history['best_valid_nll']:.4f} at epoch {history['best_epoch']})")
                log(history["stopped"])
            save_last()
            bar.set_postfix(epoch=epoch, train=f"{entry['train_nll']:.3f}",
                            valid=f"{entry.get('valid_nll', float('nan')):.3f}",
                            ex_s=f"{entry['examples_per_s']:.0f}")
            if callback is not None:
                callback(entry)
            if history["stopped"]:
                break
    except Diverged:
        history["diverged"] = True
    finally:
        bar.close()
    if best_state is not None:
        model.load_state_dict(best_state)
    model.before_eval()                                      # as a reloaded checkpoint would be
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
