"""A deterministic teacher: ruff, with bugbear, security and correctness rules, answering an
analysis as the remote model would, so the local model's agreement with it can be measured.

Each finding becomes one issue: the flagged line's text (without its indentation) as the
snippet, so it is found in the code exactly, the rule's message as the message, and a severity
by rule. Documents are cut into the windows the server analyses (``windows.cover``, the same
token estimate as the server's), and a window's answer holds the findings on its lines.
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from ai_lsp_tune.prompts import SYSTEM_PROMPT, PromptParts
from ai_lsp_tune.schema import DiagnosticResult, Issue, Severity
from ai_lsp_tune.tokens import estimate_counter
from ai_lsp_tune.windows import Lines, Window, cover, window_prompt

# The rules the teacher applies, with the severity it gives each. Bugbear (B), bandit (S),
# pyflakes/pycodestyle correctness (F, E7) and pylint warnings (PLW): things a reviewer flags.
RULES: dict[str, Severity] = {
    "B006": "warning",  # mutable default argument
    "B007": "info",  # loop variable not used in the body
    "B012": "error",  # return/break/continue in finally swallows the exception
    "B015": "warning",  # comparison whose result is unused
    "B018": "warning",  # useless expression
    "B020": "error",  # loop variable overrides the iterable it iterates
    "B023": "error",  # closure captures a loop variable
    "B904": "info",  # raise inside except without from
    "E711": "info",  # comparison to None with ==
    "E712": "info",  # comparison to True/False with ==
    "E721": "warning",  # type comparison with ==
    "E722": "warning",  # bare except
    "F811": "warning",  # redefinition of an unused name
    "F841": "info",  # local variable assigned but never used
    "PLW0120": "warning",  # else on a loop without break
    "PLW0602": "info",  # global declared but never assigned
    "PLW0603": "info",  # global statement
    "PLW2901": "warning",  # loop variable overwritten in the body
    "S102": "error",  # exec
    "S105": "error",  # hard-coded password string
    "S108": "warning",  # hard-coded temporary file path
    "S110": "warning",  # try/except/pass
    "S112": "warning",  # try/except/continue
    "S301": "error",  # pickle loads untrusted data
    "S307": "error",  # eval
    "S324": "warning",  # insecure hash (md5, sha1)
    "S602": "error",  # subprocess with shell=True
}
# Rules a reviewer can see on the flagged line itself (or the line before it): the teacher for
# small local models, which cannot follow a name through a function (PLW2901, B007, F841 can't).
LOCAL_RULES: dict[str, Severity] = {
    "B006": "warning",  # mutable default argument
    "B009": "info",  # getattr with a constant attribute
    "B010": "info",  # setattr with a constant attribute
    "B011": "warning",  # assert False (removed by python -O)
    "B904": "info",  # raise inside except without from
    "B905": "info",  # zip() without strict=
    "E711": "info",  # comparison to None with ==
    "E712": "info",  # comparison to True/False with ==
    "E721": "warning",  # type comparison with ==
    "E722": "warning",  # bare except
    "E741": "info",  # ambiguous variable name (l, O, I)
    "S102": "error",  # exec
    "S105": "error",  # hard-coded password string
    "S110": "warning",  # try/except/pass
    "S301": "error",  # pickle loads untrusted data
    "S307": "error",  # eval
    "S311": "warning",  # random is not for cryptography
    "S324": "warning",  # insecure hash (md5, sha1)
}
SEVERITY: dict[str, Severity] = RULES | LOCAL_RULES
TEACHER_MODEL = "ruff-teacher"  # the model name the teacher's traces record


class TeacherUnavailable(RuntimeError):
    """ruff cannot be run; the message says how to get it."""


@dataclass(frozen=True)
class Finding:
    """One rule violation: 1-based line, rule code and message."""

    line: int
    code: str
    message: str


def ruff_findings(
    files: Sequence[Path], rules: Mapping[str, Severity] = RULES
) -> dict[Path, list[Finding]]:
    """The teacher's findings (``rules``) for each file (every file is a key), from one ruff run."""
    if not files:
        return {}
    command = [
        *_ruff_command(),
        "check",
        "--isolated",
        "--no-cache",
        "--exit-zero",
        "--output-format=json",
        f"--select={','.join(rules)}",
        *map(str, files),
    ]
    done = subprocess.run(command, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise TeacherUnavailable(f"ruff failed: {done.stderr.strip()[:200]}")
    found: dict[Path, list[Finding]] = {Path(f).resolve(): [] for f in files}
    for item in json.loads(done.stdout or "[]"):
        code, path = item.get("code"), Path(item["filename"]).resolve()
        if code in rules and path in found:
            found[path].append(Finding(item["location"]["row"], code, item["message"]))
    return found


def _ruff_command() -> list[str]:
    try:
        from ruff.__main__ import find_ruff_bin  # type: ignore[import-not-found]
    except ImportError:
        raise TeacherUnavailable(
            "The lint teacher needs ruff: run `uv sync` (it is a dev dependency)."
        ) from None
    return [str(find_ruff_bin())] if find_ruff_bin() else [sys.executable, "-m", "ruff"]


_RANK = {"hint": 0, "info": 1, "warning": 2, "error": 3}


def answer(findings: Sequence[Finding], lines: Lines, window: Window) -> DiagnosticResult:
    """The teacher's answer for one window: one issue per flagged line, located by its text
    (several rules on one line: their messages joined, the gravest severity)."""
    by_line: dict[int, list[Finding]] = {}
    for finding in sorted(findings, key=lambda f: (f.line, f.code)):
        if window.first <= finding.line - 1 < window.end:
            by_line.setdefault(finding.line - 1, []).append(finding)
    issues = []
    for line, found in sorted(by_line.items()):
        snippet = lines.text(line, line + 1).strip()
        if not snippet:
            continue
        severity = max((SEVERITY[f.code] for f in found), key=_RANK.__getitem__)
        message = "; ".join(f"{f.message} ({f.code})" for f in found)
        issues.append(Issue(issue_snippet=snippet, severity=severity, message=message))
    return DiagnosticResult(issues=issues)


@dataclass(frozen=True)
class TeacherAnalysis:
    """One window of a document as the server would send it, with the teacher's answer."""

    name: str
    system: str
    user: str
    answer: DiagnosticResult


def analyses(
    name: str, code: str, findings: Sequence[Finding], *, budget: int, system: str = SYSTEM_PROMPT
) -> list[TeacherAnalysis]:
    """The windows the server asks about for ``code`` (prompts of ``budget`` estimated tokens
    with ``system`` as system prompt), each answered by the teacher."""
    count = estimate_counter().count
    lines = Lines(code)
    parts = PromptParts("python", code, name)

    def cost(first: int, end: int) -> int:
        user = window_prompt(parts, lines, lines.window(first, end))
        return count([{"role": "system", "content": system}, {"role": "user", "content": user}])

    return [
        TeacherAnalysis(name, system, window_prompt(parts, lines, w), answer(findings, lines, w))
        for w in cover(lines, cost, budget, overlap=0.0)
    ]
