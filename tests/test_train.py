"""train.fit (determinism, resume, early stopping, NaN, clipping), truncated BPTT, checkpoints and metrics."""
import json
import math
import os

import numpy as np
import pytest

import tinyar
from tinyar import data, metrics, train
from tinyar.models import FVSBN, NADE, MADE, RNN
from tinyar.optim import SGD, CosineLR, clip_grad_norm_


@pytest.fixture(scope="module")
def digits():
    d = data.digits()
    return d.train[:300], d.valid[:100]


class ShuffledFVSBN(FVSBN):
    """An FVSBN that draws from the run's rng before each minibatch (as order-agnostic models
    do when they resample an ordering), so that resuming must restore that stream exactly."""

    def before_batch(self, rng):
        self.noise = rng.standard_normal()


def made_three_masks(n_dims, init_std, rng):
    """A MADE with 3 masks, drawn per minibatch from the run's rng (init_std: unused)."""
    return MADE(n_dims, n_hidden=[16], n_masks=3, rng=rng)


def run(digits, epochs, seed=0, out=None, resume=None, callback=None, cls=FVSBN, batch_size=100, **kwargs):
    train_x, valid_x = digits
    model = cls(64, init_std=0.01, rng=seed)
    optimizer = SGD(model.parameters(), lr=0.05, momentum=0.9)
    schedule = CosineLR(optimizer, total=epochs * math.ceil(len(train_x) / batch_size), warmup=2)
    history = train.fit(model, train_x, valid_x, optimizer, epochs=epochs, batch_size=batch_size, seed=seed, out=out,
                        schedule=schedule, resume=resume, progress=False, callback=callback, log=lambda m: None,
                        **kwargs)
    return model, optimizer, history


def metrics_only(history):
    return [{k: v for k, v in e.items() if k not in ("seconds", "examples_per_s")} for e in history["epochs"]]


def test_fit_lowers_the_nll_and_keeps_the_best(digits, tmp_path):
    model, _, history = run(digits, 4, out=tmp_path)
    valid = [e["valid_nll"] for e in history["epochs"]]
    assert len(valid) == 4 and valid[-1] < valid[0] < 64 * math.log(2)
    assert history["best_valid_nll"] == min(valid)
    assert history["best_epoch"] == int(np.argmin(valid)) + 1
    assert abs(metrics.nll(model, digits[1]) - min(valid)) < 1e-9       # the model holds the best parameters
    best = tinyar.load(tmp_path / "model.npz")
    np.testing.assert_array_equal(best.W.data, model.W.data)
    assert sorted(os.listdir(tmp_path)) == ["last.npz", "model.npz"]     # no temporary files left


def test_same_seed_same_run_other_seed_other_run(digits):
    _, _, a = run(digits, 3, seed=7)
    _, _, b = run(digits, 3, seed=7)
    _, _, c = run(digits, 3, seed=8)
    assert metrics_only(a) == metrics_only(b)
    assert metrics_only(a) != metrics_only(c)


def order_agnostic_nade(n_dims, init_std, rng):
    """A NADE that draws a new ordering per minibatch from the run's rng (init_std: unused)."""
    return NADE(n_dims, n_hidden=8, order_agnostic=True, rng=rng)


@pytest.mark.parametrize("cls, batch_size", [(FVSBN, 100), (ShuffledFVSBN, 100),
                                             (made_three_masks, 150),     # 2 minibatches per epoch, 3 masks
                                             (order_agnostic_nade, 100)])
def test_killed_and_resumed_equals_uninterrupted(digits, tmp_path, cls, batch_size):
    full_model, full_opt, full = run(digits, 4, out=tmp_path / "full", cls=cls, batch_size=batch_size)

    def kill_after_first_epoch(entry):
        if entry["epoch"] == 1:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        run(digits, 4, out=tmp_path / "killed", callback=kill_after_first_epoch, cls=cls, batch_size=batch_size)
    record = train.read_checkpoint(tmp_path / "killed" / "last.npz")[0]
    assert len(record["state"]["history"]["epochs"]) == 1
    model, opt, resumed = run(digits, 4, out=tmp_path / "killed", resume=tmp_path / "killed" / "last.npz", cls=cls,
                              batch_size=batch_size)
    assert metrics_only(resumed) == metrics_only(full)
    assert resumed["best_epoch"] == full["best_epoch"]
    for p, q in zip(model.parameters(), full_model.parameters()):
        np.testing.assert_array_equal(p.data, q.data)                        # the best parameters
    last_full = train.read_checkpoint(tmp_path / "full" / "last.npz")
    last_resumed = train.read_checkpoint(tmp_path / "killed" / "last.npz")
    for k in last_full[1]:
        np.testing.assert_array_equal(last_full[1][k], last_resumed[1][k])    # the last parameters
    for k in last_full[2]:
        np.testing.assert_array_equal(last_full[2][k], last_resumed[2][k])    # the optimizer's velocity
    assert last_full[0]["state"]["rng"] == last_resumed[0]["state"]["rng"]
    assert opt.lr == full_opt.lr


