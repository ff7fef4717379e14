"""SGD against its update equations worked by hand; clipping; learning-rate schedules."""
import math

import numpy as np
import pytest

from tinyar.kernels import sgd
from tinyar.nn import Parameter
from tinyar.optim import SGD, CosineLR, StepLR, clip_grad_norm_

GRADS = [np.array([1.0, -2.0]), np.array([0.5, 0.5]), np.array([-1.0, 3.0])]


def run(steps=GRADS, p0=(1.0, 2.0), **kwargs):
    """Positions of one parameter after each SGD step with the given gradients."""
    p = Parameter(np.array(p0))
    opt = SGD([p], **kwargs)
    trace = []
    for g in steps:
        p.grad = g.copy()
        opt.step()
        trace.append(p.data.copy())
    return trace


def test_plain_sgd():
    # p <- p - lr g:  (1, 2) -> (0.9, 2.2) -> (0.85, 2.15) -> (0.95, 1.85)
    trace = run(lr=0.1)
    np.testing.assert_allclose(trace, [[0.9, 2.2], [0.85, 2.15], [0.95, 1.85]], rtol=1e-14)


def test_momentum():
    # v1 = g1 = (1, -2);            p1 = (1, 2) - 0.1 v1 = (0.9, 2.2)
    # v2 = 0.9 v1 + g2 = (1.4, -1.3);   p2 = (0.76, 2.33)
    # v3 = 0.9 v2 + g3 = (0.26, 1.83);  p3 = (0.734, 2.147)
    trace = run(lr=0.1, momentum=0.9)
    np.testing.assert_allclose(trace, [[0.9, 2.2], [0.76, 2.33], [0.734, 2.147]], rtol=1e-14)


def test_nesterov():
    # same velocities as above; the step is g + mu v:
    # s1 = g1 + 0.9 v1 = (1.9, -3.8);    p1 = (0.81, 2.38)
    # s2 = g2 + 0.9 v2 = (1.76, -0.67);  p2 = (0.634, 2.447)
    # s3 = g3 + 0.9 v3 = (-0.766, 4.647); p3 = (0.7106, 1.9823)
    trace = run(lr=0.1, momentum=0.9, nesterov=True)
    np.testing.assert_allclose(trace, [[0.81, 2.38], [0.634, 2.447], [0.7106, 1.9823]], rtol=1e-14)


def test_weight_decay():
    # g' = g + 0.5 p:  g1' = (1.5, -1) -> p1 = (0.85, 2.1);  g2' = (0.925, 1.55) -> p2 = (0.7575, 1.945)
    trace = run(steps=GRADS[:2], lr=0.1, weight_decay=0.5)
    np.testing.assert_allclose(trace, [[0.85, 2.1], [0.7575, 1.945]], rtol=1e-14)


def test_l1_penalty():
    # g' = g + 0.5 sign(p), sign(0) = 0:  p0 = (1, 0, -2), g1 = (1, 1, 1)
    # g1' = (1.5, 1, 0.5) -> p1 = (0.85, -0.1, -2.05);  g2 = (0, 0, 0): g2' = (0.5, -0.5, -0.5) -> p2 = (0.8, -0.05, -2.0)
    trace = run(steps=[np.ones(3), np.zeros(3)], p0=(1.0, 0.0, -2.0), lr=0.1, l1=0.5)
    np.testing.assert_allclose(trace, [[0.85, -0.1, -2.05], [0.8, -0.05, -2.0]], rtol=1e-14)


def test_l1_with_weight_decay_and_momentum_on_both_paths(monkeypatch):
    """The L1 term joins g before the velocity, like weight decay, on the compiled momentum pass too."""
    lr, mu, wd, l1 = 0.05, 0.8, 0.1, 0.3
    for kernels in ("numba", "numpy"):
        monkeypatch.setenv("TINYAR_KERNELS", kernels)
        p, v = np.array([1.0, 2.0]), None
        expected = []
        for g in GRADS:
            g = g + wd * p + l1 * np.sign(p)
            v = g if v is None else mu * v + g
            p = p - lr * v
            expected.append(p)
        np.testing.assert_allclose(run(lr=lr, momentum=mu, weight_decay=wd, l1=l1), expected, rtol=1e-14)


def test_weight_decay_momentum_and_nesterov_together():
    lr, mu, wd = 0.05, 0.8, 0.1
    p, v = np.array([1.0, 2.0]), None
    expected = []
    for g in GRADS:                                     # the equations of optim.py's docstring, one by one
        g = g + wd * p
        v = g if v is None else mu * v + g
        p = p - lr * (g + mu * v)
        expected.append(p)
    np.testing.assert_allclose(run(lr=lr, momentum=mu, nesterov=True, weight_decay=wd), expected, rtol=1e-14)


