"""The command line under misuse: every bad flag, damaged run folder or reuse of a folder ends in
one line `error: ...` (naming the flag and the value) before anything is trained or written,
and a run folder always holds the files of one run."""
import json
import shutil

import numpy as np
import pytest

from tinyar import train
from tinyar.cli import main, picture_shape
from tinyar.models import REGISTRY

QUIET = ["--no-progress"]


def refused(argv, capsys):
    """Run the command line on argv, which must fail; its one error line."""
    with pytest.raises(SystemExit) as e:
        main(argv)
    err = capsys.readouterr().err
    assert "Traceback" not in err
    if e.value.code == 2:                                  # argparse: the usage, then one error line
        line = err.strip().splitlines()[-1]
        assert ": error: " in line
        return line
    assert isinstance(e.value.code, str) and e.value.code.startswith("error: ") and "\n" not in e.value.code
    return e.value.code


def snapshot(folder):
    """Every file of a folder: name -> (bytes, modification time), to show it was not touched."""
    return {p.name: (p.read_bytes(), p.stat().st_mtime_ns) for p in sorted(folder.iterdir())}


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A run folder of FVSBN after one epoch on the digits; tests work on copies of it."""
    out = tmp_path_factory.mktemp("trained") / "fvsbn"
    assert main(["train", "fvsbn", "--epochs", "1", "--out", str(out), *QUIET]) == 0
    return out


@pytest.fixture
def run(trained, tmp_path):
    """A fresh copy of the trained run folder."""
    return shutil.copytree(trained, tmp_path / "run")


@pytest.mark.parametrize("flag, value, expected", [
    ("--lr", "0", "a finite number > 0"), ("--lr", "-0.1", "a finite number > 0"),
    ("--lr", "nan", "a finite number > 0"), ("--lr", "inf", "a finite number > 0"),
    ("--momentum", "-0.5", "a number in [0, 1)"), ("--momentum", "1", "a number in [0, 1)"),
    ("--momentum", "5", "a number in [0, 1)"),
    ("--weight-decay", "-1", "a finite number >= 0"), ("--l1", "-0.001", "a finite number >= 0"), ("--weight-decay", "nan", "a finite number >= 0"),
    ("--clip", "0", "a finite number > 0"), ("--clip", "-1", "a finite number > 0"),
    ("--batch-size", "0", "an integer >= 1"), ("--batch-size", "-5", "an integer >= 1"),
    ("--batch-size", "2.5", "an integer >= 1"), ("--epochs", "0", "an integer >= 1"),
    ("--patience", "0", "an integer >= 1"), ("--warmup", "-1", "an integer >= 0"),
    ("--seed", "-1", "an integer >= 0"), ("--n-samples", "0", "an integer >= 1"),
    ("--n-samples", "-1", "an integer >= 1"), ("--seq-len", "1", "an integer >= 2"),
    ("--init-std", "-0.1", "a finite number >= 0"),
])
def test_a_bad_train_setting_is_one_line_before_anything_is_written(flag, value, expected, tmp_path, capsys):
    out = tmp_path / "new"
    line = refused(["train", "fvsbn", "--epochs", "1", flag, value, "--out", str(out), *QUIET], capsys)
    assert line == f"python -m tinyar train: error: argument {flag}: expected {expected}, got {value!r}"
    assert not out.exists()


@pytest.mark.parametrize("model, flag, value", [
    ("nade", "--hidden", "0"), ("made", "--masks", "0"), ("char-rnn", "--hidden", "-3"),
    ("transformer", "--heads", "0"), ("pixelcnn", "--channels", "0"), ("made", "--mask-seed", "-1"),
    ("made", "--batch-size", "0"), ("pixelcnn-colour", "--channels", "0"),
])
def test_a_bad_value_for_any_model_names_the_flag(model, flag, value, tmp_path, capsys):
    line = refused(["train", model, flag, value, "--out", str(tmp_path / "new"), *QUIET], capsys)
    assert f"argument {flag}: expected an integer >= " in line and repr(value) in line
    assert not (tmp_path / "new").exists()


def test_a_bad_setting_with_the_flag_first_is_the_same_one_line(tmp_path, capsys):
    line = refused(["train", "--lr", "nan", "fvsbn", "--out", str(tmp_path / "new")], capsys)
    assert line == "python -m tinyar train: error: argument --lr: expected a finite number > 0, got 'nan'"


@pytest.mark.parametrize("argv, flag, value, expected", [
    (["eval", "RUN", "--batch-size", "0"], "--batch-size", "0", "an integer >= 1"),
    (["eval", "RUN", "--batch-size", "-5"], "--batch-size", "-5", "an integer >= 1"),
    (["sample", "RUN", "--n", "0"], "--n", "0", "an integer >= 1"),
    (["sample", "RUN", "--n", "-2"], "--n", "-2", "an integer >= 1"),
    (["sample", "RUN", "--temperature", "nan"], "--temperature", "nan", "a finite number > 0"),
    (["sample", "RUN", "--temperature", "0"], "--temperature", "0", "a finite number > 0"),
    (["sample", "RUN", "--seed", "-1"], "--seed", "-1", "an integer >= 0"),
    (["compare", "--seed", "-1"], "--seed", "-1", "an integer >= 0"),
])
def test_bad_values_of_eval_sample_and_compare(argv, flag, value, expected, run, capsys):
    before = snapshot(run)
    line = refused([str(run) if a == "RUN" else a for a in argv], capsys)
    assert line == f"python -m tinyar {argv[0]}: error: argument {flag}: expected {expected}, got {value!r}"
    assert snapshot(run) == before


def test_eval_with_a_good_batch_size_scores_the_run(run, capsys):
    assert main(["eval", str(run), "--batch-size", "7"]) == 0
    final = json.loads((run / "run.json").read_text())["final"]["test"]["nll"]
    assert f"test  NLL {final:9.4f} nats" in capsys.readouterr().out


# ------------------------------------------------------------------ run folders
def test_out_naming_a_file_is_refused(tmp_path, capsys):
    path = tmp_path / "notes.txt"
    path.write_text("mine")
    line = refused(["train", "fvsbn", "--out", str(path), *QUIET], capsys)
    assert line == f"error: --out {path} is a file, not a run folder; give the path of a folder"
    assert path.read_text() == "mine"


def test_a_folder_holding_a_run_is_not_reused_without_resume_or_overwrite(run, capsys):
    before = snapshot(run)
    line = refused(["train", "made", "--epochs", "1", "--out", str(run), *QUIET], capsys)
    assert line.startswith(f"error: {run} already holds a run (run.json, model.npz, last.npz)")
    assert "--resume" in line and "--out" in line and "--overwrite" in line
    line = refused(["train", "fvsbn", "--resume", "--overwrite", "--out", str(run), *QUIET], capsys)
    assert "give one of them" in line
    assert snapshot(run) == before


def test_a_failed_start_keeps_the_run_resumable(run, tmp_path, capsys):
    """Failed commands into a run folder leave it as it was, and --resume then goes on from it."""
    before = snapshot(run)
    for argv in (["--lr", "nan"], ["--batch-size", "0"], [],                           # flag, folder reuse
                 ["--overwrite", "--data", str(tmp_path / "missing.npy")],             # --overwrite, bad data
                 ["--resume", "--lr", "0.5"], ["--resume", "--seed", "3"]):            # resume conflicts
        refused(["train", "fvsbn", "--epochs", "2", "--out", str(run), *QUIET, *argv], capsys)
        assert snapshot(run) == before, argv
    # the run's own values are no conflict; --epochs and --patience are the run's to extend
    assert main(["train", "fvsbn", "--resume", "--epochs", "2", "--patience", "5", "--lr", "0.03", "--seed", "0",
                 "--batch-size", "100", "--out", str(run), *QUIET]) == 0
    record = json.loads((run / "run.json").read_text())
    assert [e["epoch"] for e in record["history"]["epochs"]] == [1, 2] and record["resumed_at_epoch"] == 1
    recipe = record["settings"]["recipe"]
    assert (recipe["epochs"], recipe["patience"], recipe["lr"], recipe["batch_size"]) == (2, 5, 0.03, 100)
    assert record["final"]["test"]["nll"] > 0


@pytest.mark.filterwarnings("ignore:invalid value:RuntimeWarning")       # the NaN loss of lr 1e30
def test_overwrite_replaces_every_file_of_the_old_run(run, capsys):
    """nade, then made with a learning rate that diverges in epoch 1: eval must not score the old model."""
    assert main(["train", "made", "--overwrite", "--lr", "1e30", "--epochs", "2", "--hidden", "8",
                 "--out", str(run), *QUIET]) == 1
    assert sorted(p.name for p in run.iterdir()) == ["curve.png", "run.json", "samples.png"]
    wrote = [line for line in capsys.readouterr().out.splitlines() if line.startswith("wrote ")]
    assert len(wrote) == 1 and "model.npz" not in wrote[0] and "last.npz" not in wrote[0]    # says only what is there
    assert json.loads((run / "run.json").read_text())["model_class"] == "MADE"
    line = refused(["eval", str(run)], capsys)
    assert line.startswith(f"error: {run} holds no model.npz")
    assert main(["train", "made", "--overwrite", "--epochs", "1", "--hidden", "8", "--out", str(run), *QUIET]) == 0
    assert type(train.load(run)).__name__ == "MADE"
    capsys.readouterr()
    assert main(["eval", str(run)]) == 0
    assert capsys.readouterr().out.startswith("MADE on ")


def test_a_folder_that_mixes_two_runs_is_refused(run, tmp_path, capsys):
    np.save(tmp_path / "x.npy", (np.random.default_rng(0).random((40, 64)) < 0.5).astype(np.float32))
    other = tmp_path / "nade"
    assert main(["train", "nade", "--hidden", "4", "--epochs", "1", "--data", str(tmp_path / "x.npy"),
                 "--out", str(other), *QUIET]) == 0
    shutil.copy(other / "model.npz", run / "model.npz")
    for command in ("eval", "sample"):
        line = refused([command, str(run)], capsys)
        assert line == (f"error: {run} mixes two runs: run.json is a run of FVSBN, model.npz holds a NADE; "
                        "train into it again with --overwrite")


@pytest.mark.parametrize("content, expected", [
    ("", "is damaged or empty (JSONDecodeError"), ('{"settings": ', "is damaged or empty (JSONDecodeError"),
    ("[1, 2]", "is damaged: it has no model_class, data, settings"),
])
def test_a_damaged_run_json_is_one_line_for_eval_sample_and_resume(content, expected, run, capsys):
    (run / "run.json").write_text(content)
    before = snapshot(run)
    for argv in (["eval", str(run)], ["sample", str(run)],
                 ["train", "fvsbn", "--resume", "--epochs", "2", "--out", str(run), *QUIET]):
        line = refused(argv, capsys)
        assert line.startswith(f"error: {run / 'run.json'} {expected}"), argv
        assert snapshot(run) == before


def test_a_run_json_missing_one_setting_names_it(run, capsys):
    record = json.loads((run / "run.json").read_text())
    del record["settings"]["seed"]
    (run / "run.json").write_text(json.dumps(record))
    line = refused(["eval", str(run)], capsys)
    assert line == (f"error: {run / 'run.json'} is damaged: it has no settings.seed "
                    "(every run.json that `python -m tinyar train` writes has them)")


# ------------------------------------------------------------------ --resume
@pytest.mark.parametrize("flag, value, uses", [
    ("--lr", "0.5", "--lr 0.03"), ("--batch-size", "50", "--batch-size 100"), ("--seed", "3", "--seed 0"),
    ("--momentum", "0.5", "--momentum 0.9"), ("--clip", "1.5", "no --clip (the default)"),
    ("--order", "random", "no --order (the default)"), ("--data", "digits-binary", "--data digits"),
])
def test_resume_refuses_a_setting_other_than_the_runs(flag, value, uses, run, capsys):
    before = snapshot(run)
    line = refused(["train", "fvsbn", "--resume", "--epochs", "2", flag, value, "--out", str(run), *QUIET], capsys)
    assert line == (f"error: --resume continues the run in {run} with the settings of its run.json, which uses "
                    f"{uses}: drop {flag} {value}, or start a new run (another --out, or --overwrite)")
    assert snapshot(run) == before


# ------------------------------------------------------------------ flags a model does not use
def test_text_flags_without_text_data_are_refused(run, tmp_path, capsys):
    corpus = tmp_path / "a.txt"
    corpus.write_text("abc " * 50)
    line = refused(["train", "nade", "--text", str(corpus), "--out", str(tmp_path / "new"), *QUIET], capsys)
    assert line == (f"error: --text {corpus} applies to --data text only, and the data here is --data digits: "
                    "drop --text, or give --data text")
    line = refused(["train", "char-rnn", "--data", "digits", "--seq-len", "32", "--out", str(tmp_path / "new")],
                   capsys)
    assert line.startswith("error: --seq-len 32 applies to --data text only")
    line = refused(["eval", str(run), "--text", str(corpus)], capsys)
    assert line.startswith(f"error: --text {corpus} applies to --data text only, and the data here is the run's")
    assert not (tmp_path / "new").exists()


def test_a_prompt_for_an_image_model_is_refused(run, capsys):
    line = refused(["sample", str(run), "--prompt", "ab", "--n", "2"], capsys)
    assert line.startswith("error: FVSBN.sample does not take ['prompt']")


def test_the_seq_len_help_shows_the_models_default(capsys):
    """The char-RNN's recipe sets 100; the Transformer's has none, so data.text's default holds."""
    import inspect

    from tinyar import data
    text_default = inspect.signature(data.text).parameters["seq_len"].default
    for model, default in (("char-rnn", REGISTRY["char-rnn"].recipe["seq_len"]), ("transformer", text_default)):
        with pytest.raises(SystemExit):
            main(["train", model, "--help"])
        assert f"sequence length for --data text (default {default})" in " ".join(capsys.readouterr().out.split())
    assert REGISTRY["char-rnn"].recipe["seq_len"] != text_default


