"""load_demo: a demo script imported as a module, so that a test can call its main()."""
import importlib.util
from pathlib import Path

import pytest

DEMOS = Path(__file__).resolve().parents[2] / "demos"


@pytest.fixture
def load_demo():
    def load(name):
        spec = importlib.util.spec_from_file_location(f"{name}_demo", DEMOS / f"{name}.py")
        demo = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(demo)
        return demo
    return load
