"""train.fit and checkpoints under failure: divergence (NaN and growing loss) and what it says of
the files, settings that would train wrongly, damaged and non-finite checkpoints, crashes mid-write,
killed runs' temporary files, file modes, resume with early stopping, the reported train NLL, the
per-epoch lines of a run whose stderr is not a terminal, and strict JSON."""
import json
import math
import os

import numpy as np
import pytest

import tinyar
from tinyar import data, train
from tinyar.models import FVSBN
from tinyar.optim import SGD


@pytest.fixture(scope="module")
def digits():
    d = data.digits()
    return d.train[:300], d.valid[:100]


def quiet_fit(model, train_x, valid_x, optimizer, epochs=3, batch_size=100, **kwargs):
    return train.fit(model, train_x, valid_x, optimizer, epochs=epochs, batch_size=batch_size, progress=False,
                     log=lambda m: None, **kwargs)


def epochs_in(path):
    """The number of epochs in the history a checkpoint records."""
    return len(train.read_checkpoint(path)[0]["state"]["history"]["epochs"])


# --------------------------------------------------------- divergence and files
def test_a_run_that_fails_in_its_first_epoch_says_it_wrote_nothing(digits, tmp_path):
    train_x, valid_x = digits
    model = FVSBN(64, init_std=0.01)
    model.b.data[0] = np.nan                                           # the first loss is NaN
    history = quiet_fit(model, train_x, valid_x, SGD(model.parameters(), lr=0.05), out=tmp_path)
    assert history["diverged"] and history["saved_epoch"] is None
    assert f"no checkpoint was written to {tmp_path}" in history["stopped"]
    assert "epoch 0" not in history["stopped"]
    assert train.checkpoint_note(history, tmp_path) == f"no checkpoint was written to {tmp_path} (no epoch finished)"
    assert os.listdir(tmp_path) == []


def test_a_fresh_run_removes_an_earlier_runs_checkpoints_from_its_folder(digits, tmp_path):
    train_x, valid_x = digits
    model = FVSBN(64, init_std=0.01)
    quiet_fit(model, train_x, valid_x, SGD(model.parameters(), lr=0.05), epochs=1, out=tmp_path)
    assert sorted(os.listdir(tmp_path)) == ["last.npz", "model.npz"]
    other = FVSBN(64, init_std=0.01)
    other.b.data[0] = np.nan
    quiet_fit(other, train_x, valid_x, SGD(other.parameters(), lr=0.05), out=tmp_path)
    assert os.listdir(tmp_path) == []                                  # no model.npz of the earlier run


def test_a_growing_loss_is_reported_as_divergence_and_the_last_good_epoch_is_kept(digits, tmp_path):
    train_x, valid_x = digits
    model = FVSBN(64, init_std=0.01)
    optimizer = SGD(model.parameters(), lr=0.05)
    kept = {}

    def raise_the_lr(entry):                                           # epoch 2 runs at lr 1e6: NLL ~1e7, finite
        if entry["epoch"] == 1:
            kept.update(model.state_dict())
            optimizer.lr = 1e6

    history = quiet_fit(model, train_x, valid_x, optimizer, epochs=4, out=tmp_path, callback=raise_the_lr)
    limit = train.divergence_limit(history["start_nll"], 64)
    assert history["start_nll"] == pytest.approx(64 * math.log(2), abs=0.1)     # init_std 0.01: near uniform
    assert history["diverged"] and len(history["epochs"]) == 1
    assert f"the run diverged: the validation NLL rose to" in history["stopped"]
    assert f"at epoch 2, above {limit:.6g}" in history["stopped"]
    assert f"{tmp_path}/model.npz holds epoch 1 (the best), {tmp_path}/last.npz epoch 1" in history["stopped"]
    assert epochs_in(tmp_path / "last.npz") == 1
    for name, value in model.state_dict().items():
        np.testing.assert_array_equal(value, kept[name])               # back at the end of epoch 1
    np.testing.assert_array_equal(tinyar.load(tmp_path).b.data, kept["b"])