@pytest.mark.parametrize("kernels", ["numba", "numpy"])
def test_momentum_on_both_paths(kernels, monkeypatch):
    """Classical momentum after the first step runs the compiled one-pass update, or under
    TINYAR_KERNELS=numpy SGD.step's own NumPy lines: both follow the hand-worked numbers."""
    monkeypatch.setenv("TINYAR_KERNELS", kernels)
    test_momentum()
    test_weight_decay_momentum_and_nesterov_together()


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_classical_momentum_gives_the_same_numbers_on_both_paths(dtype, monkeypatch):
    """Steps 2.. of classical momentum with weight decay: the kernel (kernels/sgd.py) and
    SGD.step's NumPy lines give the same parameters and velocities, bit for bit."""
    calls = []
    kernel = sgd.sgd_momentum_update_numba

    def counted(*args):
        calls.append(1)
        kernel(*args)

    monkeypatch.setattr(sgd, "sgd_momentum_update_numba", counted)
    traces = {}
    for kernels in ("numba", "numpy"):
        monkeypatch.setenv("TINYAR_KERNELS", kernels)
        rng = np.random.default_rng(5)
        p = Parameter(rng.standard_normal((4, 3)), dtype=dtype)
        opt = SGD([p], lr=0.1, momentum=0.9, weight_decay=0.01)
        traces[kernels] = []
        for _ in range(4):
            p.grad = rng.standard_normal((4, 3)).astype(dtype)
            opt.step()
            traces[kernels].append((p.data.copy(), opt.velocity[0].copy()))
        traces[kernels + " calls"] = len(calls)
    assert traces["numba calls"] == 3 and traces["numpy calls"] == 3     # steps 2-4 compiled, then none
    for (p1, v1), (p2, v2) in zip(traces["numba"], traces["numpy"]):
        np.testing.assert_array_equal(p1, p2)
        np.testing.assert_array_equal(v1, v2)


def test_sgd_keeps_float32_skips_missing_grads_and_zero_grad_clears():
    a = Parameter(np.ones(3), dtype=np.float32)
    b = Parameter(np.ones(2), dtype=np.float32)
    opt = SGD([a, b], lr=0.1, momentum=0.9, weight_decay=0.01)
    a.grad = np.full(3, 2.0, np.float32)
    opt.step()
    assert a.dtype == np.float32 and b.dtype == np.float32
    np.testing.assert_allclose(a.data, 1 - 0.1 * (2.0 + 0.01), rtol=1e-6)
    np.testing.assert_array_equal(b.data, [1.0, 1.0])          # no gradient: untouched
    opt.zero_grad()
    assert a.grad is None


def test_sgd_state_dict_round_trip():
    p = Parameter(np.array([1.0, 2.0]))
    opt = SGD([p], lr=0.1, momentum=0.9)
    p.grad = np.array([1.0, 1.0])
    opt.step()
    q = Parameter(p.data.copy())
    other = SGD([q], lr=0.1, momentum=0.9)
    other.load_state_dict(opt.state_dict())
    p.grad, q.grad = np.array([0.5, -0.5]), np.array([0.5, -0.5])
    opt.step()
    other.step()
    np.testing.assert_array_equal(p.data, q.data)


def reference_trace(grads, p0, lr, mu, nesterov, wd):
    """(p, v) after each step, by the module docstring's equations written out in float64."""
    p, v, trace = np.array(p0, dtype=np.float64), None, []
    for g in grads:
        g = g + wd * p                                  # g <- g + lambda p
        v = g.copy() if v is None else mu * v + g       # v <- mu v + g   (v = g on the first step)
        p = p - lr * (g + mu * v if nesterov else v)    # Nesterov: g + mu v;  classical: v
        trace.append((p, v))
    return trace


def sgd_trace(grads, p0, dtype=np.float64, **kwargs):
    """(p, velocity) after each SGD step with the given gradients."""
    p = Parameter(np.array(p0), dtype=dtype)
    opt = SGD([p], **kwargs)
    trace = []
    for g in grads:
        p.grad = g.astype(dtype)
        opt.step()
        trace.append((p.data.copy(), opt.velocity[0].copy()))
    return trace


SETTINGS = [(False, 0.0), (False, 0.05), (True, 0.0), (True, 0.05)]     # (nesterov, weight decay)


