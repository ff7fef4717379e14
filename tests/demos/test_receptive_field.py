"""demos/receptive_field.py --quick: the plain PixelCNN has a blind spot (the one the rule in
pixelcnn.py predicts), the gated one none."""


def test_receptive_field_demo_quick(load_demo, tmp_path, capsys):
    out = tmp_path / "rf.png"
    stats = load_demo("receptive_field").main(["--quick", "--out", str(out)])
    assert stats["PixelCNN"] == dict(n_blind=3, future_seen=False, rule_agrees=True)
    assert stats["GatedPixelCNN"] == dict(n_blind=0, future_seen=False, rule_agrees=True)
    assert out.stat().st_size > 1000 and out.read_bytes()[:4] == b"\x89PNG"
    printed = capsys.readouterr().out
    assert "3 pixels before (4, 4)" in printed
    assert "blind: [(2, 7), (3, 6), (3, 7)]" in printed
    assert "10 blind pixels, the nearest (i-1, j+4), e.g. (4, 6) for output (5, 2)" in printed