def test_a_growing_train_nll_without_a_validation_set_is_divergence(digits):
    model = FVSBN(64, init_std=0.01)
    history = quiet_fit(model, digits[0], None, SGD(model.parameters(), lr=1e9))
    assert history["diverged"] and "the run diverged: the train NLL rose to" in history["stopped"]
    assert np.isfinite(history["start_nll"]) and history["epochs"] == []
    np.testing.assert_array_equal(model.b.data, 0.0)                   # the untrained model, whole


def test_the_divergence_limit():
    assert train.divergence_limit(44.0, 64) == 108.0                   # one nat per value above the start
    assert train.divergence_limit(100.0, 64) == 200.0                  # twice the start
    assert train.divergence_limit(-50.0, 20) == 0.0                    # a density's NLL can be negative


def test_a_normal_run_is_not_flagged(digits):
    model = FVSBN(64, init_std=0.01)
    history = quiet_fit(model, *digits, SGD(model.parameters(), lr=0.05, momentum=0.9), epochs=2)
    assert not history["diverged"] and history["stopped"] is None and len(history["epochs"]) == 2


# -------------------------------------------------------- settings that train wrongly
@pytest.mark.parametrize("kwargs, error, match", [
    (dict(clip=-1.0), ValueError, r"fit: need clip > 0 \(a finite number\), got clip=-1.0"),
    (dict(clip=0), ValueError, "need clip > 0"),
    (dict(clip=float("nan")), ValueError, "need clip > 0"),
    (dict(batch_size=0), ValueError, "fit: need batch_size >= 1, got batch_size=0"),
    (dict(batch_size=-5), ValueError, "need batch_size >= 1"),
    (dict(batch_size=2.5), TypeError, "batch_size must be a whole number, got 2.5"),
    (dict(patience=0), ValueError, "need patience >= 1"),
    (dict(eval_batch_size=0), ValueError, "need eval_batch_size >= 1"),
])
def test_fit_refuses_settings_that_would_train_wrongly(digits, tmp_path, kwargs, error, match):
    model = FVSBN(64)
    settings = dict(dict(epochs=1, batch_size=100), **kwargs)
    with pytest.raises(error, match=match):
        train.fit(model, digits[0], digits[1], SGD(model.parameters(), lr=0.1), out=tmp_path, progress=False,
                  **settings)
    assert os.listdir(tmp_path) == []                                  # refused before anything was written


def test_fit_stream_refuses_a_negative_clip_and_bad_counts():
    from tinyar.models import RNN
    model = RNN(3, n_hidden=4, rng=0)
    before = model.head.weight.data.copy()
    text = np.tile([0, 1, 2], 40)
    with pytest.raises(ValueError, match=r"fit_stream: need clip > 0 \(a finite number\), got clip=-1.0"):
        train.fit_stream(model, text, SGD(model.parameters(), lr=0.1), seq_len=5, batch_size=2, clip=-1.0, log=None)
    with pytest.raises(ValueError, match=r"fit_stream: need clip > 0 \(a finite number\), got clip=0"):
        train.fit_stream(model, text, SGD(model.parameters(), lr=0.1), seq_len=5, batch_size=2, clip=0, log=None)
    with pytest.raises(ValueError, match="fit_stream: need seq_len >= 1, got seq_len=0"):
        train.fit_stream(model, text, SGD(model.parameters(), lr=0.1), seq_len=0, batch_size=2, log=None)
    np.testing.assert_array_equal(model.head.weight.data, before)


def test_make_optimizer_refuses_a_batch_size_of_zero():
    with pytest.raises(ValueError, match="make_optimizer: need batch_size >= 1, got batch_size=0"):
        train.make_optimizer(FVSBN(4), dict(lr=0.1, epochs=2, batch_size=0, schedule="cosine"), n_train=25)
    with pytest.raises(ValueError, match="make_optimizer: need epochs >= 1"):
        train.make_optimizer(FVSBN(4), dict(lr=0.1, epochs=0, batch_size=10), n_train=25)


# ------------------------------------------------------------------ checkpoints
@pytest.mark.parametrize("bad", [np.nan, np.inf])
def test_a_checkpoint_with_non_finite_weights_is_refused(tmp_path, bad):
    model = FVSBN(5, init_std=0.5, rng=0)
    model.W.data[1, 0] = bad
    tinyar.save(model, tmp_path / "m.npz")
    with pytest.raises(train.CheckpointError, match=r"m.npz: parameter W hold NaN or inf"):
        tinyar.load(tmp_path / "m.npz")


