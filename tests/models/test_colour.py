"""ColourPixelCNN (R before G before B within each pixel) and the categorical models on colour data."""
import numpy as np
import pytest

from tinyar import data, metrics, nn, train
from tinyar.gradcheck import gradcheck
from tinyar.models import REGISTRY, CategoricalMADE, CategoricalNADE, ColourPixelCNN, PixelCNN

RGB = np.arange(3)


def model_3x3(n_levels=4, seed=0):
    """A float64 model of 3x3 colour images whose weights and biases are all moved off their start."""
    rng = np.random.default_rng(seed)
    model = ColourPixelCNN(27, image_shape=(3, 3), n_levels=n_levels, n_channels=6, n_layers=2, kernel_size=3,
                           first_kernel_size=3, rng=rng, dtype=np.float64)
    for p in model.parameters():
        p.data[...] += 0.5 * rng.standard_normal(p.shape)
    return model


# ---------------------------------------------------------------- the masks
def test_grouped_masks_order_the_channels_at_the_centre_tap_only():
    A, B = nn.conv_mask(3, 3, "A", RGB, RGB), nn.conv_mask(3, 3, "B", RGB, RGB)
    assert A.shape == B.shape == (3, 3, 3, 3)
    np.testing.assert_array_equal(A[:, :, 1, 1], [[0, 0, 0], [1, 0, 0], [1, 1, 0]])   # out g sees in h < g
    np.testing.assert_array_equal(B[:, :, 1, 1], [[1, 0, 0], [1, 1, 0], [1, 1, 1]])   # h <= g
    off_centre = np.ones((3, 3), bool)
    off_centre[1, 1] = False
    for g in range(3):
        for h in range(3):
            np.testing.assert_array_equal(A[g, h][off_centre], nn.conv_mask(3, 3, "A")[off_centre])
            np.testing.assert_array_equal(B[g, h][off_centre], nn.conv_mask(3, 3, "B")[off_centre])
    np.testing.assert_array_equal(nn.channel_groups(6, 3), [0, 0, 1, 1, 2, 2])
    with pytest.raises(ValueError, match="7 channels do not split into 3 equal groups"):
        nn.channel_groups(7, 3)
    with pytest.raises(ValueError, match="channel groups need mask_type 'A' or 'B'"):
        nn.conv_mask(3, 3, "vertical", RGB, RGB)


def test_grouped_conv_gets_no_gradient_through_masked_weights():
    conv = nn.MaskedConv2d(3, 6, 3, "A", n_groups=3, rng=0, dtype=np.float64)
    assert conv.mask.shape == (6, 3, 3, 3)
    x = np.random.default_rng(1).standard_normal((2, 3, 4, 4))
    conv(nn.Tensor(x)).sum().backward()
    assert (conv.weight.grad[conv.mask == 0] == 0).all()
    assert (conv.weight.grad[conv.mask == 1] != 0).all()
    conv.weight.data[conv.mask == 0] = 1e3                           # what a dead weight holds does not matter
    y = conv(nn.Tensor(x)).data
    conv.weight.data[conv.mask == 0] = 0.0
    np.testing.assert_allclose(conv(nn.Tensor(x)).data, y, atol=1e-12)


# -------------------------------------------------- the autoregressive property
def subpixel(r, c, channel, W=3):
    return 3 * (r * W + c) + channel


def test_p_of_R_ignores_G_and_B_of_its_pixel_and_p_of_G_ignores_B():
    model = model_3x3()
    x = np.random.default_rng(3).integers(0, 4, (4, 27))
    R, G, B = (subpixel(1, 1, ch) for ch in range(3))
    p = model.conditionals(x)                                         # (4, 27, 4)
    changed = x.copy()
    changed[:, G] = (x[:, G] + 1) % 4
    changed[:, B] = (x[:, B] + 2) % 4
    np.testing.assert_allclose(model.conditionals(changed)[:, :R + 1], p[:, :R + 1], rtol=0, atol=1e-13)
    changed = x.copy()
    changed[:, B] = (x[:, B] + 1) % 4
    np.testing.assert_allclose(model.conditionals(changed)[:, :G + 1], p[:, :G + 1], rtol=0, atol=1e-13)


