"""demos/autoencoder_vs_made.py --quick: the autoencoder's numbers do not sum to 1, MADE's do."""


def test_autoencoder_vs_made_demo_quick(tmp_path, capsys, load_demo):
    demo = load_demo("autoencoder_vs_made")
    out = tmp_path / "ae.png"
    results = demo.main(["--quick", "--out", str(out)])
    made, ae = results["MADE"], results["autoencoder"]
    assert abs(made["sum"] - 1.0) < 1e-5                       # a distribution over all 2^10 inputs
    assert ae["sum"] > 2.0                                     # not one: it learns to copy its input
    assert ae["sees_itself"] == 10 and made["sees_itself"] == 0
    assert ae["train_loss"] < made["train_loss"]               # the lower loss is no likelihood
    assert out.read_bytes()[:4] == b"\x89PNG"
    assert "MADE can sample" in capsys.readouterr().out
