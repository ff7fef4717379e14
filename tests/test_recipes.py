"""Recipes by data set: each model's `recipe` (the default) and `recipes` (by data set name),
chosen by --data or by --recipe NAME."""
import json

import pytest

from tinyar import cli
from tinyar.models import REGISTRY
from tinyar.models.fvsbn import FVSBN

MNIST_LIKE = dict(lr=0.123, momentum=0.5, batch_size=50, epochs=1, model=dict(init_std=0.0))


@pytest.mark.parametrize("name", sorted(REGISTRY))
def test_every_recipe_of_every_model_names_what_sgd_needs(name):
    cls = REGISTRY[name]
    assert cls.recipe_names()[0] == "default"
    assert cls.recipe_named("default") is cls.recipe
    for recipe_name in cls.recipe_names():
        recipe = cls.recipe_named(recipe_name)
        assert {"lr", "batch_size", "epochs"} <= set(recipe), (name, recipe_name)


def test_an_unknown_recipe_name_is_a_clear_error():
    with pytest.raises(ValueError, match=r"FVSBN has no recipe 'cifar': expected one of \['default'"):
        FVSBN.recipe_named("cifar")


def test_the_data_set_picks_the_recipe_unless_one_is_asked_for(monkeypatch):
    monkeypatch.setattr(FVSBN, "recipes", {"mnist": MNIST_LIKE})
    assert cli.recipe_name_for(FVSBN, "mnist") == "mnist"
    assert cli.recipe_name_for(FVSBN, "mnist-idx:/some/folder") == "mnist"
    assert cli.recipe_name_for(FVSBN, "digits") == "default"
    assert cli.recipe_name_for(FVSBN, "mine.npz") == "default"
    assert cli.recipe_name_for(FVSBN, "mnist", asked="default") == "default"
    assert cli.recipe_name_for(FVSBN, "digits", asked="mnist") == "mnist"
    monkeypatch.setattr(FVSBN, "recipes", {})
    assert cli.recipe_name_for(FVSBN, "mnist") == "default"      # no MNIST recipe: the default one
    with pytest.raises(SystemExit, match="FVSBN has no recipe 'mnist' \\(it has default\\)"):
        cli.recipe_name_for(FVSBN, "digits", asked="mnist")


def test_train_with_recipe_uses_it_and_records_its_name(monkeypatch, tmp_path, capsys):
    monkeypatch.setattr(FVSBN, "recipes", {"mnist": MNIST_LIKE})
    out = tmp_path / "run"
    cli.main(["train", "fvsbn", "--data", "digits", "--recipe", "mnist", "--out", str(out), "--no-progress",
              "--n-samples", "4"])
    settings = json.loads((out / "run.json").read_text())["settings"]
    assert settings["recipe_name"] == "mnist"
    assert settings["recipe"]["lr"] == 0.123 and settings["recipe"]["batch_size"] == 50
    assert "recipe (mnist):" in capsys.readouterr().out
    with pytest.raises(SystemExit, match="which uses --recipe mnist"):        # resume keeps the run's recipe
        cli.main(["train", "fvsbn", "--data", "digits", "--recipe", "default", "--out", str(out), "--resume"])


def test_train_help_lists_the_recipes(monkeypatch, capsys):
    monkeypatch.setattr(FVSBN, "recipes", {"mnist": MNIST_LIKE})
    with pytest.raises(SystemExit):
        cli.main(["train", "fvsbn", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert "--recipe NAME the recipe to start from: default, mnist" in text
