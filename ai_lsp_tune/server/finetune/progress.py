"""A fine-tune run's progress as the user sees it: one monotone percentage, one readable line.

The run has stages of very different lengths (dataset preparation, the training worker's
loading / training / evaluating / fusing phases, then the gate and the hot swap). ``ProgressMeter``
maps them onto 0..100 so the bar only ever moves forward; ``format_progress`` writes the line,
percentage first, because VS Code shows server progress only as a status-bar spinner + text.
``ProgressChannel`` sends it: ``$/progress`` when the client supports work-done progress, else
``window/showMessage`` at the edges and ``window/logMessage`` in between. Beside the line, each
``$/progress`` value carries the same facts as fields (``aiLsp``: ``progress_fields``), so an
editor shows them without reading numbers back out of the text.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import time
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass
from typing import Any, cast

from lsprotocol import types as lsp

from ai_lsp_tune.server.finetune.context import EditorLink
from ai_lsp_tune.training.evaluate import METRIC_LABELS, format_metric
from ai_lsp_tune.training.protocol import PHASES, at
from ai_lsp_tune.training.readout import training_readout

logger = logging.getLogger(__name__)

# Share of the whole run given to each stage; the worker's own ``fraction`` fills its band.
PREPARE_BAND = (0.0, 5.0)
WORKER_BAND = (5.0, 90.0)
SWAP_BAND = (90.0, 99.0)


@dataclass
class ProgressStep:
    """What the worker (or the job itself) says about where a run stands."""

    phase: str
    iteration: int | None = None
    total: int | None = None
    train_loss: float | None = None
    val_loss: float | None = None
    tokens_per_sec: float | None = None
    eta_s: float | None = None
    fraction: float | None = None  # 0..1 of the worker's whole run, when it knows
    note: str | None = None  # free text, e.g. "412 examples"


class ProgressMeter:
    """Turns stage fractions into one percentage over the whole run that never goes back."""

    def __init__(self) -> None:
        self.percentage = 0
        self._trained = False  # an evaluation after training is of the new model

    def _advance(self, band: tuple[float, float], fraction: float) -> int:
        low, high = band
        fraction = min(max(fraction, 0.0), 1.0)
        value = math.floor(low + (high - low) * fraction)
        self.percentage = max(self.percentage, min(value, 99))
        return self.percentage

    def preparing(self, fraction: float = 0.0) -> int:
        """Dataset preparation, 0..1."""
        return self._advance(PREPARE_BAND, fraction)

    def worker(self, step: ProgressStep) -> int:
        """A training-worker event: its overall fraction, or its phase band and iteration."""
        if step.fraction is not None:
            return self._advance(WORKER_BAND, step.fraction)
        # No overall fraction: place the step in its phase's band of the worker's run.
        self._trained = self._trained or step.phase == "training"
        phase = step.phase
        if phase == "evaluating":
            phase = "after" if self._trained else "before"
        if phase not in PHASES:
            return self.percentage
        inner = step.iteration / step.total if step.iteration is not None and step.total else 0.0
        return self._advance(WORKER_BAND, at(phase, inner))

    def swapping(self, fraction: float = 0.0) -> int:
        """The gate decision and the hot swap."""
        return self._advance(SWAP_BAND, fraction)

    def finish(self) -> int:
        """A successful run ends at 100; failures keep the last value."""
        self.percentage = 100
        return self.percentage


def format_progress(percentage: int, step: ProgressStep) -> str:
    """``42% · training 20/60 · loss 0.84 · 1.2k tok/s · ETA 3 min``."""
    phase = step.phase
    if step.iteration is not None and step.total:
        phase = f"{phase} {step.iteration}/{step.total}"
    parts = [f"{percentage}%", phase]
    if step.note:
        parts.append(step.note)
    parts += training_readout(
        train_loss=step.train_loss,
        val_loss=step.val_loss,
        tokens_per_sec=step.tokens_per_sec,
        eta_s=step.eta_s if step.phase == "training" else None,
        iteration=step.iteration,
        total=step.total,
    )
    return " · ".join(parts)


def progress_fields(
    percentage: int, step: ProgressStep, message: str, **more: object
) -> dict[str, Any]:
    """The structured side of a progress value (``value.aiLsp``, camelCase, unset fields left
    out): phase, percent, step, totalSteps, loss, valLoss, tokensPerSecond, etaSeconds, note,
    the human ``message``, and at the end ``outcome``."""
    fields = {
        "phase": step.phase,
        "percent": percentage,
        "step": step.iteration if step.total else None,
        "totalSteps": step.total,
        "loss": step.train_loss,
        "valLoss": step.val_loss,
        "tokensPerSecond": step.tokens_per_sec,
        "etaSeconds": step.eta_s if step.phase == "training" else None,
        "note": step.note,
        **more,
        "message": message,
    }
    return {key: value for key, value in fields.items() if value is not None}


def _with_fields(value: Any, fields: dict[str, Any] | None) -> Any:
    """A standard ``$/progress`` value with our fields beside its own as ``aiLsp`` (clients
    that do not know it ignore it). pygls types the value as its attrs class; the wire's value
    is any object, so ours goes as the dict the converter would write, plus ``aiLsp``."""
    if fields is None:
        return value
    wire = {"kind": value.kind, "title": getattr(value, "title", None), "message": value.message,
            "percentage": getattr(value, "percentage", None),
            "cancellable": getattr(value, "cancellable", None)}  # fmt: skip
    return cast(Any, {k: v for k, v in wire.items() if v is not None} | {"aiLsp": fields})


class ProgressChannel:
    """One run's progress on the wire, with a fallback for clients without work-done progress.

    A refused token (the client answers ``window/workDoneProgress/create`` with an error) is
    logged and the run goes on, reporting through log messages instead.
    """

    # Reports in between are coalesced: the latest goes out when the interval ends (a burst's
    # last report, e.g. a phase's outcome, is never lost); phase changes always go out at once.
    MIN_INTERVAL_S = 0.2
    CREATE_TIMEOUT_S = 10.0  # then progress goes on; a late refusal falls back to messages

    def __init__(
        self, ls: EditorLink, token: str, title: str, on_cancel: Callable[[], object] | None = None
    ) -> None:
        self._ls = ls
        self.token = token
        self._title = title
        self._on_cancel = on_cancel
        self.uses_work_done_progress = False
        self._last_sent = 0.0
        self._last_phase: str | None = None
        self._last_message: str | None = None
        self._ended = False
        self._last_logged_decile = 0
        # The latest coalesced report: percentage, message, phase, cancellable, fields
        self._held: tuple[int, str, str, bool, dict[str, Any] | None] | None = None
        self._flush: asyncio.TimerHandle | None = None

    def _client_supports_progress(self) -> bool:
        caps = getattr(self._ls, "client_capabilities", None)
        window = getattr(caps, "window", None)
        return bool(getattr(window, "work_done_progress", False))

    async def begin(self, message: str, *, fields: dict[str, Any] | None = None) -> None:
        """Create the token and send ``begin``; fall back to messages when that is not possible."""
        if self._client_supports_progress():
            create = asyncio.ensure_future(self._ls.work_done_progress.create_async(self.token))
            try:
                await asyncio.wait_for(asyncio.shield(create), self.CREATE_TIMEOUT_S)
            except TimeoutError:
                # A busy client (Neovim at a "Press ENTER" prompt) answers later, and handles
                # the progress sent meanwhile after that answer: the run keeps its progress.
                logger.info("no answer yet to progress token %s; progress goes on", self.token)
                create.add_done_callback(self._created_late)
                self.uses_work_done_progress = True
            except Exception as exc:  # the client may refuse: tolerated, logged
                logger.warning("client refused progress token %s: %s", self.token, exc)
                self._log(f"{self._title}: progress bar unavailable ({exc}); updates follow here")
            else:
                self.uses_work_done_progress = True
        if self.uses_work_done_progress:
            self._watch_cancel()
            self._ls.work_done_progress.begin(
                self.token,
                _with_fields(
                    lsp.WorkDoneProgressBegin(
                        title=self._title, message=message, percentage=0, cancellable=True
                    ),
                    fields,
                ),
            )
        else:
            self._show(f"{self._title}: {message}", lsp.MessageType.Info)
        self._last_sent = time.monotonic()
        self._last_message = message

    def _watch_cancel(self) -> None:
        future = self._ls.work_done_progress.tokens.get(self.token)
        if future is not None and self._on_cancel is not None:
            future.add_done_callback(self._cancelled_by_client)

    def _created_late(self, create: asyncio.Future[Any]) -> None:
        """The client answered the create request after we went on: a refusal now falls back
        to log messages; an acceptance registered a new cancel future, watched from now on."""
        if create.cancelled():
            return
        exc = create.exception()
        if exc is not None:
            logger.warning("client refused progress token %s: %s", self.token, exc or "no reason")
            self.uses_work_done_progress = False
        elif self._ended:
            self._ls.work_done_progress.tokens.pop(self.token, None)
        else:
            self._watch_cancel()

    def _cancelled_by_client(self, future: Future[Any]) -> None:
        if future.cancelled() and not self._ended and self._on_cancel is not None:
            logger.info("client cancelled progress %s", self.token)
            self._on_cancel()

    def report(
        self,
        percentage: int,
        message: str,
        *,
        phase: str,
        cancellable: bool = True,
        fields: dict[str, Any] | None = None,
    ) -> None:
        """Send a report, coalescing bursts (the worker may emit many events a second)."""
        if self._ended or message == self._last_message:
            return
        now = time.monotonic()
        phase_changed = phase != self._last_phase
        if not phase_changed and now - self._last_sent < self.MIN_INTERVAL_S:
            self._held = (percentage, message, phase, cancellable, fields)
            if self._flush is None:
                delay = self.MIN_INTERVAL_S - (now - self._last_sent)
                with contextlib.suppress(RuntimeError):  # no loop (a unit test): dropped
                    self._flush = asyncio.get_running_loop().call_later(delay, self._send_held)
            return
        self._held = None
        self._last_sent, self._last_phase, self._last_message = now, phase, message
        if self.uses_work_done_progress:
            self._ls.work_done_progress.report(
                self.token,
                _with_fields(
                    lsp.WorkDoneProgressReport(
                        message=message, percentage=percentage, cancellable=cancellable
                    ),
                    fields,
                ),
            )
        elif phase_changed or percentage // 10 > self._last_logged_decile:
            self._last_logged_decile = percentage // 10
            self._log(f"{self._title}: {message}")

    def _send_held(self) -> None:
        self._flush = None
        held, self._held = self._held, None
        if held is not None:
            percentage, message, phase, cancellable, fields = held
            self._last_sent = 0.0  # its interval has passed
            self.report(percentage, message, phase=phase, cancellable=cancellable, fields=fields)

    def end(
        self,
        message: str,
        *,
        kind: lsp.MessageType = lsp.MessageType.Info,
        show: bool = False,
        fields: dict[str, Any] | None = None,
    ) -> None:
        """Close the progress with its outcome (idempotent); errors (and ``show``) also shown."""
        if self._ended:
            return
        self._ended = True
        if self._flush is not None:  # the end says more than a held report
            self._flush.cancel()
            self._flush = None
        if self.uses_work_done_progress:
            self._ls.work_done_progress.end(
                self.token, _with_fields(lsp.WorkDoneProgressEnd(message=message), fields)
            )
            self._ls.work_done_progress.tokens.pop(self.token, None)
            if kind != lsp.MessageType.Error and not show:
                return  # the bar's end says it; a success is followed up with the metrics
        self._show(f"{self._title}: {message}", kind)

    def _show(self, message: str, kind: lsp.MessageType) -> None:
        self._ls.window_show_message(lsp.ShowMessageParams(type=kind, message=message))

    def _log(self, message: str) -> None:
        self._ls.window_log_message(
            lsp.LogMessageParams(type=lsp.MessageType.Info, message=message)
        )


def metrics_dict(metrics: Any) -> dict[str, Any] | None:
    """EvalMetrics (a pydantic model), a dict or None -> a plain JSON-ready dict."""
    if metrics is None:
        return None
    if hasattr(metrics, "model_dump"):  # the answers stay in run.json; the editor gets scores
        return dict(metrics.model_dump(mode="json", exclude={"answers"}))
    return dict(metrics)


# Shown in the CLI's table and run.json; the one-line message keeps to the headline metrics.
_TABLE_ONLY = {"issue_precision", "issue_recall", "file_agreement"}


def describe_change(before: dict[str, Any] | None, after: dict[str, Any] | None) -> str:
    """``valid JSON 0% → 95% · snippet F1 0.00 → 0.71 · val loss 6.12 → 1.35 (12 test …)``."""
    if not after:
        return "No evaluation metrics were recorded."
    before = before or {}
    parts = []
    for key, label, as_percent in METRIC_LABELS:
        new = after.get(key)
        if new is None or key in _TABLE_ONLY:
            continue
        old = before.get(key)
        shown_old = "?" if old is None else format_metric(old, as_percent)
        parts.append(f"{label} {shown_old} → {format_metric(new, as_percent)}")
        if key == "issue_f1" and after.get("f1_difference_low") is not None:
            parts[-1] += (
                f" (95% CI of the change {after['f1_difference_low']:+.2f}.."
                f"{after['f1_difference_high']:+.2f})"
            )
    count = after.get("n")
    suffix = f" ({count} test example{'' if count == 1 else 's'})" if count else ""
    return " · ".join(parts) + suffix
