"""demos/adversarial_detection.py --quick: the detection figures have the expected shape."""
import importlib.util
from pathlib import Path

DEMO = Path(__file__).resolve().parents[2] / "demos" / "adversarial_detection.py"


def test_adversarial_detection_demo_quick(tmp_path, capsys):
    spec = importlib.util.spec_from_file_location("adversarial_detection_demo", DEMO)
    demo = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(demo)
    results = demo.main(["--quick", "--out-dir", str(tmp_path)])
    binary = results["binary"]
    assert set(binary["auroc"]["noise"]) == {"FVSBN", "NADE", "MADE"}
    assert min(binary["auroc"]["noise"].values()) > 0.95               # noise is easy to flag
    assert binary["adv_acc"] < binary["clean_acc"] - 0.5              # the attack works
    for name, row in binary["purification"].items():
        assert 0.0 <= row["adversarial_purified"] <= 1.0 and row["mean_changed"] <= 3
    for name, row in binary["caveat"]["average"].items():           # the caveat: the average digit is "normal"
        assert row[2] < 0.5 and row[1] == 1.0
    assert results["levels"]["auroc"]["noise"]["CategoricalNADE"] > 0.95
    assert results["continuous"]["adv_acc"] < results["continuous"]["clean_acc"]
    assert results["likely_ood"]
    for png in ("roc_binary.png", "roc_levels_continuous.png", "examples.png"):
        assert (tmp_path / png).read_bytes()[:4] == b"\x89PNG"
    out = capsys.readouterr().out
    assert "AUROC of clean test images" in out and "Scored as MORE likely than the digits" in out