def test_changing_any_subpixel_moves_no_conditional_up_to_it():
    model = model_3x3()
    x = np.random.default_rng(4).integers(0, 4, (2, 27))
    p = model.conditionals(x)
    for d in range(27):
        changed = x.copy()
        changed[:, d] = (x[:, d] + 1 + d % 3) % 4
        q = model.conditionals(changed)
        np.testing.assert_allclose(q[:, :d + 1], p[:, :d + 1], rtol=0, atol=1e-13, err_msg=f"subpixel {d}")
        if d < 26:
            assert np.abs(q[:, d + 1:] - p[:, d + 1:]).max() > 1e-6      # the next conditionals do see it


def test_G_depends_on_R_and_B_on_R_and_G_of_the_same_pixel():
    model = model_3x3()
    x = np.random.default_rng(5).integers(0, 4, (4, 27))
    R, G, B = (subpixel(0, 0, ch) for ch in range(3))                # the first pixel: nothing else before it
    p = model.conditionals(x)
    for d in (R, G):
        changed = x.copy()
        changed[:, d] = (x[:, d] + 2) % 4
        q = model.conditionals(changed)
        for later in range(d + 1, B + 1):
            assert np.abs(q[:, later] - p[:, later]).max() > 1e-5, (d, later)


def test_a_pixelcnn_without_channel_groups_would_fail_the_converse():
    # The check above is one a colour model without ordered channels fails: the grey-level
    # PixelCNN's mask A hides all of pixel i, so p(G_i) cannot see R_i. Here, the model's
    # mask-A layer is swapped for a plain one.
    model = model_3x3()
    plain = nn.MaskedConv2d(3, 6, 3, "A", rng=0, dtype=np.float64)
    plain.weight.data[...] = model.conv_in.weight.data
    model.conv_in = plain
    x = np.random.default_rng(5).integers(0, 4, (4, 27))
    changed = x.copy()
    changed[:, 0] = (x[:, 0] + 2) % 4
    np.testing.assert_allclose(model.conditionals(changed)[:, 1], model.conditionals(x)[:, 1], atol=1e-13)


# ------------------------------------------------ normalization and gradients
@pytest.mark.parametrize("n_levels", [2, 3])
def test_probabilities_of_every_2x1_colour_image_sum_to_one(n_levels):
    rng = np.random.default_rng(n_levels)
    model = ColourPixelCNN(6, image_shape=(2, 1), n_levels=n_levels, n_channels=6, n_layers=2, kernel_size=3,
                           first_kernel_size=3, rng=rng, dtype=np.float64)
    for p in model.parameters():
        p.data[...] += 0.5 * rng.standard_normal(p.shape)
    x, log_p = metrics.exact_log_probs(model)
    assert x.shape == (n_levels ** 6, 6)
    assert abs(np.exp(log_p).sum() - 1.0) < 1e-6
    assert np.exp(log_p).max() < 0.5                                  # not a point mass: a real check


def test_gradcheck_of_the_loss_in_float64():
    model, x = ColourPixelCNN.gradcheck_example()
    assert model.dtype == np.float64 and x.shape == (3, 12)
    result = gradcheck(lambda *params: model.nll(x), *model.parameters(), max_coordinates=12, n_directions=4)
    assert result["max_abs_error"] < 1e-6


# ------------------------------------------------------------------ sampling
def test_samples_have_the_shape_range_and_seed_behaviour():
    model = model_3x3(n_levels=4)
    a = model.sample(5, rng=np.random.default_rng(7))
    assert a.shape == (5, 27) and a.dtype == np.int64
    assert a.min() >= 0 and a.max() <= 3
    np.testing.assert_array_equal(model.sample(5, rng=np.random.default_rng(7)), a)
    assert not np.array_equal(model.sample(5, rng=np.random.default_rng(8)), a)
    assert model.sample(0).shape == (0, 27)
    with pytest.raises(TypeError, match="n must be a whole number"):
        model.sample(2.5)


