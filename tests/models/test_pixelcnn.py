"""PixelCNN and GatedPixelCNN: masks, causality, the blind spot, gradients, normalization, sampling."""
import itertools
import json

import numpy as np
import pytest

from tinyar import nn
from tinyar.gradcheck import gradcheck
from tinyar.models import REGISTRY, GatedPixelCNN, PixelCNN
from tinyar.models.pixelcnn import blind_spot_offsets
from tinyar.tensor import Tensor

MODELS = [PixelCNN, GatedPixelCNN]


def _randomize(model, seed=0, scale=0.3):
    """Non-zero biases and larger weights, so that no ReLU sits exactly at its kink and no
    dependence vanishes by accident."""
    rng = np.random.default_rng(seed)
    for p in model.parameters():
        p.data[...] += scale * rng.standard_normal(p.shape)
    return model


def _small(cls, image_shape=(3, 3), n_levels=2, n_layers=1, seed=0, **kw):
    kw = dict(n_channels=4, kernel_size=3, first_kernel_size=3) | kw
    model = cls(int(np.prod(image_shape)), image_shape=image_shape, n_levels=n_levels, n_layers=n_layers,
                rng=seed, dtype=np.float64, **kw)
    return _randomize(model, seed)


def input_jacobian(model, x):
    """J[i, j] = sum over the batch and the output levels of |d logit_i / d input_j|."""
    D = model.n_dims
    J = np.zeros((D, D))
    for i in range(D):
        xt = Tensor(x.copy(), requires_grad=True)
        out = model.forward(xt)                                        # (B, D) or (B, D, K)
        upstream = np.zeros(out.shape)
        upstream[:, i] = 1.0
        out.backward(upstream)
        J[i] = np.abs(xt.grad).sum(axis=0)
    return J


# ---------------------------------------------------------------------------------- masks
def test_masks_drawn():
    A = nn.conv_mask(3, 3, "A")
    B = nn.conv_mask(3, 3, "B")
    np.testing.assert_array_equal(A, [[1, 1, 1], [1, 0, 0], [0, 0, 0]])
    np.testing.assert_array_equal(B, [[1, 1, 1], [1, 1, 0], [0, 0, 0]])
    np.testing.assert_array_equal(nn.conv_mask(3, 3, "vertical"), [[1, 1, 1], [1, 1, 1], [0, 0, 0]])
    np.testing.assert_array_equal(nn.conv_mask(1, 5, "A"), [[1, 1, 0, 0, 0]])
    np.testing.assert_array_equal(nn.conv_mask(1, 5, "B"), [[1, 1, 1, 0, 0]])
    with pytest.raises(ValueError, match="mask_type"):
        nn.conv_mask(3, 3, "C")
    with pytest.raises(ValueError, match="odd"):
        nn.MaskedConv2d(1, 2, 4)


@pytest.mark.parametrize("mask_type", ["A", "B"])
@pytest.mark.parametrize("k", [3, 5])
def test_masked_conv_causal(mask_type, k):
    """Output pixel i of one masked convolution: zero gradient wrt input pixels after i (and at i,
    for mask A); non-zero wrt every input pixel before i inside the kernel's reach."""
    H, W = 5, 6
    rng = np.random.default_rng(1)
    conv = nn.MaskedConv2d(2, 3, k, mask_type=mask_type, rng=rng, dtype=np.float64)
    x = Tensor(rng.standard_normal((2, 2, H, W)), requires_grad=True)
    y = conv(x)
    for i, j in itertools.product(range(H), range(W)):
        upstream = np.zeros(y.shape)
        upstream[:, :, i, j] = 1.0
        x.grad = None
        conv(x).backward(upstream)
        seen = np.abs(x.grad).sum(axis=(0, 1))                          # (H, W)
        for a, b in itertools.product(range(H), range(W)):
            before = (a, b) < (i, j) or (mask_type == "B" and (a, b) == (i, j))
            in_reach = abs(a - i) <= k // 2 and abs(b - j) <= k // 2
            if before and in_reach:
                assert seen[a, b] > 0, (mask_type, (i, j), (a, b))
            else:
                assert seen[a, b] == 0, (mask_type, (i, j), (a, b))


