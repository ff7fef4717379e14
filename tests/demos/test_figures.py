"""demos/figures.py --quick: every README figure is drawn by its demo and comes out small."""
import importlib.util
from pathlib import Path

import numpy as np

SCRIPT = Path(__file__).resolve().parents[2] / "demos" / "figures.py"


def load_figures():
    spec = importlib.util.spec_from_file_location("figures_script", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_figures_quick_writes_every_figure_small(tmp_path, capsys):
    from PIL import Image
    figures = load_figures()
    result = figures.main(["--quick", "--out", str(tmp_path)])
    names = {f"{f.__name__}.png" for f in figures.FIGURES}
    assert len(names) == 7 and set(result["sizes"]) == names
    assert {p.name for p in tmp_path.glob("*.png")} == names
    for name in names:
        path = tmp_path / name
        assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        assert 1000 < path.stat().st_size < 100_000, f"{name}: {path.stat().st_size} bytes"
        with Image.open(path) as image:
            assert image.mode == "P" and image.width <= figures.MAX_WIDTH, (name, image.mode, image.size)
    with Image.open(tmp_path / "made_masks.png") as image:     # 4 panels in a row, folded into 2 x 2
        assert image.height > 0.8 * image.width
    assert "wrote 7 figures" in capsys.readouterr().out


def test_fold_cuts_at_a_blank_column_and_keeps_every_pixel():
    from PIL import Image
    figures = load_figures()
    panels = np.full((10, 40, 3), 255, np.uint8)
    panels[2:8, 2:12] = 0                                      # panel 1: columns 2-11
    panels[2:8, 16:26] = 0                                     # panel 2: columns 16-25
    panels[2:8, 29:39] = 0                                     # panel 3: columns 29-38
    folded = np.asarray(figures.fold(Image.fromarray(panels), near=0.675))
    assert folded.shape == (20, 27, 3)                         # cut at the blank column 27: two rows
    assert (folded == 0).sum() == (panels == 0).sum()          # nothing cropped away
    assert (folded[2:8, 2:12] == 0).all() and (folded[2:8, 16:26] == 0).all()
    assert (folded[12:18, 16:26] == 0).all()                   # panel 3 right-aligned, under panel 2
