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


def test_the_demo_shows_held_out_windows_with_their_issues_before_and_after(
    tmp_path: Path,
) -> None:
    """The side-by-side view: the teacher's issues and the model's, each at its line."""
    import io
    import json

    from rich.console import Console

    from ai_lsp_tune.cli.review_demo import side_by_side
    from ai_lsp_tune.prompts import SYSTEM_PROMPT
    from ai_lsp_tune.schema import DiagnosticResult, Issue

    source = tmp_path / "tool.py"
    source.write_text(FLAWED)
    findings = ruff_findings([source])[source.resolve()]
    (window,) = analyses("pkg/tool.py", FLAWED, findings, budget=10_000)
    (tmp_path / "ds").mkdir()
    messages = [
        {"role": "system", "content": SYSTEM_PROMPT},
        {"role": "user", "content": window.user},
        {"role": "assistant", "content": window.answer.to_json()},
    ]
    (tmp_path / "ds" / "test.jsonl").write_text(json.dumps({"messages": messages}) + "\n")
    after = DiagnosticResult(
        issues=[Issue(issue_snippet="eval(text)", severity="error", message="m")]
    )

    class Scored:
        def __init__(self, answers: list[str]) -> None:
            self.answers = answers

    table = side_by_side(tmp_path / "ds", Scored(['{"issues":[]}']), Scored([after.to_json()]))
    console = Console(file=io.StringIO(), width=200)
    console.print(table)
    shown = console.file.getvalue()  # type: ignore[attr-defined]
    eval_line = FLAWED[: FLAWED.index("return eval")].count("\n") + 1
    assert "pkg/tool.py" in shown and "(no issue)" in shown
    assert f"L{eval_line} eval(text)" in shown and f"L{eval_line} return eval(text)" in shown