# ------------------------------------------------------------------ crashes after training
@pytest.mark.parametrize("n_dims, shape", [(64, (8, 8)), (12, (3, 4)), (10, (2, 5)), (7, (1, 7)), (1, (1, 1))])
def test_picture_shape_is_the_factor_pair_closest_to_a_square(n_dims, shape):
    assert picture_shape(n_dims) == shape


def test_a_user_array_of_any_width_trains_and_draws_its_samples(tmp_path, capsys, monkeypatch):
    """D = 10 is no square: the run ends with its metrics, and samples.png shows 2 x 5 images."""
    from tinyar import plot
    drawn = []
    draw = plot.sample_grid
    monkeypatch.setattr(plot, "sample_grid", lambda samples, shape, *a, **k: drawn.append((samples.shape, shape))
                        or draw(samples, shape, *a, **k))
    x = (np.random.default_rng(0).random((60, 10)) < 0.3).astype(np.float32)
    np.save(tmp_path / "x.npy", x)
    out = tmp_path / "run"
    assert main(["train", "fvsbn", "--data", str(tmp_path / "x.npy"), "--epochs", "1", "--n-samples", "3",
                 "--out", str(out), *QUIET]) == 0
    record = json.loads((out / "run.json").read_text())
    assert record["data"]["image_shape"] is None and record["final"]["test"]["nll"] > 0
    assert "test NLL" in capsys.readouterr().out
    assert drawn == [((3, 10), (2, 5))] and (out / "samples.png").stat().st_size > 0