def test_a_checkpoint_with_a_non_finite_velocity_is_refused(tmp_path):
    model = FVSBN(5, init_std=0.5, rng=0)
    optimizer = SGD(model.parameters(), lr=0.1, momentum=0.9)
    optimizer.velocity = [np.full(p.shape, np.nan) for p in model.parameters()]
    train.save(model, tmp_path / "last.npz", optimizer=optimizer)
    with pytest.raises(train.CheckpointError, match="optimizer array velocity.0"):
        train.read_checkpoint(tmp_path / "last.npz")


def test_a_crash_in_the_middle_of_a_save_leaves_the_old_checkpoint_whole(tmp_path, monkeypatch):
    model = FVSBN(5, init_std=0.5, rng=3)
    path = tinyar.save(model, tmp_path / "m.npz")
    before = path.read_bytes()

    def write_half_then_crash(file, *args, **kwargs):
        if isinstance(file, (str, os.PathLike)):
            with open(file, "wb") as f:
                f.write(before[:len(before) // 2])
        else:
            file.write(before[:len(before) // 2])
        raise OSError("disk full")

    monkeypatch.setattr(np, "savez", write_half_then_crash)
    with pytest.raises(OSError, match="disk full"):
        tinyar.save(FVSBN(5, init_std=0.5, rng=4), path)
    monkeypatch.undo()
    assert path.read_bytes() == before
    np.testing.assert_array_equal(tinyar.load(path).W.data, model.W.data)
    assert os.listdir(tmp_path) == ["m.npz"]


def test_a_killed_saves_temporary_files_are_removed(digits, tmp_path):
    stale = [".model.npz.k2j3x.tmp", ".last.npz.abc123.tmp", ".run.json.q1.tmp"]
    for name in stale + ["notes.tmp", ".model.npz.keep"]:
        (tmp_path / name).write_bytes(b"PK\x03\x04 half")
    removed = train.remove_stale_temp_files(tmp_path, ["model.npz"])
    assert [p.name for p in removed] == [".model.npz.k2j3x.tmp"]
    (tmp_path / stale[0]).write_bytes(b"PK\x03\x04 half")
    tinyar.save(FVSBN(4), tmp_path / "model.npz")                     # a save removes its own file's
    assert not (tmp_path / stale[0]).exists() and (tmp_path / stale[1]).exists()
    (tmp_path / stale[0]).write_bytes(b"PK\x03\x04 half")
    model = FVSBN(64)
    model.b.data[0] = np.nan                                           # a run that never gets to save
    quiet_fit(model, digits[0], None, SGD(model.parameters(), lr=0.1), out=tmp_path)
    assert sorted(os.listdir(tmp_path)) == [".model.npz.keep", "notes.tmp"]


@pytest.mark.parametrize("umask", [0o022, 0o077, 0o002])
def test_checkpoints_get_the_mode_the_umask_gives(digits, tmp_path, umask):
    old = os.umask(umask)
    try:
        model = FVSBN(64)
        quiet_fit(model, digits[0][:100], None, SGD(model.parameters(), lr=0.1), epochs=1, out=tmp_path)
        (tmp_path / "plain.txt").write_text("an ordinary file")
        assert train.new_file_mode() == 0o666 & ~umask and os.umask(umask) == umask
    finally:
        os.umask(old)
    expected = (tmp_path / "plain.txt").stat().st_mode & 0o777
    assert expected == 0o666 & ~umask
    for name in ("model.npz", "last.npz"):
        assert (tmp_path / name).stat().st_mode & 0o777 == expected, name


# ------------------------------------------------- resume, train NLL, progress lines
def test_a_resumed_run_stops_early_at_the_same_epoch_as_an_uninterrupted_one(tmp_path):
    ones = np.ones((50, 4), dtype=np.float32)          # train on all ones, validate on all zeros:
    zeros = np.zeros((20, 4), dtype=np.float32)        # the validation NLL rises after every epoch

    def fit(out, resume=None, callback=None):
        model = FVSBN(4)
        return train.fit(model, ones, zeros, SGD(model.parameters(), lr=0.1, momentum=0.5), epochs=50,
                         batch_size=10, patience=3, out=out, resume=resume, callback=callback, progress=False,
                         log=lambda m: None)

    def kill_after_epoch_2(entry):
        if entry["epoch"] == 2:
            raise KeyboardInterrupt

    full = fit(tmp_path / "full")
    with pytest.raises(KeyboardInterrupt):
        fit(tmp_path / "killed", callback=kill_after_epoch_2)
    resumed = fit(tmp_path / "killed", resume=tmp_path / "killed")
    assert len(full["epochs"]) == 4 and "early stop at epoch 4" in full["stopped"]
    assert resumed["stopped"] == full["stopped"]
    drop_clock = [{k: v for k, v in e.items() if k not in ("seconds", "examples_per_s")} for e in full["epochs"]]
    assert [{k: v for k, v in e.items() if k not in ("seconds", "examples_per_s")}
            for e in resumed["epochs"]] == drop_clock


class RecordingFVSBN(FVSBN):
    """An FVSBN that records the size and the loss of every minibatch it trains on."""

    def nll(self, x):
        loss = super().nll(x)
        self.seen.append((len(x), float(loss.data)))
        return loss


def test_train_nll_is_the_example_weighted_mean_of_the_minibatch_losses(digits):
    model = RecordingFVSBN(64, init_std=0.01)
    model.seen = []
    x = digits[0][:250]                                                # minibatches of 100, 100, 50
    history = quiet_fit(model, x, None, SGD(model.parameters(), lr=0.1), epochs=2)
    for k, entry in enumerate(history["epochs"]):
        seen = model.seen[3 * k:3 * k + 3]
        assert [n for n, _ in seen] == [100, 100, 50]
        weighted = sum(n * loss for n, loss in seen) / 250
        assert entry["train_nll"] == pytest.approx(weighted, rel=1e-12)
        assert abs(weighted - np.mean([loss for _, loss in seen])) > 1e-3    # the plain mean differs


def test_a_run_whose_stderr_is_not_a_terminal_prints_one_line_per_epoch(digits, capsys):
    model = FVSBN(64, init_std=0.01)
    history = train.fit(model, *digits, SGD(model.parameters(), lr=0.05), epochs=3, batch_size=100,
                        log=lambda m: None)
    lines = capsys.readouterr().err.splitlines()
    assert len(lines) == 3
    for line, entry in zip(lines, history["epochs"]):
        assert line.startswith(f"epoch {entry['epoch']}/3  train NLL {entry['train_nll']:.4f}  "
                               f"valid NLL {entry['valid_nll']:.4f}  {entry['examples_per_s']:.0f} ex/s  elapsed ")
        assert line.endswith(" s")
    elapsed = [float(line.split("elapsed ")[1][:-2]) for line in lines]
    assert elapsed == sorted(elapsed)
    model = FVSBN(64, init_std=0.01)
    quiet_fit(model, *digits, SGD(model.parameters(), lr=0.05), epochs=2)     # progress=False: silent
    assert capsys.readouterr().err == ""


def test_epoch_line_without_a_validation_set():
    entry = dict(epoch=2, train_nll=41.23456, lr=0.1, seconds=1.0, examples_per_s=1234.4)
    assert train.epoch_line(entry, 10, 12.345) == "epoch 2/10  train NLL 41.2346  1234 ex/s  elapsed 12.3 s"


# ------------------------------------------------------------------ strict JSON
def reject_constant(name):
    raise ValueError(f"not strict JSON: {name}")


def test_to_jsonable_writes_nan_and_inf_as_null(tmp_path):
    value = dict(a=float("nan"), b=np.array([1.5, np.inf, -np.inf]), c=np.float32("nan"), d=[2.0, np.float64(3)],
                 e=np.array([1, 2]))
    text = json.dumps(train.to_jsonable(value), allow_nan=False)
    assert json.loads(text, parse_constant=reject_constant) == dict(a=None, b=[1.5, None, None], c=None,
                                                                    d=[2.0, 3.0], e=[1, 2])
    path = tinyar.save(FVSBN(4), tmp_path / "m.npz", state=dict(valid_nll=float("nan")))
    record = json.loads(str(np.load(path)["__tinyar__"]), parse_constant=reject_constant)
    assert record["state"] == dict(valid_nll=None)