@pytest.mark.parametrize("nesterov, wd", SETTINGS)
def test_numpy_momentum_path_follows_the_equations_step_by_step(nesterov, wd, monkeypatch):
    """Under TINYAR_KERNELS=numpy SGD.step's own NumPy lines make every update (the compiled
    kernel must not run): six steps against the equations, parameters and velocities."""
    def compiled(*args):
        raise AssertionError("the compiled update ran under TINYAR_KERNELS=numpy")

    monkeypatch.setattr(sgd, "sgd_momentum_update_numba", compiled)
    monkeypatch.setenv("TINYAR_KERNELS", "numpy")
    rng = np.random.default_rng(11)
    grads, p0 = list(rng.standard_normal((6, 3, 2))), rng.standard_normal((3, 2))
    trace = sgd_trace(grads, p0, lr=0.1, momentum=0.8, nesterov=nesterov, weight_decay=wd)
    for step, ((p, v), (p_ref, v_ref)) in enumerate(zip(trace, reference_trace(grads, p0, 0.1, 0.8, nesterov, wd))):
        np.testing.assert_allclose(p, p_ref, rtol=1e-13, atol=1e-15, err_msg=f"p after step {step + 1}")
        np.testing.assert_allclose(v, v_ref, rtol=1e-13, atol=1e-15, err_msg=f"v after step {step + 1}")


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("nesterov, wd", SETTINGS)
def test_numpy_momentum_path_equals_the_compiled_path(nesterov, wd, dtype, monkeypatch):
    """Six steps under TINYAR_KERNELS=numpy and under numba give the same parameters and
    velocities, bit for bit, in float32 and float64."""
    rng = np.random.default_rng(12)
    grads, p0 = list(rng.standard_normal((6, 4, 3))), rng.standard_normal((4, 3))
    traces = []
    for kernels in ("numpy", "numba"):
        monkeypatch.setenv("TINYAR_KERNELS", kernels)
        traces.append(sgd_trace(grads, p0, dtype, lr=0.05, momentum=0.9, nesterov=nesterov, weight_decay=wd))
    for (p1, v1), (p2, v2) in zip(*traces):
        assert p1.dtype == p2.dtype == dtype
        np.testing.assert_array_equal(p1, p2)
        np.testing.assert_array_equal(v1, v2)


@pytest.mark.parametrize("kwargs, error, match", [
    (dict(lr=0.0), ValueError, "SGD: need lr > 0"),
    (dict(lr=-0.1), ValueError, "need lr > 0"),
    (dict(lr=float("nan")), ValueError, r"need lr > 0 \(a finite number\), got lr=nan"),
    (dict(lr=float("inf")), ValueError, "got lr=inf"),
    (dict(lr="0.1"), TypeError, "SGD: lr must be a number, got '0.1'"),
    (dict(lr=0.1, momentum=-1), ValueError, "SGD: need 0 <= momentum < 1"),
    (dict(lr=0.1, momentum=1.0), ValueError, "got momentum=1.0"),
    (dict(lr=0.1, momentum=5), ValueError, "got momentum=5"),
    (dict(lr=0.1, momentum=float("nan")), ValueError, "momentum"),
    (dict(lr=0.1, weight_decay=-0.01), ValueError, "SGD: need weight_decay >= 0"),
    (dict(lr=0.1, weight_decay=float("inf")), ValueError, "weight_decay"),
    (dict(lr=0.1, l1=-1e-4), ValueError, "SGD: need l1 >= 0"),
    (dict(lr=0.1, l1=float("nan")), ValueError, "l1"),
    (dict(lr=0.1, nesterov=True), ValueError, "Nesterov")])
def test_sgd_refuses_bad_settings(kwargs, error, match):
    with pytest.raises(error, match=match):
        SGD([Parameter(np.ones(1))], **kwargs)
    with pytest.raises(ValueError, match="empty"):
        SGD([], lr=0.1)


@pytest.mark.parametrize("max_norm", [-1.0, 0, float("nan"), float("inf")])
def test_clip_grad_norm_refuses_a_bound_that_is_not_positive(max_norm):
    a = Parameter(np.zeros(2))
    a.grad = np.array([3.0, 4.0])                                 # clip -1 would flip it: gradient ascent
    with pytest.raises(ValueError, match="clip_grad_norm_: need max_norm > 0"):
        clip_grad_norm_([a], max_norm)
    np.testing.assert_array_equal(a.grad, [3.0, 4.0])


def test_schedules_refuse_bad_settings():
    opt = SGD([Parameter(np.ones(1))], lr=0.1)
    with pytest.raises(ValueError, match="CosineLR: need total >= 1, got total=0"):
        CosineLR(opt, total=0)
    with pytest.raises(TypeError, match="CosineLR: total must be a whole number, got 2.5"):
        CosineLR(opt, total=2.5)
    with pytest.raises(ValueError, match="CosineLR: need warmup >= 0"):
        CosineLR(opt, total=5, warmup=-1)
    with pytest.raises(ValueError, match="CosineLR: need min_lr >= 0"):
        CosineLR(opt, total=5, min_lr=-0.1)
    with pytest.raises(ValueError, match="StepLR: need step_size >= 1"):
        StepLR(opt, step_size=0)
    with pytest.raises(ValueError, match="StepLR: need gamma > 0"):
        StepLR(opt, step_size=2, gamma=float("nan"))
    assert opt.lr == 0.1