def test_colour_samples_are_drawn_in_colour(tmp_path, monkeypatch):
    """(n, H W 3) rows, R, G, B at each pixel, are drawn as colour images of shape (H, W, 3)."""
    from tinyar import plot
    from tinyar.cli import write_samples
    from tinyar.models import ColourPixelCNN
    model = ColourPixelCNN(12, image_shape=(2, 2), n_levels=4, n_channels=3, n_layers=0, rng=0)
    info = {"class": "ColourPixelCNN", "kind": "categorical", "n_dims": 12, "n_levels": 4, "image_shape": [2, 2, 3]}
    write_samples(model, info, tmp_path / "real.png", n=3)
    assert (tmp_path / "real.png").read_bytes()[:4] == b"\x89PNG"

    class Counting:                                  # pixel k of row r holds R, G, B = 6 r + 3 k + (0, 1, 2)
        def sample(self, n, rng=None):
            return np.arange(n * 6).reshape(n, 6)
    drawn = []
    monkeypatch.setattr(plot, "sample_grid", lambda rows, shape, path, **k: drawn.append((rows, shape, k)))
    write_samples(Counting(), dict(info, n_dims=6, image_shape=[1, 2, 3]), tmp_path / "fake.png", n=2)
    (rows, shape, options), = drawn
    assert shape == (1, 2, 3) and rows.tolist() == [[0, 1, 2, 3, 4, 5], [6, 7, 8, 9, 10, 11]]
    assert options["vmin"] == 0.0 and options["vmax"] == 3


