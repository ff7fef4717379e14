"""distributions: the input checks (bad values -> a clear error)."""
import numpy as np
import pytest

from tinyar.distributions import check_categories


def test_check_categories_accepts_integer_floats_and_returns_int64():
    k = check_categories(np.array([0.0, 2.0, 1.0]), 3)
    assert k.dtype == np.int64 and k.tolist() == [0, 2, 1]


@pytest.mark.parametrize("bad", [np.inf, -np.inf])
def test_check_categories_refuses_inf_with_a_clear_message(bad):
    with pytest.raises(ValueError, match="input contains inf"):       # not cast to -2**63 first
        check_categories(np.array([0.0, bad]), 3)


def test_check_categories_refuses_nan_fractions_and_out_of_range():
    with pytest.raises(ValueError, match="NaN"):
        check_categories(np.array([np.nan]), 3)
    with pytest.raises(ValueError, match="non-integer"):
        check_categories(np.array([0.5]), 3)
    with pytest.raises(ValueError, match=r"0\.\.2, got values in 0\.\.3"):
        check_categories(np.array([0, 3]), 3)