def test_resume_refuses_another_model(digits, tmp_path):
    run(digits, 1, out=tmp_path)
    model = FVSBN(64, order="random")
    with pytest.raises(ValueError, match="not this FVSBN"):
        train.fit(model, digits[0], digits[1], SGD(model.parameters(), lr=0.1), 2, 100, resume=tmp_path,
                  progress=False)


def test_early_stopping(tmp_path):
    ones = np.ones((50, 4), dtype=np.float32)       # train on all ones, validate on all zeros:
    zeros = np.zeros((20, 4), dtype=np.float32)     # the validation NLL rises after every epoch
    model = FVSBN(4)
    history = train.fit(model, ones, zeros, SGD(model.parameters(), lr=0.1), epochs=50, batch_size=10,
                        patience=3, progress=False, log=lambda m: None)
    assert len(history["epochs"]) == 4 and history["best_epoch"] == 1
    assert "early stop at epoch 4" in history["stopped"] and not history["diverged"]
    assert metrics.nll(model, zeros) == pytest.approx(history["epochs"][0]["valid_nll"], abs=1e-12)


def test_nan_loss_stops_and_keeps_the_last_good_checkpoint(digits, tmp_path):
    messages = []

    def poison(entry):
        if entry["epoch"] == 2:
            model.b.data[3] = np.nan

    train_x, valid_x = digits
    model = FVSBN(64, init_std=0.01)
    optimizer = SGD(model.parameters(), lr=0.05, momentum=0.9)
    history = train.fit(model, train_x, valid_x, optimizer, epochs=5, batch_size=100, out=tmp_path,
                        callback=poison, progress=False, log=messages.append)
    assert len(history["epochs"]) == 2 and history["diverged"]
    assert "nan" in history["stopped"] and "epoch 3, minibatch 1" in history["stopped"]
    assert "--lr" in history["stopped"] and messages == [history["stopped"]]
    assert np.isfinite(model.b.data).all()
    last = train.read_checkpoint(tmp_path / "last.npz")
    assert len(last[0]["state"]["history"]["epochs"]) == 2
    assert all(np.isfinite(v).all() for v in last[1].values())
    assert np.isfinite(metrics.nll(tinyar.load(tmp_path), valid_x))


def test_inf_parameters_after_the_last_step_of_an_epoch_are_never_saved(digits, tmp_path):
    train_x, _ = digits                                 # no validation set: only the parameters can tell
    model = FVSBN(64, init_std=0.01)
    optimizer = SGD(model.parameters(), lr=0.05)
    steps = []
    sgd_step = optimizer.step

    def step():
        sgd_step()
        steps.append(1)
        if len(steps) == 6:                             # the last of epoch 2's three minibatches
            model.b.data[0] = np.inf

    optimizer.step = step
    history = train.fit(model, train_x, None, optimizer, epochs=4, batch_size=100, out=tmp_path,
                        progress=False, log=lambda m: None)
    assert history["diverged"] and "end of epoch 2" in history["stopped"] and "b" in history["stopped"]
    assert len(history["epochs"]) == 1 and len(steps) == 6
    assert all(np.isfinite(p.data).all() for p in model.parameters())
    for path in ("model.npz", "last.npz"):
        record, params, _ = train.read_checkpoint(tmp_path / path)
        assert all(np.isfinite(v).all() for v in params.values())
    assert len(record["state"]["history"]["epochs"]) == 1


def test_gradient_clipping_bounds_each_step(digits):
    train_x, _ = digits
    lr, clip = 0.1, 0.01
    steps = []
    for c in (clip, None):
        model = FVSBN(64)
        train.fit(model, train_x, None, SGD(model.parameters(), lr=lr), epochs=1, batch_size=100, clip=c,
                  progress=False)
        steps.append(math.sqrt(sum(float((p.data.astype(np.float64) ** 2).sum()) for p in model.parameters())))
    n_steps = 3
    assert steps[0] <= n_steps * lr * clip * (1 + 1e-5)
    assert steps[1] > 10 * n_steps * lr * clip


