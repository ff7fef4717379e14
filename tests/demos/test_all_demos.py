"""Every script in demos/ runs in its --quick mode, exits 0 and writes at least one PNG.

The scripts are found with a glob, so a new demo is covered without touching this file.
A demo with a test of its own (tests/demos/test_<demo>.py, which runs it --quick and checks
its figures and numbers) is left to that test, so that no demo runs twice.
Each runs in a subprocess whose working directory is its own empty temporary folder
(every demo writes its pictures under the current directory by default), two at a time
(the machine has two cores), with TINYAR on the path.
"""
import os
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
OWN_TEST = {p.stem[len("test_"):] for p in Path(__file__).parent.glob("test_*.py")}
DEMOS = sorted(p for p in (ROOT / "demos").glob("*.py") if p.stem not in OWN_TEST)
TIMEOUT = 120                                   # seconds per demo; the quick modes take 1-15 s


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """{demo name: (return code, output, PNG files written)} for every demo, run --quick."""
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])),
               MPLBACKEND="Agg")

    def run(path):
        folder = tmp_path_factory.mktemp(path.stem)
        try:
            proc = subprocess.run([sys.executable, str(path), "--quick"], cwd=folder, env=env, capture_output=True,
                                  text=True, timeout=TIMEOUT)
            code, output = proc.returncode, proc.stdout + proc.stderr
        except subprocess.TimeoutExpired as e:
            code, output = "timeout", f"no exit after {TIMEOUT} s\n{e.stdout or ''}{e.stderr or ''}"
        pngs = [p for p in folder.rglob("*.png") if p.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"]
        return path.stem, (code, output, pngs)

    with ThreadPoolExecutor(max_workers=2) as pool:
        return dict(pool.map(run, DEMOS))


def test_the_glob_finds_the_demos():
    names = {p.stem for p in DEMOS}
    assert {"fvsbn_chain_rule", "nade_caching", "made_masks", "mle_is_kl", "completion"} <= names | OWN_TEST
    assert not names & OWN_TEST                          # a demo with its own test runs there only
    assert "adversarial_detection" in OWN_TEST and "adversarial_detection" not in names   # run once, by its test


@pytest.mark.parametrize("demo", [p.stem for p in DEMOS])
def test_demo_quick_runs_and_writes_a_png(runs, demo):
    code, output, pngs = runs[demo]
    assert code == 0, f"demos/{demo}.py --quick failed ({code}):\n{output[-3000:]}"
    assert pngs, f"demos/{demo}.py --quick wrote no PNG under its working directory:\n{output[-1500:]}"
