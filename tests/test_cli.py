"""python -m tinyar train / sample / eval / --help, end to end with FVSBN on the digits (a few epochs)."""
import json

import numpy as np
import pytest

import tinyar
from tinyar import train
from tinyar.cli import main


def train_fvsbn(out, *extra):
    return main(["train", "fvsbn", "--data", "digits", "--epochs", "3", "--out", str(out), "--no-progress", *extra])


def epochs_of(out):
    run = json.loads((out / "run.json").read_text())
    return [{k: v for k, v in e.items() if k not in ("seconds", "examples_per_s")} for e in run["history"]["epochs"]]


def test_train_writes_a_run_folder_and_prints_the_test_nll(tmp_path, capsys):
    assert train_fvsbn(tmp_path / "run") == 0
    printed = capsys.readouterr().out
    out = tmp_path / "run"
    for name in ("model.npz", "last.npz", "run.json", "curve.png", "samples.png"):
        assert (out / name).stat().st_size > 0
    run = json.loads((out / "run.json").read_text())
    assert run["settings"]["recipe"]["epochs"] == 3 and run["settings"]["recipe"]["lr"] == 0.03
    assert run["model_class"] == "FVSBN" and run["data"]["image_shape"] == [8, 8]
    test_nll = run["final"]["test"]["nll"]
    assert 18.3 < test_nll < 64 * np.log(2)                   # 3 epochs: learning, not yet converged
    assert f"test NLL: {test_nll:.4f} nats ({run['final']['test']['bits_per_dim']:.4f} bits/dim)" in printed
    assert tinyar.load(out).config == run["config"]


def test_flags_override_the_recipe_and_model_options_reach_the_model(tmp_path):
    out = tmp_path / "run"
    assert main(["train", "fvsbn", "--epochs", "2", "--lr", "0.01", "--batch-size", "50", "--momentum", "0.5",
                 "--l1", "1e-5", "--order", "random", "--init-std", "0.1", "--seed", "3", "--out", str(out), "--no-progress"]) == 0
    run = json.loads((out / "run.json").read_text())
    recipe = run["settings"]["recipe"]
    assert (recipe["lr"], recipe["batch_size"], recipe["momentum"], recipe["l1"]) == (0.01, 50, 0.5, 1e-5)
    assert recipe["model"] == {"init_std": 0.1, "order": "random"}
    model = tinyar.load(out)
    assert model.order.tolist() != list(range(64)) and run["config"]["init_std"] == 0.1


def test_train_twice_with_the_same_seed_gives_identical_metrics(tmp_path):
    train_fvsbn(tmp_path / "a")
    train_fvsbn(tmp_path / "b")
    train_fvsbn(tmp_path / "c", "--seed", "1", "--init-std", "0.01")
    assert epochs_of(tmp_path / "a") == epochs_of(tmp_path / "b")
    assert epochs_of(tmp_path / "a") != epochs_of(tmp_path / "c")
    a, b = (json.loads((tmp_path / r / "run.json").read_text())["final"] for r in "ab")
    assert a == b


def test_resume_through_the_command_line(tmp_path):
    train_fvsbn(tmp_path / "full")
    assert main(["train", "fvsbn", "--epochs", "1", "--out", str(tmp_path / "part"), "--no-progress"]) == 0
    assert main(["train", "fvsbn", "--resume", "--epochs", "3", "--out", str(tmp_path / "part"), "--no-progress"]) == 0
    assert epochs_of(tmp_path / "part") == epochs_of(tmp_path / "full")
    full, part = (train.read_checkpoint(tmp_path / r / "last.npz")[1] for r in ("full", "part"))
    for k in full:
        np.testing.assert_array_equal(full[k], part[k])
    with pytest.raises(SystemExit, match="--resume: no run.json"):
        main(["train", "fvsbn", "--resume", "--out", str(tmp_path / "none"), "--no-progress"])