def test_fit_rejects_bad_arguments(digits):
    model = FVSBN(64)
    opt = SGD(model.parameters(), lr=0.1)
    with pytest.raises(ValueError, match="empty"):
        train.fit(model, digits[0][:0], None, opt, 1, 10, progress=False)
    with pytest.raises(ValueError, match="epochs"):
        train.fit(model, digits[0], None, opt, 0, 10, progress=False)
    with pytest.raises(ValueError, match="binary"):
        train.fit(model, digits[0] * 2, None, opt, 1, 10, progress=False)


def test_make_optimizer_follows_the_recipe():
    model = FVSBN(4)
    opt, schedule = train.make_optimizer(model, dict(lr=0.1, momentum=0.9, nesterov=True, weight_decay=0.01,
                                                     l1=1e-4, epochs=3, batch_size=10), n_train=25)
    assert (opt.lr, opt.momentum, opt.nesterov, opt.weight_decay, opt.l1) == (0.1, 0.9, True, 0.01, 1e-4)
    assert schedule is None
    assert train.make_optimizer(model, dict(lr=0.1, epochs=3, batch_size=10), n_train=25)[0].l1 == 0.0
    opt, schedule = train.make_optimizer(model, dict(lr=0.1, epochs=2, batch_size=10, warmup=100), n_train=25)
    assert (schedule.total, schedule.warmup) == (6, 3)                # 2 epochs x 3 steps; at most half warm-up
    assert train.make_optimizer(model, dict(lr=0.1, epochs=2, batch_size=10, warmup=5, schedule="constant"),
                                n_train=25)[1] is None


# ------------------------------------------------------------ truncated BPTT
def test_stream_training_is_truncated_bptt_step_by_step():
    """fit(stream=True) against the textbook loop written out: each minibatch continues the last one's
    streams from the carried state, loss = -mean log p(x | past), clip, step. Bit for bit."""
    rows = np.random.default_rng(0).integers(0, 5, (4 * 3, 10))       # 4 streams x 3 pieces of 10
    a, b = RNN(5, n_hidden=6, rng=1, dtype=np.float64), RNN(5, n_hidden=6, rng=1, dtype=np.float64)
    opt_a = SGD(a.parameters(), lr=0.05, momentum=0.9)
    for _ in range(2):                                                 # 2 epochs, each from <s>
        state = None
        for k in range(3):
            x = rows[[k, 3 + k, 6 + k, 9 + k]]                         # piece k of each of the 4 streams
            logp, state = a.log_prob_chunk(x, state)
            loss = -logp.mean()
            opt_a.zero_grad()
            loss.backward()
            clip_grad_norm_(a.parameters(), 1.0)
            opt_a.step()
    train.fit(b, rows, None, SGD(b.parameters(), lr=0.05, momentum=0.9), epochs=2, batch_size=4, clip=1.0,
              progress=False, log=lambda m: None, stream=True)
    for (name, pa), pb in zip(a.named_parameters(), b.parameters()):
        np.testing.assert_array_equal(pa.data, pb.data, err_msg=name)


def test_fit_with_stream_is_fit_stream():
    """train.fit(stream=True) on a text's rows trains exactly as fit_stream on the text itself:
    the same parallel streams, chunks, carried states, clipping and updates, bit for bit."""
    ids = np.random.default_rng(0).integers(0, 5, 4 * 3 * 10)         # 4 streams x 3 chunks of 10
    a, b = RNN(5, n_hidden=6, rng=1, dtype=np.float64), RNN(5, n_hidden=6, rng=1, dtype=np.float64)
    opt_a = SGD(a.parameters(), lr=0.05, momentum=0.9)
    opt_b = SGD(b.parameters(), lr=0.05, momentum=0.9)
    train.fit_stream(a, ids, opt_a, seq_len=10, batch_size=4, epochs=2, clip=1.0, log=None)
    train.fit(b, ids.reshape(-1, 10), None, opt_b, epochs=2, batch_size=4, clip=1.0, progress=False,
              log=lambda m: None, stream=True)
    for (name, pa), pb in zip(a.named_parameters(), b.parameters()):
        np.testing.assert_array_equal(pa.data, pb.data, err_msg=name)
    c = RNN(5, n_hidden=6, rng=1, dtype=np.float64)                    # rows read apart: another run
    train.fit(c, ids.reshape(-1, 10), None, SGD(c.parameters(), lr=0.05, momentum=0.9), epochs=2, batch_size=4,
              clip=1.0, progress=False, log=lambda m: None)
    assert not np.allclose(c.head.weight.data, a.head.weight.data)


