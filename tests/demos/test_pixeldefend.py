"""demos/pixeldefend.py --quick: the attack works, Algorithm 1 helps, the p-values separate the sets."""


def test_pixeldefend_demo_quick(tmp_path, capsys, load_demo):
    demo = load_demo("pixeldefend")
    results = demo.main(["--quick", "--out-dir", str(tmp_path)])
    assert results["attacked"] < results["clean"] - 0.3                    # FGSM of 2 levels works
    assert results["attacked, Algorithm 1"] > results["attacked"]          # and purification undoes part of it
    assert results["clean, Algorithm 1"] >= results["clean"] - 0.1         # at little cost on clean digits
    for png in ("p_values.png", "purified.png"):
        assert (tmp_path / png).read_bytes()[:4] == b"\x89PNG"
    out = capsys.readouterr().out
    assert "median p-value" in out and "purified by Algorithm 1" in out
