"""demos/rnade.py --quick: the figures its docstring gives for the quick run, and both PNGs."""


def test_rnade_demo_quick(load_demo, tmp_path, capsys):
    result = load_demo("rnade").main(["--quick", "--out", str(tmp_path)])
    assert abs(result["gaussian_nll"] - (-31.55)) < 0.01
    assert abs(result["test_nll"] - 73.99) < 0.05                       # 2 epochs: far from trained
    printed = capsys.readouterr().out
    assert "RNADE, 2 epochs (best 2): test NLL 73.99 nats of density" in printed
    assert "5.755 bits/dim" in printed and "independent Gaussian per pixel: -31.55 nats" in printed
    for png in ("rnade.png", "samples.png"):
        assert (tmp_path / png).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
