"""demos/receptive_field.py --quick: the plain PixelCNN has a blind spot, the gated one none."""
import importlib.util
from pathlib import Path

DEMO = Path(__file__).resolve().parents[2] / "demos" / "receptive_field.py"


def test_receptive_field_demo_quick(tmp_path, capsys):
    spec = importlib.util.spec_from_file_location("receptive_field_demo", DEMO)
    demo = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(demo)
    out = tmp_path / "rf.png"
    stats = demo.main(["--quick", "--out", str(out)])
    assert stats["PixelCNN"] == dict(n_blind=3, future_seen=False)
    assert stats["GatedPixelCNN"] == dict(n_blind=0, future_seen=False)
    assert out.stat().st_size > 1000 and out.read_bytes()[:4] == b"\x89PNG"
    assert "3 pixels before (4, 4)" in capsys.readouterr().out
