"""demos/made_masks.py --quick: the masks' path counts, and each single mask against the ensembles.

The figures asserted are those the demo's docstring states for its quick run (seeded).
"""
import numpy as np
import pytest


def test_made_masks_demo_quick(tmp_path, capsys, load_demo):
    result = load_demo("made_masks").main(["--quick", "--out", str(tmp_path)])
    for name in ("made_masks.png", "made_ensemble.png"):
        assert (tmp_path / name).read_bytes()[:4] == b"\x89PNG"

    # paths from x_d' to output d, in the ordering: strictly lower triangular (autoregressive)
    paths = result["paths"]
    assert not np.triu(paths).any()
    assert paths[1:, 0].tolist() == [6, 9, 19, 31, 31]

    # 1 epoch on 200 images: each mask near 43-44 nats, and the ensembles of 1, 2, 4, 8 masks
    single, ensemble = np.array(result["single"]), np.array(result["ensemble"])
    assert single.shape == (8,) and ensemble.shape == (4,)
    assert single == pytest.approx([43.21, 43.71, 43.80, 43.92, 43.88, 43.73, 43.90, 43.66], abs=0.1)
    assert ensemble == pytest.approx([43.21, 43.43, 43.61, 43.69], abs=0.1)
    assert ensemble[0] == pytest.approx(single[0], abs=1e-3)      # an ensemble of one mask is that mask
    # after one epoch the ensemble of 8 is NOT below every mask: mask 0 alone is better
    low, high = result["gain"]
    assert (low, high) == pytest.approx((-0.48, 0.23), abs=0.1)
    assert low == pytest.approx(float(np.min(single - ensemble[-1]))) and low < 0 < high
    printed = capsys.readouterr().out
    assert "strictly lower triangular" in printed and "ensembles of the first N masks" in printed
    assert f"{low:+.2f} to {high:+.2f} nats" in printed
