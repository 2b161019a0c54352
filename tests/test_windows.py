"""Windows of long files: cropped training examples and serving windows (property tests)."""

from __future__ import annotations

import itertools
import json
import re
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ai_lsp_tune.dataset.crop import answer_json, crop_example
from ai_lsp_tune.prompts import (
    SYSTEM_PROMPT,
    parse_user_prompt,
    user_prompt,
    window_user_prompt,
)
from ai_lsp_tune.prompts import (
    chat_messages as chat,
)
from ai_lsp_tune.tokens import estimate_counter
from ai_lsp_tune.traces import genai
from ai_lsp_tune.traces.agent_runs import agent_run_from_span
from ai_lsp_tune.traces.otlp import Span
from ai_lsp_tune.windows import Lines, cover, window_prompt

COUNT = estimate_counter().count
LINE_SPLIT = re.compile(r"[^\r\n]*(?:\r\n|\r|\n)|[^\r\n]+\Z")  # LSP's line ends only


def split_lines(code: str) -> list[str]:
    return LINE_SPLIT.findall(code) or [""]


LINE = st.one_of(
    st.just(""),
    st.from_regex(r"(def|class) [a-z]{1,8}\(\):", fullmatch=True),
    st.from_regex(r"    [a-z_]{1,12} = [a-z0-9 +*/()]{1,40}", fullmatch=True),
    st.from_regex(r"[a-z_]{1,10} = [a-z0-9 ]{1,30}", fullmatch=True),
    st.from_regex(r"\s*# [ -~]{0,60}", fullmatch=True),
)


@st.composite
def examples(draw: Any) -> tuple[str, dict[str, Any], int]:
    """Code of many lines, issues whose snippets are pieces of it, and a token limit."""
    block = draw(st.lists(LINE, min_size=1, max_size=60))
    repeats = draw(st.integers(1, 80))  # long files cheaply; numbered, so snippets can differ
    lines = [f"{line}  #{n}" if line else line for n in range(repeats) for line in block]
    code = "\n".join(lines) + draw(st.sampled_from(["\n", ""]))
    issues = []
    for _ in range(draw(st.integers(0, 8))):
        line = draw(st.sampled_from(lines))
        if line.strip():
            start = draw(st.integers(0, len(line) - 1))
            end = draw(st.sampled_from([len(line), draw(st.integers(start + 1, len(line)))]))
            snippet = line[start:end]
            if snippet.strip():
                issues.append({"issue_snippet": snippet, "severity": "warning", "message": "m"})
    limit = draw(st.integers(650, 1400))  # the system prompt alone is about 600
    return code, {"issues": issues}, limit


def pydantic_ai_span(system: str, user: str, answer: str) -> Span:
    """How the original tool (pydantic-ai 0.x) recorded an analysis."""
    events = [{"role": "system", "content": system}, {"role": "user", "content": user}]
    attributes = {"all_messages_events": json.dumps(events), "final_result": answer}
    return Span("agent run", "1" * 32, "2" * 16, "", 1, 2, attributes, 0, "", "pydantic-ai",
                "0.4.0", "t:1")  # fmt: skip


