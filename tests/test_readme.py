"""The README's Python snippet runs as written (with a short step budget instead of 30 s) and prints what it says."""

import re
from pathlib import Path

README = Path(__file__).resolve().parents[1] / "README.md"


def api_snippet() -> str:
    text = README.read_text()
    section = text[text.index("## The Python API"):]
    return re.search(r"```python\n(.*?)```", section, re.S).group(1)


def test_readme_api_snippet_runs_and_prints(tmp_path, capsys, monkeypatch):
    code = api_snippet()
    assert "time_budget=30" in code and '"runs/api"' in code  # the substitutions below still apply
    code = code.replace("time_budget=30", "steps=30, threads=1").replace('"runs/api"', repr(str(tmp_path / "api")))
    monkeypatch.chdir(tmp_path)
    exec(compile(code, str(README), "exec"), {})
    lines = capsys.readouterr().out.splitlines()
    printed = {line.split(":")[0]: line.split(":", 1)[1].split() for line in lines if ":" in line}
    mean, closed_form = map(float, printed["mean of x_t"][:1] + printed["mean of x_t"][-1:])
    assert abs(mean - closed_form) < 0.15  # the mean of 1,024 values of variance < 1: sd < 0.03, so 5 sd
    assert abs(float(printed["share of samples in the right half-plane"][0]) - 0.5) < 0.06  # 1,000 fair coins: 4 sd
    sw2 = [float(v) for v in printed["SW2 to fresh moons"]]
    assert len(sw2) == 2 and all(0 < v < 2 for v in sw2)  # 30 steps make a rough model; finite and in data units
