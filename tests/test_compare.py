"""python -m tinyar compare --quick: every row is a real, re-computable evaluation."""
import json
import math

import numpy as np
import pytest

from tinyar import compare, data, metrics
from tinyar.cli import main


def test_compare_quick_rows_match_a_fresh_evaluation(tmp_path):
    rows = compare.compare("digits", models=["fvsbn", "made", "nade-oa"], out=tmp_path, quick=True,
                           log=lambda s: None)
    assert [r["model"] for r in rows] == ["fvsbn", "made", "nade-oa"]
    test_x = data.digits("binary").test[:compare.QUICK_N["test"]]
    fvsbn, made, oa = (r["model_obj"] for r in rows)
    assert rows[0]["test_nll"] == pytest.approx(metrics.nll(fvsbn, test_x), rel=1e-6)
    assert rows[1]["test_nll"] == pytest.approx(metrics.nll(made, test_x), rel=1e-6)
    assert oa.order_agnostic and oa.mask_inputs                          # the ensemble entry is order-agnostic
    for r in rows:
        assert r["bits_per_dim"] == pytest.approx(r["test_nll"] / (64 * math.log(2)))
        assert r["n_parameters"] == r["model_obj"].n_parameters() > 0
        assert r["epochs"] == 1 and r["train_seconds"] > 0 and r["sample_seconds"] >= 0
        assert 20.0 < r["test_nll"] < 64 * math.log(2) + 1.0             # trained a little: below ~44.4 + 1
    assert rows[0]["n_parameters"] == 64 * 64 + 64                      # FVSBN: W (D, D) and b (D,)
    assert rows[0]["n_free_parameters"] == 64 * 63 // 2 + 64            # W strictly lower triangular
    table = (tmp_path / "results.md").read_text()
    body = [line for line in table.splitlines() if line.startswith("| ") and "(" in line and "model |" not in line]
    assert len(body) == 3
    nlls = [float(line.split("|")[2]) for line in body]
    assert nlls == sorted(nlls)                                         # best first
    saved = json.loads((tmp_path / "results.json").read_text())
    assert [r["model"] for r in saved["rows"]] == ["fvsbn", "made", "nade-oa"] and saved["quick"] is True
    assert (tmp_path / "nll.png").read_bytes()[:4] == b"\x89PNG"


def test_compare_cli_quick_and_unknown_model(tmp_path, capsys):
    assert main(["compare", "--quick", "--models", "fvsbn,pixelcnn", "--out", str(tmp_path)]) == 0
    printed = capsys.readouterr().out
    assert "fvsbn (FVSBN)" in printed and "pixelcnn (PixelCNN)" in printed
    with pytest.raises(SystemExit, match="unknown model 'vae'"):
        main(["compare", "--quick", "--models", "fvsbn,vae", "--out", str(tmp_path / "x")])
    assert not (tmp_path / "x" / "results.md").exists()                 # nothing trained before the error


def test_markdown_table_sorts_and_formats():
    rows = [dict(model=name, class_name="C", test_nll=nll, bits_per_dim=nll / 44.36, n_parameters=1234,
                 n_free_parameters=617,
                 epochs=3, best_epoch=2, train_seconds=1.0, sample_seconds=0.5, n_samples=64, diverged=False)
            for name, nll in (("b", 20.5), ("a", 17.25))]
    lines = compare.markdown_table(rows).splitlines()
    assert lines[4].startswith("| a (C) | 17.25 |") and "| 1,234 (617) | 3 (2) |" in lines[4]
    assert lines[5].startswith("| b (C) | 20.50 |")
    assert np.isclose(float(lines[4].split("|")[3]), 17.25 / 44.36, atol=1e-4)


def test_markdown_table_puts_a_run_without_a_finite_nll_last_and_names_the_seed():
    rows = [dict(model=name, class_name="C", test_nll=nll, bits_per_dim=nll / 44.36, n_parameters=1, n_free_parameters=1,
                 epochs=1, best_epoch=1, train_seconds=1.0, sample_seconds=0.5, n_samples=64, diverged=False)
            for name, nll in (("a", 17.0), ("b", float("nan")), ("c", 20.0))]
    lines = compare.markdown_table(rows, seed=3).splitlines()
    assert [line.split(" (C)")[0] for line in lines[4:]] == ["| a", "| c", "| b"]
    assert "trained with seed 3" in lines[0]


def test_on_mnist_each_model_uses_its_mnist_recipe_and_the_default_list_is_those_that_have_one():
    from tinyar.models import FVSBN, MADE, NADE, PixelCNN
    assert compare.default_models("mnist") == ["fvsbn", "nade", "nade-oa", "made", "pixelcnn"]
    assert compare.default_models("mnist-idx:/folder") == compare.default_models("mnist")
    assert compare.default_models("digits") == list(compare.BUDGETS)
    for name, cls in (("fvsbn", FVSBN), ("nade", NADE), ("made", MADE), ("pixelcnn", PixelCNN)):
        spec_cls, recipe = compare._spec(name, "mnist")
        assert spec_cls is cls and recipe == dict(cls.recipes["mnist"], model=cls.recipes["mnist"]["model"])
    _, oa = compare._spec("nade-oa", "mnist")                   # the order-agnostic entry: NADE's recipe + its options
    assert oa["lr"] == NADE.recipes["mnist"]["lr"] and oa["model"]["order_agnostic"] is True
    _, pixel_rnn = compare._spec("pixel-rnn", "mnist")          # no MNIST recipe: the digits one, with its budget
    assert pixel_rnn["epochs"] == compare.BUDGETS["pixel-rnn"][2]["epochs"]


def test_compare_quick_on_mnist_trains_with_the_mnist_recipes(monkeypatch, tmp_path):
    from tinyar import data
    rng = np.random.default_rng(0)
    images = (rng.random((300, 784)) < 0.13).astype(np.float32)
    fake = data.Dataset("binarized-mnist", "binary", images[:200], images[200:250], images[250:],
                        n_dims=784, n_levels=2, image_shape=(28, 28))
    monkeypatch.setattr(data, "from_spec", lambda spec, *a, **k: fake if spec == "mnist" else None)
    from tinyar import train
    seen, real_fit = [], train.fit

    def fit(model, train, valid, optimizer, **kwargs):
        seen.append((type(model).__name__, optimizer.lr, optimizer.weight_decay, optimizer.l1))
        return real_fit(model, train, valid, optimizer, **kwargs)
    monkeypatch.setattr("tinyar.train.fit", fit)
    rows = compare.compare("mnist", models=["fvsbn", "made"], out=tmp_path, quick=True, log=lambda m: None)
    assert [r["model"] for r in rows] == ["fvsbn", "made"] and all(np.isfinite(r["test_nll"]) for r in rows)
    from tinyar.models import FVSBN, MADE
    assert seen[0] == ("FVSBN", FVSBN.recipes["mnist"]["lr"], 0.0, FVSBN.recipes["mnist"]["l1"])
    assert seen[1] == ("MADE", MADE.recipes["mnist"]["lr"], MADE.recipes["mnist"]["weight_decay"], 0.0)
