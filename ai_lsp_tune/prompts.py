"""The analysis task's prompts, shared by the server (prompting) and the dataset (training).

The system prompt and user prompt are the original ai-lsp tool's, word for word, so traces
recorded by the original tool and by this server train the same task.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

# ruff: noqa: E501  (the original prompt text, verbatim)
SYSTEM_PROMPT = (
    "You are an AI code analyzer that provides semantic insights that traditional LSPs cannot detect.\n"
    "\n"
    "ONLY flag issues that require deep semantic understanding:\n"
    "- Logic errors in algorithms or business logic\n"
    "- Subtle race conditions or concurrency issues  \n"
    "- Architectural problems and design pattern violations\n"
    "- Security vulnerabilities requiring context understanding\n"
    "- Performance anti-patterns that need semantic analysis\n"
    "- Complex data flow issues\n"
    "- Domain-specific best practice violations\n"
    "- Accessibility issues requiring UX understanding\n"
    "\n"
    "DO NOT flag issues that normal LSPs handle:\n"
    "- Syntax errors\n"
    "- Basic type errors  \n"
    "- Undefined variables\n"
    "- Import issues\n"
    "- Basic formatting problems\n"
    "- Simple linting rules\n"
    "\n"
    "For each issue, provide:\n"
    '- The exact issue_snippet that has the problem (ONLY the problematic token/value, e.g. just "python" not \'command = "python"\')\n'
    "- Clear explanation of WHY this needs human attention in the message\n"
    '- Use severity: "info" for suggestions, "warning" for concerns, "error" for serious logic issues\n'
    "- When possible, provide suggested_fixes with:\n"
    "  - target_snippet: the exact code to replace (same as issue_snippet usually)\n"
    "  - replacement_snippet: the replacement code\n"
    "  - title: clear description of the fix\n"
    "\n"
    "Focus on insights that require understanding code intent and context. Keep issue_snippet to the absolute minimum - just the problematic token."
)

USER_PROMPT_TEMPLATE = (
    "Analyze this {language} code for issues:\n\n```{language}\n{code}\n```\n\nFile: {name}"
)


def user_prompt(language: str, code: str, name: str) -> str:
    """The user message for one document, exactly as the original tool phrased it."""
    return USER_PROMPT_TEMPLATE.format(language=language, code=code, name=name)


# A window of a long file: the same prompt, its File line naming the lines shown (1-based).
WINDOW_NAME_TEMPLATE = "{name} (lines {first}-{last} of {total})"
USER_PROMPT_PATTERN = re.compile(
    r"\AAnalyze this (?P<language>.*?) code for issues:\n\n```(?P=language)\n(?P<code>.*)\n```\n\n"
    r"File: (?P<name>[^\n]*?)"
    r"(?: \(lines (?P<first>[1-9][0-9]*)-(?P<last>[1-9][0-9]*) of (?P<total>[1-9][0-9]*)\))?\Z",
    re.DOTALL,
)


def window_user_prompt(
    language: str, code: str, name: str, first_line: int, last_line: int, total_lines: int
) -> str:
    """The user message for lines ``first_line``..``last_line`` (1-based) of a longer file."""
    shown = WINDOW_NAME_TEMPLATE.format(
        name=name, first=first_line, last=last_line, total=total_lines
    )
    return user_prompt(language, code, shown)


@dataclass(frozen=True)
class PromptParts:
    """What the user prompt says about the analysed document (and, for a window, which lines)."""

    language: str
    code: str
    name: str
    first_line: int | None = None  # set for a window prompt only
    last_line: int | None = None
    total_lines: int | None = None


def parse_user_prompt(user: str) -> PromptParts | None:
    """Split an analysis prompt (``user_prompt`` or ``window_user_prompt``) back into its parts."""
    match = USER_PROMPT_PATTERN.match(user)
    if match is None:
        return None
    if match["first"] is None:
        return PromptParts(match["language"], match["code"], match["name"])
    return PromptParts(
        match["language"],
        match["code"],
        match["name"],
        int(match["first"]),
        int(match["last"]),
        int(match["total"]),
    )