# ------------------------------------------------------------------------------ causality
@pytest.mark.parametrize("cls", MODELS)
@pytest.mark.parametrize("n_levels", [2, 4])
def test_causality(cls, n_levels):
    """Output pixel i has zero gradient wrt every input pixel at or after i in raster order."""
    model = _small(cls, image_shape=(4, 5), n_levels=n_levels, n_layers=2)
    x = np.random.default_rng(2).random((3, 20))
    J = input_jacobian(model, x)
    assert np.all(np.triu(J) == 0), np.argwhere(np.triu(J) != 0)       # j >= i: nothing
    assert J[1, 0] > 0 and J[19, 18] > 0 and J[10, 0] > 0


def test_blind_spot_of_plain_stack_and_none_in_gated():
    """In a 5x5 image, output pixel (2, 1) of the plain stack never sees (1, 3): above and to the
    right, inside what a 3x3 stack of 3 layers should reach. The gated model sees every pixel before."""
    H, W = 5, 5
    x = np.random.default_rng(3).random((2, H * W))
    i = 2 * W + 1
    plain = input_jacobian(_small(PixelCNN, image_shape=(H, W), n_layers=4, n_channels=8), x)[i]
    gated = input_jacobian(_small(GatedPixelCNN, image_shape=(H, W), n_layers=3, n_channels=8), x)[i]
    before = np.arange(H * W) < i
    assert plain[1 * W + 3] == 0 and plain[1 * W + 4] == 0            # the blind spot
    assert plain[1 * W + 2] > 0 and plain[0 * W + 3] > 0              # around it: seen
    assert np.all(gated[before] > 0)                                  # no blind spot
    assert np.all(gated[~before] == 0)


def _blind_from_gradients(model, row, col, reach):
    """Offsets (a - row, b - col) of the pixels before (row, col), within `reach` rows above and
    columns either side, that logit (row, col) has zero gradient for. 16 standard normal inputs:
    the corner of the field is reached by one path only, which must not die behind a ReLU."""
    H, W = model.image_shape
    x = Tensor(np.random.default_rng(5).standard_normal((16, H * W)), requires_grad=True)
    out = model.forward(x)
    upstream = np.zeros(out.shape)
    upstream[:, row * W + col] = 1.0
    out.backward(upstream)
    seen = np.abs(x.grad).sum(axis=0).reshape(H, W)
    return [(a - row, b - col) for a in range(row - reach, row + 1) for b in range(col - reach, col + reach + 1)
            if (a, b) < (row, col) and seen[a, b] == 0]


@pytest.mark.parametrize("first_kernel, kernel, n_layers", [(3, 3, 2), (3, 3, 4), (5, 3, 2), (7, 3, 4), (3, 5, 2),
                                                            (3, 7, 2), (5, 1, 1)])
def test_blind_spot_rule_matches_gradients(first_kernel, kernel, n_layers):
    """blind_spot_offsets (the rule in pixelcnn.py's docstring) lists exactly the pixels the gradient
    of output (R, R) misses, R = k1 // 2 + L (k // 2) its reach, on an (R + 1) x (2 R + 1) image.
    (3, 7, 2): a later kernel wider than the first (the "p min(L, t) - 1" term of the rule)."""
    R = first_kernel // 2 + n_layers * (kernel // 2)
    model = _small(PixelCNN, image_shape=(R + 1, 2 * R + 1), n_layers=n_layers, n_channels=4, kernel_size=kernel,
                   first_kernel_size=first_kernel, seed=6)
    rule = blind_spot_offsets(first_kernel, kernel, n_layers)
    assert _blind_from_gradients(model, R, R, R) == rule
    assert len(rule) > 0 or kernel == 1


def test_blind_spot_of_the_default_pixelcnn():
    """7x7 mask A and four 3x3 layers: 10 blind pixels; for output (5, 2) the nearest is (4, 6),
    while (4, 5) (and all of row 4 from column 2 - 7 up to 5) is seen."""
    rule = blind_spot_offsets(7, 3, 4)
    assert len(rule) == 10
    assert (-1, 4) in rule and (-1, 3) not in rule                    # (5, 2) + (-1, 4) = (4, 6)
    assert sorted(rule) == sorted([(-1, 4), (-1, 5), (-1, 6), (-1, 7), (-2, 5), (-2, 6), (-2, 7),
                                   (-3, 6), (-3, 7), (-4, 7)])
    three = blind_spot_offsets(3, 3, 5)                                # a 3x3 first layer: from (i-1, j+2)
    assert (-1, 2) in three and (-1, 1) not in three and len(three) == 15


# ------------------------------------------------------------------------------- gradients
@pytest.mark.parametrize("cls", MODELS)
def test_gradcheck_example(cls):
    model, x = cls.gradcheck_example()
    gradcheck(lambda *p: -model.log_prob(x).mean(), *model.parameters())


