"""demos/fvsbn_chain_rule.py --quick: the figures its docstring promises for the quick run."""


def test_fvsbn_chain_rule_demo_quick(load_demo, tmp_path, capsys):
    stats = load_demo("fvsbn_chain_rule").main(["--quick", "--out", str(tmp_path)])
    printed = capsys.readouterr().out
    assert abs(stats["total"] - 1.0) < 1e-9                                 # sum of p(x) over all 2^12 x
    assert "sum over all 4096 x of p(x) = 1.000000" in printed
    assert (stats["n_parameters"], stats["n_free"]) == (4160, 2080)
    assert "4,160 parameters stored (W is D x D), 2,080 free" in printed
    assert stats["chain_error"] < 1e-5
    assert abs(stats["test_nll"] - 20.1) < 0.1                               # 5 epochs
    for name in ("fvsbn_chain_rule.png", "samples.png"):
        assert (tmp_path / name).read_bytes()[:4] == b"\x89PNG"
