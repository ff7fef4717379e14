"""demos/mle_is_kl.py --quick: the KL falls, the training NLL's floor is H(p_hat) < H(teacher),
and small-sample Monte Carlo estimates of a KL >= 0 can be negative while their mean is not."""
import numpy as np
import pytest


def test_mle_is_kl_demo_quick(tmp_path, capsys, load_demo):
    demo = load_demo("mle_is_kl")
    r = demo.main(["--quick", "--out", str(tmp_path)])
    assert (tmp_path / "mle_is_kl.png").read_bytes()[:4] == b"\x89PNG"
    out = capsys.readouterr().out

    # the figures the docstring states for --quick
    assert r["entropy"] == pytest.approx(4.8389, abs=5e-5)              # H(teacher)
    assert r["data_entropy"] == pytest.approx(4.7283, abs=5e-5)         # H(p_hat) of the 2,000 rows
    assert len(r["kl"]) == 4 and r["kl"][0] == pytest.approx(2.6747, abs=5e-5)
    assert r["kl"][-1] == pytest.approx(0.1475, abs=5e-5) and r["kl_final"] == r["kl"][-1]
    assert r["max_z"] < 3.0                                             # Monte Carlo within 3 stderr of exact

    # the training NLL's floor is the empirical entropy, which lies below the teacher's
    assert r["data_entropy"] < r["entropy"]
    assert r["kl_data"] > 0 and r["train_nll"] == pytest.approx(r["data_entropy"] + r["kl_data"], rel=1e-12)
    assert "H(p_hat) = 4.7283 nats < H(teacher)" in out

    # KL >= 0, yet 1,000 estimates from 20 samples each: some below 0, their mean ~ the exact KL
    estimates = r["estimates"]
    assert len(estimates) == 1000 and r["kl_final"] > 0
    assert np.sum(estimates < 0) == 95
    spread = estimates.std(ddof=1) / np.sqrt(len(estimates))
    assert abs(estimates.mean() - r["kl_final"]) < 3 * spread
    assert "95 negative (9.5%)" in out