@pytest.mark.parametrize("cls", MODELS)
def test_gradcheck_categorical(cls):
    model = _small(cls, image_shape=(2, 3), n_levels=4, seed=4, n_channels=3)
    x = np.random.default_rng(4).integers(0, 4, (3, 6))
    gradcheck(lambda *p: -model.log_prob(x).mean(), *model.parameters())


# --------------------------------------------------------------------------- normalization
@pytest.mark.parametrize("cls", MODELS)
def test_normalized_over_all_binary_3x3_images(cls):
    model = _small(cls, image_shape=(3, 3), n_layers=2)
    x = np.array(list(itertools.product([0, 1], repeat=9)), dtype=np.float64)   # all 2^9 images
    log_p = model.log_prob(x).data
    assert log_p.shape == (512,) and np.all(log_p < 0)
    np.testing.assert_allclose(np.exp(log_p).sum(), 1.0, rtol=1e-10)
    assert np.exp(log_p).max() < 0.5                                  # not a degenerate model


@pytest.mark.parametrize("cls", MODELS)
def test_normalized_categorical(cls):
    model = _small(cls, image_shape=(2, 2), n_levels=3, n_layers=1)
    x = np.array(list(itertools.product(range(3), repeat=4)))          # all 3^4 images
    np.testing.assert_allclose(np.exp(model.log_prob(x).data).sum(), 1.0, rtol=1e-10)


# ------------------------------------------------------------------------------- sampling
@pytest.mark.parametrize("cls", MODELS)
def test_samples_match_model_on_1x3_image(cls):
    """Frequencies of the 8 images of a 1x3 image in 20,000 samples against the model's own
    probabilities: Pearson's chi-square with 7 degrees of freedom below 24.3 (p = 0.001)."""
    model = _small(cls, image_shape=(1, 3), n_layers=1, seed=5)
    images = np.array(list(itertools.product([0, 1], repeat=3)), dtype=np.float64)
    p = np.exp(model.log_prob(images).data)
    assert p.min() > 0.02 and abs(p.sum() - 1) < 1e-10
    n = 20000
    s = model.sample(n, rng=np.random.default_rng(6))
    assert s.shape == (n, 3) and set(np.unique(s)) <= {0.0, 1.0}
    counts = np.array([np.sum(np.all(s == img, axis=1)) for img in images])
    chi2 = np.sum((counts - n * p) ** 2 / (n * p))
    assert chi2 < 24.3, (counts, n * p)
    uniform = np.full(8, n / 8)                                        # the test has power:
    assert np.sum((counts - uniform) ** 2 / uniform) > 24.3             # samples are not uniform


@pytest.mark.parametrize("cls", MODELS)
def test_samples_match_model_on_2x2_image(cls):
    """As above on a 2x2 image, so that the second row is drawn given the first (the row > 0
    path of _draw): 16 images in 20,000 samples, chi-square with 15 degrees of freedom below
    37.70 (p = 0.001)."""
    model = _small(cls, image_shape=(2, 2), n_layers=1, seed=5)
    images = np.array(list(itertools.product([0, 1], repeat=4)), dtype=np.float64)
    p = np.exp(model.log_prob(images).data)
    assert p.min() > 0.02 and abs(p.sum() - 1) < 1e-10
    n = 20000
    s = model.sample(n, rng=np.random.default_rng(6))
    assert s.shape == (n, 4) and set(np.unique(s)) <= {0.0, 1.0}
    counts = np.array([np.sum(np.all(s == img, axis=1)) for img in images])
    assert np.sum((counts - n * p) ** 2 / (n * p)) < 37.70, (counts, n * p)
    uniform = np.full(16, n / 16)                                      # the test has power:
    assert np.sum((counts - uniform) ** 2 / uniform) > 37.70            # samples are not uniform


@pytest.mark.parametrize("cls", MODELS)
def test_complete_ignores_nan_placeholders_in_unobserved_pixels(cls):
    model = _small(cls, image_shape=(2, 2), n_layers=1, seed=3)
    observed = np.array([True, True, False, False])
    x = np.array([[1.0, 0.0, np.nan, np.nan]] * 50)                    # NaN: "unknown", never read
    done = model.complete(x, observed, rng=np.random.default_rng(4))
    zeros = model.complete(np.nan_to_num(x), observed, rng=np.random.default_rng(4))
    np.testing.assert_array_equal(done, zeros)                         # the placeholders do not matter
    assert np.all(done[:, :2] == [1, 0]) and set(np.unique(done[:, 2:])) == {0.0, 1.0}
    with pytest.raises(ValueError, match="NaN"):                       # an observed NaN is still an error
        model.complete(x, np.ones(4, bool))
    with pytest.raises(ValueError, match="observed_mask"):
        model.complete(x, np.ones(3, bool))