def test_sample_frequencies_match_the_models_probabilities():
    # one pixel, 3 levels: 27 colours; the sampler's R, G, B order must be log_prob's
    rng = np.random.default_rng(9)
    model = ColourPixelCNN(3, image_shape=(1, 1), n_levels=3, n_channels=3, n_layers=1, kernel_size=3,
                           first_kernel_size=3, rng=rng, dtype=np.float64)
    for p in model.parameters():
        p.data[...] += rng.standard_normal(p.shape)
    colours, log_p = metrics.exact_log_probs(model)
    samples = model.sample(6000, rng=np.random.default_rng(10))
    index = samples @ np.array([9, 3, 1])                             # the row of all_configurations
    freq = np.bincount(index, minlength=27) / len(samples)
    assert np.abs(freq - np.exp(log_p)).sum() / 2 < 0.04              # total variation
    assert np.exp(log_p).max() > 0.1                                  # far from uniform, so the order matters


# ------------------------------------------------------------ input and data
def test_bad_arguments_and_inputs_get_clear_errors():
    model = model_3x3(n_levels=4)
    with pytest.raises(ValueError, match="expected shape \\(batch, 27\\)"):
        model.log_prob(np.zeros((2, 9), np.int64))
    with pytest.raises(ValueError, match="4"):
        model.log_prob(np.full((1, 27), 4))
    with pytest.raises(ValueError, match="n_channels a multiple of 3"):
        ColourPixelCNN(27, n_levels=4, n_channels=8)
    with pytest.raises(ValueError, match="does not hold n_dims = 27"):
        ColourPixelCNN(27, image_shape=(3, 4))
    with pytest.raises(ValueError, match="colour images"):
        ColourPixelCNN.for_dataset(data.digits("levels"))
    with pytest.raises(ValueError, match="is not a square|does not hold"):
        PixelCNN.for_dataset(data.photo_patches(levels=4))         # the grey model refuses colour data


def test_colour_models_on_the_photo_patches_and_a_checkpoint(tmp_path):
    photos = data.photo_patches(levels=256)
    assert REGISTRY["pixelcnn-colour"] is ColourPixelCNN
    x = photos.test[:4]
    for cls, kwargs in ((ColourPixelCNN, dict(n_channels=6, n_layers=1, first_kernel_size=3)),
                        (CategoricalNADE, dict(n_hidden=8)), (CategoricalMADE, dict(n_hidden=[16]))):
        model = cls.for_dataset(photos, rng=0, **kwargs)
        assert model.n_dims == 192 and model.n_levels == 256
        log_p = model.log_prob(x).data
        assert log_p.shape == (4,) and np.isfinite(log_p).all()
        bits = metrics.bits_per_dim(-log_p.mean(), 192)
        assert 6.0 < bits < 10.0, (cls.__name__, bits)               # near 8 bits (uniform) before training
    model = ColourPixelCNN.for_dataset(photos, rng=0, n_channels=6, n_layers=1, first_kernel_size=3)
    train.save(model, tmp_path / "colour.npz")
    again = train.load(tmp_path / "colour.npz")
    assert type(again) is ColourPixelCNN and again.image_shape == (8, 8, 3)
    np.testing.assert_array_equal(again.log_prob(x).data, model.log_prob(x).data)


def test_free_parameters_count_only_the_taps_the_grouped_masks_keep():
    model = ColourPixelCNN(12, image_shape=(2, 2), n_levels=3, n_channels=3, n_layers=1, kernel_size=3,
                           first_kernel_size=3, rng=0)
    # one channel per group; a 3x3 mask keeps 4 taps off the centre for every pair of channels
    conv_in = 4 * 9 + 3 + 3            # centre: out g sees in h < g (3 pairs); bias
    layer = 4 * 9 + 6 + 3              # centre: h <= g (6 pairs); bias
    out_hidden = 6 + 3                 # 1x1, mask B
    out_logits = 3 * (1 + 2 + 3) + 9   # 3 levels per group; out group g sees in groups <= g; bias
    assert model.n_parameters(free=True) == conv_in + layer + out_hidden + out_logits == 123
    assert model.n_parameters() == 3 * 3 * 9 + 3 + 3 * 3 * 9 + 3 + 9 + 3 + 27 + 9 == 216