def test_clip_grad_norm_scales_to_the_maximum_norm():
    a, b, c = Parameter(np.zeros(2)), Parameter(np.zeros((2, 2))), Parameter(np.zeros(1))
    a.grad = np.array([3.0, 0.0])
    b.grad = np.array([[0.0, 4.0], [0.0, 12.0]])              # together: sqrt(9 + 16 + 144) = 13
    total = clip_grad_norm_([a, b, c], max_norm=2.6)
    assert total == pytest.approx(13.0, rel=1e-14)
    assert c.grad is None
    np.testing.assert_allclose(a.grad, [0.6, 0.0], rtol=1e-9)  # scaled by 2.6 / 13 = 0.2
    np.testing.assert_allclose(b.grad, [[0.0, 0.8], [0.0, 2.4]], rtol=1e-9)
    new_norm = math.sqrt(np.sum(a.grad ** 2) + np.sum(b.grad ** 2))
    assert new_norm == pytest.approx(2.6, rel=1e-9)


def test_clip_grad_norm_leaves_small_gradients_and_keeps_float32():
    a = Parameter(np.zeros(2), dtype=np.float32)
    a.grad = np.array([0.3, 0.4], np.float32)
    assert clip_grad_norm_([a], max_norm=1.0) == pytest.approx(0.5, rel=1e-6)
    np.testing.assert_array_equal(a.grad, np.array([0.3, 0.4], np.float32))
    a.grad = np.array([30.0, 40.0], np.float32)
    clip_grad_norm_([a], max_norm=1.0)
    assert a.grad.dtype == np.float32
    np.testing.assert_allclose(a.grad, [0.6, 0.8], rtol=1e-6)


def test_step_lr():
    opt = SGD([Parameter(np.ones(1))], lr=0.1)
    schedule = StepLR(opt, step_size=2, gamma=0.5)
    lrs = [opt.lr]
    for _ in range(5):
        schedule.step()
        lrs.append(opt.lr)
    np.testing.assert_allclose(lrs, [0.1, 0.1, 0.05, 0.05, 0.025, 0.025], rtol=1e-14)


def test_cosine_lr_with_warmup():
    opt = SGD([Parameter(np.ones(1))], lr=1.0)
    schedule = CosineLR(opt, total=10, warmup=2, min_lr=0.1)
    lrs = [opt.lr]
    for _ in range(12):
        schedule.step()
        lrs.append(opt.lr)
    # warm-up: (t + 1) / 2; then 0.1 + 0.9 (1 + cos(pi (t - 2) / 8)) / 2; min_lr from t = 10 on
    assert lrs[0] == pytest.approx(0.5) and lrs[1] == pytest.approx(1.0)
    assert lrs[2] == pytest.approx(1.0)                        # top of the cosine
    assert lrs[4] == pytest.approx(0.1 + 0.9 * (1 + math.cos(math.pi / 4)) / 2)
    assert lrs[6] == pytest.approx(0.55)                       # half way: the mean of 1 and 0.1
    assert lrs[10] == pytest.approx(0.1) and lrs[12] == pytest.approx(0.1)
    assert all(x >= y for x, y in zip(lrs[2:], lrs[3:]))       # non-increasing after warm-up


def test_cosine_lr_without_warmup_and_its_error():
    opt = SGD([Parameter(np.ones(1))], lr=0.2)
    schedule = CosineLR(opt, total=4)
    lrs = [opt.lr]
    for _ in range(4):
        schedule.step()
        lrs.append(opt.lr)
    np.testing.assert_allclose(lrs, [0.2, 0.2 * (1 + math.cos(math.pi / 4)) / 2, 0.1,
                                     0.2 * (1 + math.cos(3 * math.pi / 4)) / 2, 0.0], atol=1e-15)
    with pytest.raises(ValueError, match="warmup"):
        CosineLR(opt, total=3, warmup=3)


def test_sgd_follows_a_parameter_converted_to_another_dtype():
    p = Parameter(np.ones(2), dtype=np.float32)
    opt = SGD([p], lr=0.5)
    p.grad = np.ones(2, np.float32)
    opt.step()
    p.data = p.data.astype(np.float64)                        # as Module.astype does
    p.grad = np.array([1.0, 2.0])
    opt.step()
    assert p.dtype == np.float64
    np.testing.assert_allclose(p.data, [0.0, -0.5])
