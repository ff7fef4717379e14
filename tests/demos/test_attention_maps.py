"""demos/attention_maps.py --quick: trains, draws causal attention maps, prints the cost table."""
import importlib.util
from pathlib import Path

import numpy as np

DEMO = Path(__file__).resolve().parents[2] / "demos" / "attention_maps.py"


def test_attention_maps_demo_quick(tmp_path, capsys):
    spec = importlib.util.spec_from_file_location("attention_maps_demo", DEMO)
    demo = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(demo)
    out = tmp_path / "maps.png"
    stats = demo.main(["--quick", "--out", str(out)])
    assert out.stat().st_size > 1000 and out.read_bytes()[:4] == b"\x89PNG"
    assert 20.0 < stats["test_nll"] < 64 * np.log(2)              # learned something in one epoch
    maps = stats["maps"]
    assert len(maps) == 2 and maps[0].shape == (3, 4, 64, 64)
    for P in maps:                                                 # causal rows that sum to one
        assert np.all(np.triu(P, 1) == 0.0)
        np.testing.assert_allclose(P.sum(axis=-1), 1.0, atol=1e-5)
    cost = {row[0]: row for row in stats["cost"]}
    assert cost[64][1] == 2 * 64 * 64 * 32 and cost[4096][4] == 256.0   # MACs, MB of P at 64x64
    assert cost[4096][3] > 0.9 > cost[64][3]                       # attention dominates only for big images
    printed = capsys.readouterr().out
    assert "test NLL" in printed and "4096" in printed and "64x64" in printed