def test_fit_stream_learns_a_periodic_text_with_clipping():
    """Truncated BPTT over 'abcabc...': 3 chunks of 8 per epoch, state carried; bits/char falls near 0."""
    text = np.tile([0, 1, 2], 400)
    model = RNN(3, n_hidden=8, rng=0)
    before = model.bits_per_char(text[:60])
    opt = SGD(model.parameters(), lr=0.05, momentum=0.9)
    history = train.fit_stream(model, text, opt, seq_len=8, batch_size=4, epochs=6, clip=1.0, log=None)
    after = model.bits_per_char(text[:60])
    assert before > 1.3                                                       # ~ log2(3) = 1.58 untrained
    assert after < 0.1 and history[-1]["train_bpc"] < history[0]["train_bpc"]


def test_fit_stream_stops_on_a_nan_loss():
    model = RNN(3, n_hidden=4, rng=0)
    model.head.bias.data[0] = np.nan
    with pytest.raises(FloatingPointError, match="loss became nan at minibatch 1 in epoch 1"):
        train.fit_stream(model, np.tile([0, 1, 2], 40), SGD(model.parameters(), lr=0.1), seq_len=5,
                         batch_size=2, log=None)


def test_fit_stream_needs_a_stateful_model_and_evaluate_reads_the_stream():
    from tinyar.data import Dataset
    from tinyar.models import Transformer
    rows = np.random.default_rng(0).integers(0, 3, (6, 5))
    tf = Transformer.for_dataset(Dataset("t", "tokens", rows, rows, rows, n_dims=5, n_levels=3), rng=0)
    with pytest.raises(ValueError, match="log_prob_chunk"):
        train.fit(tf, rows, None, SGD(tf.parameters(), lr=0.01), epochs=1, batch_size=2, stream=True,
                  progress=False)
    text = Dataset("t", "tokens", rows, rows[:2], rows[2:4], n_dims=5, n_levels=3, stream=True)
    model = RNN(3, n_hidden=4, rng=0)
    results = train.evaluate(model, text)
    assert results["test"]["stream_bits_per_char"] == pytest.approx(model.bits_per_char(rows[2:4].reshape(-1)))
    assert "stream_bits_per_char" not in train.evaluate(model, Dataset("t", "tokens", rows, rows, rows, n_dims=5,
                                                                       n_levels=3))["test"]


