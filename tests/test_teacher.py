"""The lint teacher answers the windows the server would ask about, as a remote model would."""

from __future__ import annotations

from pathlib import Path

from ai_lsp_tune.dataset.teacher import analyses, ruff_findings
from ai_lsp_tune.prompts import parse_user_prompt

FLAWED = """import subprocess


def run(command):
    try:
        subprocess.call(command, shell=True)
    except:
        pass


def evaluate(text):
    return eval(text)
"""


def test_each_finding_is_an_issue_whose_snippet_is_the_flagged_line(tmp_path: Path) -> None:
    source = tmp_path / "tool.py"
    source.write_text(FLAWED)
    findings = ruff_findings([source])[source.resolve()]
    (whole,) = analyses("tool.py", FLAWED, findings, budget=10_000)
    snippets = {i.issue_snippet: i for i in whole.answer.issues}
    assert "subprocess.call(command, shell=True)" in snippets
    # Two rules flag the bare except: one issue for the line, both reasons in its message.
    assert len(whole.answer.issues) == 3
    assert snippets["except:"].severity == "warning"
    assert "(E722)" in snippets["except:"].message and "(S110)" in snippets["except:"].message
    assert snippets["return eval(text)"].severity == "error"
    assert all(s in FLAWED for s in snippets)  # the model can find each one in its prompt


def test_a_long_file_is_answered_window_by_window(tmp_path: Path) -> None:
    code = "\n\n".join(f"def f{i}(x):\n    y = {i}\n    return x + y" for i in range(60))
    code += "\n\n\ndef bad(text):\n    return eval(text)\n"
    source = tmp_path / "long.py"
    source.write_text(code)
    windows = analyses("long.py", code, ruff_findings([source])[source.resolve()], budget=700)
    assert len(windows) > 2
    flagged = [w for w in windows if w.answer.issues]
    assert len(flagged) == 1 and "eval" in flagged[0].answer.issues[0].issue_snippet
    parts = parse_user_prompt(flagged[0].user)
    assert parts is not None and parts.last_line == parts.total_lines  # the file's last window
    assert "return eval(text)" in parts.code
