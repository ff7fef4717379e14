"""demos/colour_patches.py --quick: the three colour models learn below 8 bits/dim; the figures
its docstring states for the quick run."""
import math

import numpy as np
from PIL import Image

QUICK_BITS = {"ColourPixelCNN": 7.55, "CategoricalNADE": 7.69, "CategoricalMADE": 7.69, "histograms": 7.44}


def test_colour_patches_demo_quick(tmp_path, capsys, load_demo):
    demo = load_demo("colour_patches")
    out = tmp_path / "colour.png"
    bits = demo.main(["--quick", "--out", str(out)])
    assert set(bits) == set(QUICK_BITS)
    for name, value in bits.items():
        assert math.isfinite(value) and 4.0 < value < 8.0, (name, value)     # below a uniform guess: 8 bits
        assert abs(value - QUICK_BITS[name]) < 0.02, (name, value)            # the docstring's quick figures
    for name in QUICK_BITS:
        assert f"{QUICK_BITS[name]:.2f}" in demo.__doc__
    with Image.open(out) as image:
        pixels = np.asarray(image.convert("RGB")).reshape(-1, 3).astype(int)
    assert len(np.unique(pixels, axis=0)) > 50                              # many colours
    assert (np.abs(pixels[:, 0] - pixels[:, 2]) > 60).mean() > 0.05         # not grey: R and B differ
    printed = capsys.readouterr().out
    assert "ColourPixelCNN   test" in printed and "wrote" in printed