# ---------------------------------------------------------------- checkpoints
def test_save_load_round_trip_and_atomicity(tmp_path, monkeypatch):
    model = FVSBN(5, order="random", init_std=0.5, rng=3)
    path = tinyar.save(model, tmp_path / "m.npz")
    loaded = tinyar.load(path)
    assert loaded.config == model.config
    for (n1, p1), (n2, p2) in zip(model.named_parameters(), loaded.named_parameters()):
        assert n1 == n2 and p1.dtype == p2.dtype
        np.testing.assert_array_equal(p1.data, p2.data)
    before = path.read_bytes()

    def crash(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(np, "savez", crash)
    with pytest.raises(OSError, match="disk full"):
        tinyar.save(FVSBN(5), path)
    assert path.read_bytes() == before                                # the old checkpoint survives whole
    assert os.listdir(tmp_path) == ["m.npz"]                          # and no temporary file is left


def test_truncated_foreign_and_missing_checkpoints(tmp_path):
    path = tinyar.save(FVSBN(5), tmp_path / "m.npz")
    raw = path.read_bytes()
    (tmp_path / "cut.npz").write_bytes(raw[:len(raw) // 2])
    with pytest.raises(train.CheckpointError, match="truncated"):
        tinyar.load(tmp_path / "cut.npz")
    np.savez(tmp_path / "foreign.npz", a=np.zeros(3))
    with pytest.raises(train.CheckpointError, match="not a tinyar checkpoint"):
        tinyar.load(tmp_path / "foreign.npz")
    np.save(tmp_path / "array.npy", np.zeros(3))
    with pytest.raises(train.CheckpointError, match="not a tinyar checkpoint"):
        tinyar.load(tmp_path / "array.npy")
    (tmp_path / "junk.npz").write_bytes(b"hello, world")
    with pytest.raises(train.CheckpointError):
        tinyar.load(tmp_path / "junk.npz")
    with pytest.raises(FileNotFoundError, match="not found"):
        tinyar.load(tmp_path / "nothing.npz")
    record = json.loads(str(np.load(path)["__tinyar__"]))
    record["model"] = "NoSuchModel"
    arrays = dict(np.load(path))
    arrays["__tinyar__"] = np.array(json.dumps(record))
    np.savez(tmp_path / "unknown.npz", **arrays)
    with pytest.raises(train.CheckpointError, match="unknown model class 'NoSuchModel'"):
        tinyar.load(tmp_path / "unknown.npz")


# ------------------------------------------------------------------- metrics
def test_metrics():
    model = FVSBN(64)                                  # zero init: log p(x) = -64 log 2 for every x
    x = data.digits().test
    assert metrics.nll(model, x, batch_size=7) == pytest.approx(64 * math.log(2), abs=1e-4)
    assert metrics.bits_per_dim(64 * math.log(2), 64) == pytest.approx(1.0)
    expected = (-10 + 2 * math.log(4)) / (2 * math.log(2))
    assert metrics.bits_per_dim(-10.0, 2, dequantized_levels=4) == pytest.approx(expected)
    ll = metrics.log_likelihoods(model, x[:3])
    assert ll.dtype == np.float64 and ll.shape == (3,)
    results = train.evaluate(model, data.digits(), splits=("valid",))
    assert set(results) == {"valid"} and results["valid"]["bits_per_dim"] == pytest.approx(1.0, abs=1e-6)


def test_evaluate_reports_dequantized_data_on_the_level_scale():
    from tinyar.tensor import Tensor

    class Uniform:                                       # the uniform density on [0, 1)^D: log p = 0
        def log_prob(self, x):
            return Tensor(np.zeros(len(x)))

    results = train.evaluate(Uniform(), data.digits("continuous"), splits=("test",))
    assert results["test"]["nll"] == 0.0
    assert results["test"]["nll_levels"] == pytest.approx(64 * math.log(17))     # uniform over 17^64 images
    assert "nll_levels" not in train.evaluate(FVSBN(64), data.digits(), splits=("test",))["test"]


def test_evaluate_reports_the_test_time_ensemble_of_order_agnostic_models():
    from tinyar.models import NADE

    d = data.digits()
    fixed = NADE(64, n_hidden=8, rng=0)
    assert "ensemble_nll" not in train.evaluate(fixed, d, splits=("test",))["test"]
    agnostic = NADE(64, n_hidden=8, order_agnostic=True, rng=0)
    result = train.evaluate(agnostic, d, splits=("test",))["test"]
    expected = metrics.ensemble_nll(agnostic, d.test)
    assert result["ensemble_nll"] == pytest.approx(expected, rel=1e-12)
    # the mixture over orderings is a different number from the single current ordering
    assert abs(result["ensemble_nll"] - result["nll"]) > 1e-3
    # and batching does not change it: every batch uses the same orderings
    assert metrics.ensemble_nll(agnostic, d.test, batch_size=7) == pytest.approx(expected, rel=1e-6)


def test_multi_mask_made_is_validated_and_evaluated_under_mask_0(digits, tmp_path):
    train_x, valid_x = digits
    model = MADE(64, n_hidden=[16], n_masks=3, rng=0)
    history = train.fit(model, train_x, valid_x, SGD(model.parameters(), lr=0.05, momentum=0.9), epochs=2,
                        batch_size=150, out=tmp_path, progress=False, log=lambda m: None)
    assert model.mask_index == 0                                       # as tinyar.load rebuilds it
    loaded = tinyar.load(tmp_path / "model.npz")
    assert metrics.nll(loaded, valid_x) == pytest.approx(history["best_valid_nll"], abs=1e-9)
    assert metrics.nll(model, valid_x) == pytest.approx(history["best_valid_nll"], abs=1e-9)
    model.use_mask(2)
    d = data.Dataset(name="digits", kind="binary", train=train_x, valid=valid_x, test=valid_x, n_dims=64,
                     n_levels=2, image_shape=(8, 8), vocab=None)
    result = train.evaluate(model, d, splits=("valid",))["valid"]
    assert result["nll"] == pytest.approx(history["best_valid_nll"], abs=1e-9)      # mask 0, not mask 2
    assert result["ensemble_nll"] == pytest.approx(metrics.ensemble_nll(loaded, valid_x), rel=1e-12)