def test_resume_from_a_damaged_or_foreign_last_npz_is_a_clear_error(tmp_path):
    assert main(["train", "fvsbn", "--epochs", "1", "--out", str(tmp_path / "a"), "--no-progress"]) == 0
    assert main(["train", "fvsbn", "--epochs", "1", "--order", "random", "--out", str(tmp_path / "b"),
                 "--no-progress"]) == 0
    last = tmp_path / "a" / "last.npz"
    last.write_bytes((tmp_path / "b" / "last.npz").read_bytes())        # another FVSBN's state (random order)
    with pytest.raises(SystemExit, match="^error: .*not this FVSBN"):    # fit's ValueError, no traceback
        main(["train", "fvsbn", "--resume", "--epochs", "2", "--out", str(tmp_path / "a"), "--no-progress"])
    raw = last.read_bytes()
    last.write_bytes(raw[:len(raw) // 2])
    with pytest.raises(SystemExit, match="^error: .*truncated"):         # a CheckpointError
        main(["train", "fvsbn", "--resume", "--epochs", "2", "--out", str(tmp_path / "a"), "--no-progress"])


def test_sample_and_eval(tmp_path, capsys):
    train_fvsbn(tmp_path / "run")
    capsys.readouterr()
    png = tmp_path / "s.png"
    assert main(["sample", str(tmp_path / "run"), "--n", "9", "--png", str(png)]) == 0
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert main(["eval", str(tmp_path / "run"), "--split", "test"]) == 0
    printed = capsys.readouterr().out
    run = json.loads((tmp_path / "run" / "run.json").read_text())
    assert f"test  NLL {run['final']['test']['nll']:9.4f} nats" in printed
    assert main(["eval", str(tmp_path / "run" / "model.npz"), "--data", "digits", "--split", "all"]) == 0
    assert "valid NLL" in capsys.readouterr().out
    with pytest.raises(SystemExit, match="needs --data"):
        main(["eval", str(tmp_path / "run" / "model.npz")])
    with pytest.raises(SystemExit, match="no such run folder"):
        main(["eval", str(tmp_path / "nowhere")])


@pytest.mark.parametrize("argv, expected", [
    ([], "usage"),
    (["--help"], "train"),
    (["train", "--help"], "--batch-size"),
    (["train", "fvsbn", "--help"], "--init-std"),
    (["train", "made-categorical", "--help"], "--mask-seed"),
    (["train", "rnade", "--help"], "--components"),
    (["train", "transformer", "--help"], "--d-model"),
    (["train", "gated-pixelcnn", "--help"], "--first-kernel"),
    (["sample", "--help"], "--png"),
    (["eval", "--help"], "--split"),
    (["gradcheck", "--help"], "--ops-only"),
])
def test_help_everywhere(argv, expected, capsys):
    with pytest.raises(SystemExit) as e:
        main(argv)
    captured = capsys.readouterr()
    assert expected in captured.out + captured.err
    assert e.value.code == (2 if not argv else 0)


def test_every_model_has_its_options_and_they_name_constructor_arguments():
    import inspect

    from tinyar.cli import MODEL_OPTIONS
    from tinyar.models import REGISTRY
    assert set(MODEL_OPTIONS) == set(REGISTRY)
    for name, options in MODEL_OPTIONS.items():
        cls = REGISTRY[name]                          # the CLI builds models by cls.for_dataset(dataset, **options)
        arguments = {**inspect.signature(cls.__init__).parameters, **inspect.signature(cls.for_dataset).parameters}
        for flag, (kwarg, parse, help_text) in options.items():
            assert flag.startswith("--") and kwarg in arguments and callable(parse) and help_text, (name, flag)
    kwarg, parse, _ = MODEL_OPTIONS["made"]["--hidden"]
    assert kwarg == "n_hidden" and parse("500,500") == [500, 500] and parse("0") == []
    assert MODEL_OPTIONS["nade"]["--order-agnostic"][1]("yes") is True
    assert MODEL_OPTIONS["nade"]["--order-agnostic"][1]("0") is False
    with pytest.raises(ValueError, match="true or false"):
        MODEL_OPTIONS["nade"]["--mask-inputs"][1]("maybe")


def test_command_line_errors_are_clear(tmp_path, capsys):
    assert main(["train", "nosuchmodel"]) == 2
    assert "unknown model 'nosuchmodel'" in capsys.readouterr().err
    with pytest.raises(SystemExit, match="data file not found"):
        main(["train", "fvsbn", "--data", str(tmp_path / "missing.npy"), "--out", str(tmp_path / "r")])
    np.save(tmp_path / "levels.npy", np.random.default_rng(0).integers(0, 4, (30, 9)))
    with pytest.raises(SystemExit, match=r"Bernoulli \(binary\) model needs values in \{0, 1\}"):
        main(["train", "fvsbn", "--data", str(tmp_path / "levels.npy"), "--out", str(tmp_path / "r")])
    with pytest.raises(SystemExit, match="unknown data set"):
        main(["train", "fvsbn", "--data", "cifar", "--out", str(tmp_path / "r")])
    with pytest.raises(SystemExit):
        main(["train", "fvsbn", "--no-such-flag"])
    assert "unrecognized arguments: --no-such-flag" in capsys.readouterr().err


def test_train_on_a_user_array(tmp_path, capsys):
    x = (np.random.default_rng(0).random((40, 9)) < 0.3).astype(np.float32)
    np.save(tmp_path / "x.npy", x)
    assert main(["train", "fvsbn", "--data", str(tmp_path / "x.npy"), "--epochs", "2", "--batch-size", "8",
                 "--out", str(tmp_path / "r"), "--no-progress"]) == 0
    run = json.loads((tmp_path / "r" / "run.json").read_text())
    assert run["data"]["n_dims"] == 9 and run["data"]["image_shape"] == [3, 3]
    assert "test NLL" in capsys.readouterr().out


def test_a_killed_process_resumes_to_the_same_parameters(tmp_path):
    """SIGKILL a real `train` process after its first epoch, resume it, compare with an uninterrupted run."""
    import os
    import signal
    import subprocess
    import sys
    import time
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    env = dict(os.environ, PYTHONPATH=str(root) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    args = ["train", "fvsbn", "--epochs", "6", "--batch-size", "20", "--no-progress"]
    killed = tmp_path / "killed"
    process = subprocess.Popen([sys.executable, "-m", "tinyar", *args, "--out", str(killed)], env=env,
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        for _ in range(12000):                       # poll for at most about a minute
            if (killed / "last.npz").exists() or process.poll() is not None:
                break
            time.sleep(0.005)
        os.kill(process.pid, signal.SIGKILL)
    finally:
        process.wait()
    assert process.returncode == -signal.SIGKILL
    done = len(train.read_checkpoint(killed / "last.npz")[0]["state"]["history"]["epochs"])
    assert 1 <= done < 6
    assert main([*args, "--out", str(killed), "--resume"]) == 0
    assert main([*args, "--out", str(tmp_path / "full")]) == 0
    assert epochs_of(killed) == epochs_of(tmp_path / "full")
    full, resumed = (train.read_checkpoint(tmp_path / r / "last.npz")[1] for r in ("full", "killed"))
    for k in full:
        np.testing.assert_array_equal(full[k], resumed[k])
    assert json.loads((killed / "run.json").read_text())["resumed_at_epoch"] == done


def test_cosine_schedule_from_the_flags(tmp_path):
    out = tmp_path / "run"
    assert main(["train", "fvsbn", "--epochs", "2", "--schedule", "cosine", "--warmup", "5", "--clip", "1.0",
                 "--out", str(out), "--no-progress"]) == 0
    run = json.loads((out / "run.json").read_text())
    assert run["schedule"] == {"kind": "cosine", "total_steps": 24, "warmup_steps": 5}
    lrs = [e["lr"] for e in run["history"]["epochs"]]
    assert lrs[0] == pytest.approx(0.03 * 0.5 * (1 + np.cos(np.pi * 7 / 19)))     # after 12 steps: t = 12
    assert lrs[1] == pytest.approx(0.0, abs=1e-12)                               # the end of the cosine
    assert run["settings"]["recipe"]["clip"] == 1.0


def test_every_model_trains_by_default_on_data_it_can_score():
    from tinyar import data
    from tinyar.cli import default_data
    from tinyar.models import REGISTRY
    datasets = {}
    for name, cls in REGISTRY.items():
        key = (default_data(name), cls.data_kind)              # "digits" comes in the form the model scores
        dataset = datasets[key] = datasets.get(key) or data.from_spec(*key)
        data.check_fits(dataset, cls.for_dataset(dataset, rng=0, **cls.recipe.get("model", {})))
    assert default_data("pixelcnn-colour") == "photos" and default_data("transformer") == "text"
