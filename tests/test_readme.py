"""The README's example must keep working: run its Python block as written."""
import re
from pathlib import Path

README = Path(__file__).resolve().parents[1] / "README.md"


def test_readme_python_example_runs_and_learns(capsys):
    code = re.search(r"```python\n(.*?)```", README.read_text(), re.S).group(1)
    namespace = {}
    exec(compile(code, "README.md", "exec"), namespace)
    test_nll = float(capsys.readouterr().out.split()[-1])
    assert 20.0 < test_nll < 40.0          # one epoch: well below uniform (64 log 2 = 44.4 nats)


def test_readme_quick_start_is_what_ci_runs():
    quick_start = re.search(r"## Quick start.*?```\n(.*?)```", README.read_text(), re.S).group(1)
    commands = [line for line in quick_start.splitlines() if line.strip()]
    assert len(commands) == 2
    ci = (README.parent / ".ci" / "run").read_text()
    for command in commands:
        assert command in ci, f"CI does not run the README's command: {command}"


def test_readme_shows_every_committed_figure():
    shown = re.findall(r"!\[[^\]]*\]\(([^)\s]+\.png)\)", README.read_text())
    committed = sorted(p.relative_to(README.parent).as_posix() for p in (README.parent / "demos" / "figures").glob("*.png"))
    assert 4 <= len(shown) <= 6
    assert sorted(shown) == committed, "README images and demos/figures/ differ (python demos/figures.py redraws them)"
