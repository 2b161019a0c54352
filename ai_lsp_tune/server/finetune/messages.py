"""What the user reads about a fine-tune: the started line, the status line, the follow-ups.

A follow-up is a message request shown when a run ends (the swap's summary with "Roll back",
the gate's refusal with "Use it anyway"); the user may answer it much later, so the run never
waits for it, and the action picked runs then with its outcome shown, not raised.
"""

from __future__ import annotations

import asyncio
import logging
import re
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any

from lsprotocol import types as lsp

from ai_lsp_tune.server import commands
from ai_lsp_tune.server.finetune.context import EditorLink
from ai_lsp_tune.server.finetune.model_list import short_path
from ai_lsp_tune.server.finetune.progress import describe_change
from ai_lsp_tune.server.finetune.states import JobState, RunRecord
from ai_lsp_tune.server.jsonrpc import MessageAction

logger = logging.getLogger(__name__)

TITLE = "Fine-tune on my traces"
# Each action's title, and its id (the command it amounts to): editors act on the id.
ROLL_BACK = MessageAction(title="Roll back", id=commands.MODEL_ROLLBACK)
USE_ANYWAY = MessageAction(title="Use it anyway", id=commands.MODEL_USE)


def test_examples(count: int) -> str:
    return f"{count} test example" if count == 1 else f"{count} test examples"


def started_message(record: RunRecord, *, resumed: bool, fresh_because: str | None) -> str:
    """The reply to ``ai-lsp.finetune``: which run, from which model; why it did not resume
    comes first (a toast shows the start of a long line)."""
    run = f"fine-tune {record.run_id} from {short_path(record.base_model)}; progress follows"
    if fresh_because:
        return f"{fresh_because[:1].upper()}{fresh_because[1:]}, so starting fresh: {run}"
    return f"{'Resuming' if resumed else 'Started'} {run}"


def status_line(
    record: RunRecord | None,
    active: bool,
    progress: str | None,
    serving: str | None,
    name_of: Callable[[str | None], str] = short_path,
    starts_fresh: str | None = None,
) -> str:
    """The ``message`` of ``ai-lsp.finetune.status``: the run, then what serves (by name). A
    run's end state is said as it stands now: a model rolled back since no longer serves, a
    checkpoint whose settings changed since (``starts_fresh``: how) is not resumed."""
    now = f"serving {name_of(serving)}" if serving else "no local model serving"
    if record is None:
        return f"No fine-tune yet; {now}"
    if active:
        return f"Fine-tune {record.run_id}: {progress or record.state.value}; {now}"
    what = re.sub(r"^\d+% · ", "", record.summary or record.reason or record.state.value)
    if record.swapped and record.candidate_model and record.candidate_model != serving:
        # Its summary said "now serving the fine-tuned model": no longer true after a rollback
        what = f"its model {name_of(record.candidate_model)} no longer serves"
    elif starts_fresh and record.state == JobState.CANCELLED and record.resumable:
        what = f"the next run starts fresh, as {starts_fresh}"
    return f"Last fine-tune {record.run_id} {record.state.value}: {what}; {now}"


def deciding_metric(after: dict[str, Any] | None) -> str:
    """``issue F1 0.35 (change -0.05, 95% CI -0.12..+0.02)``: what the gate compares."""
    after = after or {}
    f1 = after.get("issue_f1")
    if f1 is None:
        return "no issue F1 measured"
    text = f"issue F1 {f1:.2f}"
    low, high = after.get("f1_difference_low"), after.get("f1_difference_high")
    if low is not None and high is not None:
        diff = after.get("f1_difference")
        shown = f"change {diff:+.2f}, " if diff is not None else ""
        text += f" ({shown}95% CI {low:+.2f}..{high:+.2f})"
    return text


class FollowUps:
    """The messages shown after a run, and the action the user picks in one."""

    def __init__(
        self,
        ls: EditorLink,
        show_message_request: Callable[[lsp.ShowMessageRequestParams], Awaitable[Any]],
    ) -> None:
        self._ls = ls
        self._show_message_request = show_message_request
        self._tasks: set[asyncio.Task[None]] = set()

    def after_swap(
        self,
        before: dict[str, Any] | None,
        after: dict[str, Any] | None,
        rollback: Callable[[], Coroutine[Any, Any, str]],
    ) -> None:
        """Tell the user what changed, with a "Roll back" action (answered whenever they like)."""
        text = f"Fine-tuned model now serving. {describe_change(before, after)}"
        self._later(self._offer(lsp.MessageType.Info, text, ROLL_BACK, rollback, log=True))

    def after_rejection(
        self,
        why: str,
        record: RunRecord,
        use_anyway: Callable[[], Coroutine[Any, Any, str]],
    ) -> None:
        """The gate kept the old model; the user may still choose the new one. One line with
        the metric that decided; every metric in the log."""
        more = (
            " More test data comes from more traces: keep using the editor with telemetry on, "
            "or add aiLsp.finetune.extraTraces."
            if "test example" in why
            else ""
        )
        change = describe_change(record.metrics_before, record.metrics_after)
        self._ls.window_log_message(
            lsp.LogMessageParams(
                type=lsp.MessageType.Info,
                message=f"The fine-tuned model was not swapped in: {why} (set "
                f"aiLsp.finetune.force to swap anyway). {change}.{more}",
            )
        )
        text = f"Not swapped in: {why}; {deciding_metric(record.metrics_after)}"
        self._later(self._offer(lsp.MessageType.Warning, text, USE_ANYWAY, use_anyway))

    def _later(self, coro: Coroutine[Any, Any, None]) -> None:
        task = asyncio.create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _offer(
        self,
        kind: lsp.MessageType,
        text: str,
        action: MessageAction,
        run: Callable[[], Coroutine[Any, Any, str]],
        *,
        log: bool = False,
    ) -> None:
        """Show ``text`` with one action; when the user picks it, run it and show its outcome."""
        if log:  # the swap's summary stays in VS Code's output channel and Neovim's log
            message = lsp.LogMessageParams(type=lsp.MessageType.Info, message=text)
            self._ls.window_log_message(message)
        params = lsp.ShowMessageRequestParams(type=kind, message=text, actions=[action])
        try:
            choice = await self._show_message_request(params)
        except Exception as exc:
            logger.info("message request not answered: %s", exc)
            return
        if getattr(choice, "title", None) != action.title:
            return
        try:
            done = await run()
        except Exception as exc:
            logger.warning("action failed: %s", exc)
            self._ls.window_show_message(
                lsp.ShowMessageParams(type=lsp.MessageType.Error, message=f"ai-lsp: {exc}")
            )
            return
        if done:
            self._ls.window_show_message(
                lsp.ShowMessageParams(type=lsp.MessageType.Info, message=done)
            )