def server_span(system: str, user: str, answer: str) -> Span:
    """How this server records an analysis of a window."""
    record = genai.AnalysisRecord(
        model="m", provider="mlx", system=system, user=user, output=answer, valid=True,
        document_uri="file:///p/a.py", language="python", document_name="a.py",
    )  # fmt: skip
    attributes = genai.analysis_attributes(record)
    return Span(genai.ANALYSIS_SPAN_NAME, "1" * 32, "3" * 16, "", 1, 2, attributes, 0, "",
                genai.INSTRUMENTATION_SCOPE, "", "t:2")  # fmt: skip


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(examples())
def test_every_cropped_example_holds_its_snippets_fits_and_reads_back(
    example: tuple[str, dict[str, Any], int],
) -> None:
    code, result, limit = example
    user = user_prompt("python", code, "a.py")
    crops = crop_example(SYSTEM_PROMPT, user, result, COUNT, limit)
    snippets = [i["issue_snippet"] for i in result["issues"]]
    if crops is None:  # only when the lines of one snippet cannot fit, with their answer
        lines = Lines(code)
        parts = parse_user_prompt(user)
        assert parts is not None
        alone = []
        for snippet in snippets:
            window = lines.window(*lines.snippet_span(snippet))  # type: ignore[misc]
            held = [i for i in result["issues"] if i["issue_snippet"] in window.code]
            prompt = window_prompt(parts, lines, window)
            alone.append(COUNT(chat(SYSTEM_PROMPT, prompt, answer_json({"issues": held}))))
        assert max(alone, default=limit + 1) > limit
        return
    assert crops
    held_anywhere = set()
    for crop in crops:
        assert crop.tokens == COUNT(chat(SYSTEM_PROMPT, crop.user, crop.assistant)) <= limit
        parts = parse_user_prompt(crop.user)
        assert parts is not None and parts.name == "a.py" and parts.language == "python"
        assert parts.first_line is not None and parts.last_line is not None
        whole = split_lines(code)
        assert parts.code == "".join(whole[parts.first_line - 1 : parts.last_line])
        assert parts.total_lines == len(whole)
        assert json.loads(crop.assistant) == crop.result  # the answer is whole
        for issue in crop.result["issues"]:
            assert issue["issue_snippet"] in parts.code
            assert issue in result["issues"]
        held_anywhere |= {i["issue_snippet"] for i in crop.result["issues"]}
        for span in (pydantic_ai_span(SYSTEM_PROMPT, crop.user, crop.assistant),
                     server_span(SYSTEM_PROMPT, crop.user, crop.assistant)):  # fmt: skip
            run = agent_run_from_span(span)
            assert run is not None and run.user == crop.user and run.output == crop.assistant
            assert run.document_name == "a.py"  # the bare name, not the line range
    assert held_anywhere == set(snippets)  # every issue is in some window
    if not snippets:
        assert len(crops) == 1 and crops[0].user.endswith(f" of {len(split_lines(code))})")


@settings(max_examples=100, deadline=None)
@given(st.lists(LINE, min_size=1, max_size=600), st.integers(700, 3000))
def test_serving_windows_cover_every_line_and_fit(lines_: list[str], budget: int) -> None:
    code = "\n".join(lines_) + "\n"
    lines = Lines(code)
    parts = parse_user_prompt(user_prompt("python", code, "b.py"))
    assert parts is not None

    def cost(first: int, end: int) -> int:
        prompt = window_prompt(parts, lines, lines.window(first, end))
        return COUNT(
            [{"role": "system", "content": SYSTEM_PROMPT}, {"role": "user", "content": prompt}]
        )

    windows = cover(lines, cost, budget)
    assert windows[0].first == 0 and windows[-1].end == lines.count
    for before, after in itertools.pairwise(windows):
        assert before.first < after.first <= before.end < after.end  # ordered, no gap
    for window in windows:
        assert window.end - window.first == 1 or cost(window.first, window.end) <= budget
        assert code[window.start_offset : window.end_offset] == window.code


def test_a_recorded_window_is_cropped_in_the_whole_files_line_numbers() -> None:
    code = "".join(f"def f{n}(x):\n    return x + {n}\n\n" for n in range(100, 400))
    user = window_user_prompt("python", code, "big.py", 301, 1200, 3000)
    result = {"issues": [{"issue_snippet": "x + 399", "severity": "info", "message": "m"}]}
    (crop,) = crop_example(SYSTEM_PROMPT, user, result, COUNT, 1000) or []
    parts = parse_user_prompt(crop.user)
    assert parts is not None and parts.name == "big.py" and parts.total_lines == 3000
    assert parts.last_line == 1200 and 301 < parts.first_line < 1200
    assert parts.code.startswith("def f") and "x + 399" in parts.code