@pytest.mark.parametrize("cls", MODELS)
def test_complete_matches_conditional(cls):
    """Pixel 0 of a 1x3 image observed as 1: the completions of pixels 1, 2 follow
    p(x_1, x_2 | x_0 = 1) (chi-square, 3 degrees of freedom, below 16.27: p = 0.001)."""
    model = _small(cls, image_shape=(1, 3), n_layers=1, seed=8)
    rest = np.array(list(itertools.product([0, 1], repeat=2)), dtype=np.float64)
    joint = np.exp(model.log_prob(np.hstack([np.ones((4, 1)), rest])).data)
    p = joint / joint.sum()
    n = 8000
    x = np.zeros((n, 3))
    x[:, 0] = 1
    x[: n // 2, 2] = 1                                                 # unobserved values are ignored
    done = model.complete(x, np.array([True, False, False]), rng=np.random.default_rng(9))
    assert np.all(done[:, 0] == 1)
    counts = np.array([np.sum(np.all(done[:, 1:] == r, axis=1)) for r in rest])
    assert np.sum((counts - n * p) ** 2 / (n * p)) < 16.27, (counts, n * p)
    full = model.complete(x[:5], np.ones(3, bool), rng=0)              # everything observed: unchanged
    np.testing.assert_array_equal(full, x[:5])


def test_categorical_samples_are_levels():
    model = _small(PixelCNN, image_shape=(3, 4), n_levels=5, n_layers=1)
    s = model.sample(7, rng=0)
    assert s.shape == (7, 12) and s.dtype.kind == "i" and s.min() >= 0 and s.max() <= 4
    assert np.isfinite(model.log_prob(s).data).all()
    np.testing.assert_array_equal(s, model.sample(7, rng=0))          # deterministic under a seed


# ------------------------------------------------------------------------- the interface
@pytest.mark.parametrize("cls", MODELS)
def test_config_rebuilds_identical_model(cls):
    model = _small(cls, image_shape=(3, 4), n_levels=3, n_layers=2)
    config = json.loads(json.dumps(model.config))                     # JSON-serialisable
    twin = cls(**config)
    twin.load_state_dict(model.state_dict())
    x = np.random.default_rng(7).integers(0, 3, (4, 12))
    np.testing.assert_array_equal(twin.log_prob(x).data, model.log_prob(x).data)
    assert twin.data_kind == "categorical" and cls(12, image_shape=(3, 4)).data_kind == "binary"


def test_registry_and_for_dataset():
    from tinyar import data
    assert REGISTRY["pixelcnn"] is PixelCNN and REGISTRY["gated-pixelcnn"] is GatedPixelCNN
    binary = data.digits("binary")
    m = PixelCNN.for_dataset(binary, n_channels=4, n_layers=1)
    assert m.n_dims == 64 and m.image_shape == (8, 8) and m.n_levels == 2
    levels = data.digits("levels")
    m = GatedPixelCNN.for_dataset(levels, n_channels=4, n_layers=1)
    assert m.n_levels == 17 and m.data_kind == "categorical"
    assert m.log_prob(levels.test[:2]).shape == (2,)
    for cls in MODELS:
        assert {"lr", "momentum", "batch_size", "epochs", "model"} <= set(cls.recipe)


@pytest.mark.parametrize("cls", MODELS)
def test_bad_input(cls):
    model = cls(9, n_channels=2, n_layers=1)
    with pytest.raises(ValueError, match="binary"):
        model.log_prob(np.full((2, 9), 0.5))
    with pytest.raises(ValueError, match=r"\(batch, 9\)"):
        model.log_prob(np.zeros((2, 8)))
    with pytest.raises(ValueError, match="NaN"):
        model.log_prob(np.full((1, 9), np.nan))
    with pytest.raises(ValueError, match="categories in 0..2"):
        cls(9, n_levels=3, n_channels=2, n_layers=1).log_prob(np.full((1, 9), 3))
    with pytest.raises(ValueError, match="image_shape"):
        cls(10, n_channels=2)
    with pytest.raises(ValueError, match="image_shape"):
        cls(12, image_shape=(3, 3))
