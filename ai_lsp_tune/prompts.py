"""The analysis task's prompts, shared by the server (prompting) and the dataset (training),
and the one way a chat is rendered into tokens for the model (training and serving alike).

The system prompt and user prompt are the original ai-lsp tool's, word for word, so traces
recorded by the original tool and by this server train the same task.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

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

# The system prompt for a small local model (served and trained alike): a fifth of the original's
# tokens, so a CPU trains on code, not on instructions. The remote teacher keeps SYSTEM_PROMPT;
# the dataset renders every recorded analysis with this one for training a local model.
LOCAL_SYSTEM_PROMPT = (
    "You review code. Reply with JSON only: "
    '{"issues":[{"issue_snippet":"<the flagged line, copied exactly>",'
    '"severity":"info|warning|error","message":"<why>"}]}, '
    'or {"issues":[]} if nothing is wrong.'
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


def code_of(user: str) -> str:
    """The analysed code of an analysis prompt (the whole text of any other prompt)."""
    parts = parse_user_prompt(user)
    return parts.code if parts else user


# --- Rendering a chat for the model: the one rendering training and serving share -------------
def chat_messages(system: str, user: str, assistant: str | None = None) -> list[dict[str, str]]:
    """One analysis as a chat: system and user turns, and the answer when there is one."""
    messages = [{"role": "system", "content": system}, {"role": "user", "content": user}]
    if assistant is not None:
        messages.append({"role": "assistant", "content": assistant})
    return messages


def template_chat(tokenizer: Any, messages: Sequence[Mapping[str, str]]) -> list[dict[str, str]]:
    """``messages`` with the system prompt folded into the first user turn for templates
    without a system role (e.g. Gemma's)."""
    chat = [{"role": m["role"], "content": m["content"]} for m in messages]
    if len(chat) > 1 and chat[0]["role"] == "system" and not supports_system_role(tokenizer):
        system, first = chat[0], chat[1]
        chat = [
            {"role": first["role"], "content": f"{system['content']}\n\n{first['content']}"},
            *chat[2:],
        ]
    return chat


def has_chat_template(tokenizer: Any) -> bool:
    """False for a model without a chat template: it is prompted in plain text."""
    return bool(getattr(tokenizer, "chat_template", None))


def supports_system_role(tokenizer: Any) -> bool:
    """Whether the tokenizer's chat template accepts a system turn (asked once per tokenizer)."""
    cached = getattr(tokenizer, "_ai_lsp_system_role", None)
    if cached is None:
        try:
            tokenizer.apply_chat_template(
                [{"role": "system", "content": "s"}, {"role": "user", "content": "u"}],
                add_generation_prompt=True,
                return_dict=False,
            )
            cached = True
        except Exception:  # jinja raises TemplateError("System role not supported")
            cached = False
        tokenizer._ai_lsp_system_role = cached
    return bool(cached)


def render_chat(
    tokenizer: Any, messages: Sequence[Mapping[str, str]], *, add_generation_prompt: bool = True
) -> list[int]:
    """Token ids of a chat, rendered the same way for training and for serving.

    ``add_generation_prompt``: the chat ends where the model's answer starts (serving, the
    prompt part of a training example); False for a whole example, answer included. A model
    without a chat template gets the turns as plain text, and its answer ends in end-of-text.
    """
    if not has_chat_template(tokenizer):
        text = "\n\n".join(m["content"] for m in messages)
        if add_generation_prompt:
            return list(tokenizer.encode(text + "\n\n"))
        eos = getattr(tokenizer, "eos_token_id", None)
        return [*tokenizer.encode(text), *([] if eos is None else [eos])]
    chat = template_chat(tokenizer, messages)
    return list(
        tokenizer.apply_chat_template(
            chat, add_generation_prompt=add_generation_prompt, return_dict=False
        )
    )


def prompt_tokens(tokenizer: Any, system: str, user: str) -> list[int]:
    """The analysis prompt as the model host renders it: template + generation prompt."""
    return render_chat(tokenizer, chat_messages(system, user))
