"""data.photo_patches: colour patches of scikit-learn's two photographs, split by position."""
import numpy as np
import pytest

from tinyar import data


@pytest.fixture(scope="module")
def photos():
    return data.photo_patches()


def test_shapes_dtype_levels_and_layout(photos):
    assert photos.kind == "categorical" and photos.n_levels == 256
    assert photos.n_dims == 192 and photos.image_shape == (8, 8, 3)
    sizes = [len(photos.split(s)) for s in ("train", "valid", "test")]
    assert sum(sizes) == 2 * (427 // 8) * (640 // 8)                 # every 8x8 patch of the grid, once
    assert sizes[0] > 6 * sizes[2] and min(sizes) > 500                # about 80 / 10 / 10%
    for s in ("train", "valid", "test"):
        x = photos.split(s)
        assert x.dtype == np.int64 and x.shape[1] == 192
        assert x.min() >= 0 and x.max() <= 255
    assert photos.train.max() == 255 and photos.train.min() == 0
    assert data.from_spec("photos").describe() == photos.describe()


def test_rows_are_the_photographs_pixels_channel_last(photos):
    images = data.sample_photos()
    where = data.photo_patch_positions([im.shape[:2] for im in images])
    for s in ("train", "valid", "test"):
        patches = np.stack([images[k][top:top + 8, left:left + 8] for k, top, left in where[s]])   # (n, 8, 8, 3)
        np.testing.assert_array_equal(photos.split(s).reshape(-1, 8, 8, 3), patches)
    k, top, left = where["test"][0]
    assert photos.test[0, :6].tolist() == [*images[k][top, left], *images[k][top, left + 1]]   # R G B, R G B


def test_no_pixel_of_the_photographs_is_in_two_splits():
    images = data.sample_photos()
    where = data.photo_patch_positions([im.shape[:2] for im in images])
    owner = np.full((2, 427, 640), -1)
    for s, name in enumerate(("train", "valid", "test")):
        for k, top, left in where[name]:
            assert (owner[k, top:top + 8, left:left + 8] == -1).all(), f"{name} patch at {(k, top, left)} overlaps"
            owner[k, top:top + 8, left:left + 8] = s
    assert set(np.unique(owner)) == {-1, 0, 1, 2}
    for k in range(2):                                               # each photo gives patches to every split
        assert set(np.unique(owner[k])) == {-1, 0, 1, 2}


def test_the_split_is_fixed_by_the_seed():
    shapes = [(427, 640), (427, 640)]
    a, b = data.photo_patch_positions(shapes), data.photo_patch_positions(shapes)
    other = data.photo_patch_positions(shapes, seed=1)
    for s in ("train", "valid", "test"):
        np.testing.assert_array_equal(a[s], b[s])
    assert not np.array_equal(a["test"], other["test"])


def test_fewer_levels_quantize_each_value(photos):
    four = data.photo_patches(levels=4)
    assert four.n_levels == 4 and sorted(np.unique(four.train)) == [0, 1, 2, 3]
    np.testing.assert_array_equal(four.test, photos.test // 64)         # floor(v 4 / 256)
    assert data.from_spec("photos-4").describe() == four.describe()


def test_smaller_patches_and_bad_arguments():
    small = data.photo_patches(patch_size=4, levels=2)
    assert small.n_dims == 48 and small.image_shape == (4, 4, 3)
    assert len(small.train) + len(small.valid) + len(small.test) == 2 * (427 // 4) * (640 // 4)
    with pytest.raises(ValueError, match="levels must be in 2..256, got 300"):
        data.photo_patches(levels=300)
    with pytest.raises(ValueError, match="patch_size"):
        data.photo_patches(patch_size=0)
