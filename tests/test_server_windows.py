"""A document longer than the model's budget is analysed in windows (scripted remote model)."""

from __future__ import annotations

import itertools
import json
import re
from collections import Counter
from collections.abc import AsyncIterator

import pytest
import pytest_asyncio

from ai_lsp_tune.prompts import SYSTEM_PROMPT, parse_user_prompt, user_prompt
from ai_lsp_tune.tokens import estimate_counter
from tests.helpers.lsp_session import Session, start_session, stop_session
from tests.helpers.scripted_openai import (
    Answer,
    ChatRequest,
    ScriptedEndpoint,
    remote_env,
    scripted_endpoint,
)

# Both tests talk to one language server over stdio (~5 s of CPU a start here), on the
# module's event loop.
pytestmark = [pytest.mark.slow, pytest.mark.asyncio(loop_scope="module")]

MAX_INPUT, MAX_ANSWER = 4096, 1024
BUG_EVERY = 37  # function numbers with a bug: some fall where two windows overlap


def long_file() -> str:
    """3,000 lines: ``import os`` on line 1 and again in the last quarter, 1,000 small functions."""
    lines = ["import os"]
    for n in range(999):
        body = f"return x / zero_{n}" if n % BUG_EVERY == 0 else f"return x + {n}"
        lines += [f"def f{n}(x):", f"    {body}", ""]
        if n == 800:
            lines[-1] = "import os"  # the same snippet as line 1, flagged only here
    lines += ["def main():", f"    print({len(lines)})"]
    assert len(lines) == 3000
    return "\n".join(lines) + "\n"


def flag_bugs(request: ChatRequest) -> Answer:
    """The 'model': flags each ``x / zero_N`` it is shown, and ``import os`` after f800."""
    code = request.user_texts[0]
    issues = [
        {"issue_snippet": bug, "severity": "error", "message": f"{bug} divides by zero."}
        for bug in sorted(set(re.findall(r"x / zero_\d+", code)))
    ]
    if "def f801(" in code:
        issues.append({"issue_snippet": "import os", "severity": "info", "message": "Late import."})
    return Answer(json.dumps({"issues": issues}))


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def shared_session(
    tmp_path_factory: pytest.TempPathFactory,
) -> AsyncIterator[tuple[Session, ScriptedEndpoint]]:
    """One server for both tests (same settings; each opens its own file and reads the answers)."""
    root = tmp_path_factory.mktemp("windows")
    (root / "project").mkdir()
    with scripted_endpoint(flag_bugs) as endpoint:
        s = await start_session(
            root / "project",
            env=remote_env(endpoint, root / "home"),
            init_options={
                "aiLsp": {
                    "backend": "remote",
                    "remoteModel": "openai-chat:teacher",
                    "debounceMs": 0,
                    "maxInputTokens": MAX_INPUT,
                    "maxTokens": MAX_ANSWER,
                }
            },
        )
        yield s, endpoint
        await stop_session(s)


@pytest.fixture
def session(
    shared_session: tuple[Session, ScriptedEndpoint],
) -> tuple[Session, ScriptedEndpoint]:
    """The shared server, with the requests of earlier tests forgotten."""
    shared_session[1].requests.clear()
    return shared_session


async def test_a_3000_line_file_is_analysed_in_windows_and_placed_in_the_whole_file(
    session: tuple[Session, ScriptedEndpoint],
) -> None:
    s, endpoint = session
    text = long_file()
    lines = text.splitlines(keepends=True)
    uri = s.open("big.py", text)

    diagnostics = await s.wait_for_diagnostics(uri, timeout_s=60)

    # every request is a window naming the file and its lines, and fits the budget
    windows = [parse_user_prompt(r.user_texts[0]) for r in endpoint.requests]
    assert len(windows) >= 5
    count = estimate_counter().count
    for request, window in zip(endpoint.requests, windows, strict=True):
        assert window is not None and window.name == "big.py" and window.total_lines == 3000
        assert window.code == "".join(lines[window.first_line - 1 : window.last_line])
        chat = [
            {"role": "system", "content": SYSTEM_PROMPT},
            {"role": "user", "content": request.user_texts[0]},
        ]
        assert count(chat) <= MAX_INPUT - MAX_ANSWER
    shown = sorted((w.first_line, w.last_line) for w in windows if w is not None)
    assert shown[0][0] == 1 and shown[-1][1] == 3000
    assert all(b[0] <= a[1] + 1 for a, b in itertools.pairwise(shown))  # no gap
    assert any(b[0] <= a[1] for a, b in itertools.pairwise(shown))  # overlaps

    # each bug once, on its own line, though overlapping windows both reported some
    bug_lines = {
        n: i
        for i, line in enumerate(lines)
        for n in [m.group(1) for m in re.finditer(r"zero_(\d+)", line)]
    }
    reported = Counter(
        b for r in endpoint.requests for b in set(re.findall(r"zero_\d+", r.user_texts[0]))
    )
    assert max(reported.values()) == 2  # a bug in an overlap, reported by both windows
    errors = [d for d in diagnostics if "divides by zero" in d.message]
    assert sorted((d.range.start.line, d.message) for d in errors) == sorted(
        (line, f"x / zero_{n} divides by zero.") for n, line in bug_lines.items()
    )
    for d in errors:
        assert lines[d.range.start.line][d.range.start.character :].startswith("x / zero_")
    (late,) = [d for d in diagnostics if d.message == "Late import."]
    assert late.range.start.line == lines.index("import os\n", 1) > 2000  # not line 1


async def test_a_one_line_file_keeps_the_plain_prompt(
    session: tuple[Session, ScriptedEndpoint],
) -> None:
    s, endpoint = session
    uri = s.open("one.py", "y = x / zero_1\n")
    diagnostics = await s.wait_for_diagnostics(uri)
    assert [d.message for d in diagnostics] == ["x / zero_1 divides by zero."]
    (request,) = endpoint.requests
    assert request.user_texts[0] == user_prompt("python", "y = x / zero_1\n", "one.py")
