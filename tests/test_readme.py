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
    assert 4 <= len(shown) <= 8
    assert sorted(shown) == committed, "README images and demos/figures/ differ (python demos/figures.py redraws them)"


def test_tour_links_point_at_the_lines_they_name():
    """Every [text](path#LN) link: the file has line N, and a name in backticks in the text
    (`sigmoid`, `Tensor._make`, `choose("nade")`) is on that line; "path:N" texts say N."""
    links = re.findall(r"\[([^\]]+)\]\(([^)#\s]+)#L(\d+)\)", README.read_text())
    assert len(links) >= 10
    for text, path, n in links:
        lines = (README.parent / path).read_text().splitlines()
        n = int(n)
        assert 1 <= n <= len(lines), f"{path} has no line {n}"
        for quoted in re.findall(r"`([^`]+)`", text):
            where = re.fullmatch(r"([\w/.]+\.py):(\d+)", quoted)
            if where:
                assert where.group(1) == path and int(where.group(2)) == n, f"link text {quoted} vs {path}#L{n}"
                continue
            name = re.split(r"[.(]", quoted.replace("Tensor.", ""))[0]
            if quoted.endswith(".py") or "/" in quoted:
                continue
            assert name in lines[n - 1], f"README link '{text}': '{name}' is not on {path}:{n}: {lines[n - 1]!r}"