def test_a_colour_grid_puts_each_pixels_rgb_in_place():
    from tinyar import plot
    rows = np.arange(2 * 12).reshape(2, 12)          # two 2x2 colour images
    grid = plot.image_grid(rows, (2, 2, 3), n_cols=2, pad=1)
    assert grid.shape == (2, 5, 3)
    assert grid[0, 0].tolist() == [0, 1, 2] and grid[1, 1].tolist() == [9, 10, 11]      # image 0
    assert np.isnan(grid[:, 2]).all() and grid[0, 3].tolist() == [12, 13, 14]         # pad, image 1
    rgb = plot.colour_picture(grid, 0.0, 23.0)
    assert np.allclose(rgb[1, 4], np.array([21, 22, 23]) / 23.0)
    assert (rgb[:, 2] == rgb[0, 2]).all() and not np.isnan(rgb).any()                # padding: one colour


def test_clip_none_turns_off_a_recipes_clipping_and_resume_keeps_it(tmp_path):
    from tinyar import cli
    from tinyar.models import RNADE
    assert RNADE.recipe["clip"] == 10.0
    out = tmp_path / "run"
    cli.main(["train", "rnade", "--data", "digits", "--epochs", "1", "--clip", "none", "--out", str(out),
              "--no-progress", "--n-samples", "4"])
    assert json.loads((out / "run.json").read_text())["settings"]["recipe"]["clip"] is None
    with pytest.raises(SystemExit, match="which uses no --clip .*drop --clip 10"):
        cli.main(["train", "rnade", "--data", "digits", "--epochs", "2", "--clip", "10", "--out", str(out), "--resume"])
    cli.main(["train", "rnade", "--data", "digits", "--epochs", "2", "--clip", "none", "--out", str(out), "--resume",
              "--no-progress", "--n-samples", "4"])
    with pytest.raises(SystemExit):
        cli.main(["train", "rnade", "--clip", "-1", "--out", str(tmp_path / "other")])
