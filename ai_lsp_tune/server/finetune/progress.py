"""A fine-tune run's progress as the user sees it: one monotone percentage, one readable line.

The run has stages of very different lengths (dataset preparation, the training worker's
loading / training / evaluating / fusing phases, then the gate and the hot swap). ``ProgressMeter``
maps them onto 0..100 so the bar only ever moves forward; ``format_progress`` writes the line,
percentage first, because VS Code shows server progress only as a status-bar spinner + text.
``ProgressChannel`` sends it: ``$/progress`` when the client supports work-done progress, else
``window/showMessage`` at the edges and ``window/logMessage`` in between.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass
from typing import Any

from lsprotocol import types as lsp

logger = logging.getLogger(__name__)

# Share of the whole run given to each stage; the worker's own ``fraction`` fills its band.
PREPARE_BAND = (0.0, 5.0)
WORKER_BAND = (5.0, 90.0)
SWAP_BAND = (90.0, 99.0)
# Used only when a worker event carries no overall fraction: each phase's band inside the worker.
WORKER_PHASE_BANDS: dict[str, tuple[float, float]] = {
    "loading": (0.0, 0.05),
    "training": (0.05, 0.75),
    "evaluating": (0.75, 0.92),
    "fusing": (0.92, 1.0),
}


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
        low, high = WORKER_PHASE_BANDS.get(step.phase, (0.0, 0.0))
        inner = 0.0
        if step.iteration is not None and step.total:
            inner = step.iteration / step.total
        return self._advance(WORKER_BAND, low + (high - low) * inner)

    def swapping(self, fraction: float = 0.0) -> int:
        """The gate decision and the hot swap."""
        return self._advance(SWAP_BAND, fraction)

    def finish(self) -> int:
        """A successful run ends at 100; failures keep the last value."""
        self.percentage = 100
        return self.percentage


def format_rate(tokens_per_sec: float) -> str:
    """``1.2k tok/s`` / ``850 tok/s``."""
    if tokens_per_sec >= 1000:
        return f"{tokens_per_sec / 1000:.1f}k tok/s"
    return f"{tokens_per_sec:.0f} tok/s"


def format_eta(seconds: float) -> str:
    """``ETA 40 s`` / ``ETA 3 min`` / ``ETA 1 h 5 min``: coarse, as a person reads it."""
    seconds = max(0.0, seconds)
    if seconds < 60:
        return f"ETA {math.ceil(seconds)} s"
    minutes = round(seconds / 60)
    if minutes < 60:
        return f"ETA {minutes} min"
    return f"ETA {minutes // 60} h {minutes % 60} min"


def format_progress(percentage: int, step: ProgressStep) -> str:
    """``42% · training 20/60 · loss 0.84 · 1.2k tok/s · ETA 3 min``."""
    phase = step.phase
    if step.iteration is not None and step.total:
        phase = f"{phase} {step.iteration}/{step.total}"
    parts = [f"{percentage}%", phase]
    if step.note:
        parts.append(step.note)
    if step.train_loss is not None:
        parts.append(f"loss {step.train_loss:.2f}")
    if step.val_loss is not None:
        parts.append(f"val {step.val_loss:.2f}")
    if step.tokens_per_sec:
        parts.append(format_rate(step.tokens_per_sec))
    last_step = step.iteration is not None and step.total and step.iteration >= step.total
    if step.eta_s is not None and step.phase == "training" and not last_step:
        parts.append(format_eta(step.eta_s))
    return " · ".join(parts)


class ProgressChannel:
    """One run's progress on the wire, with a fallback for clients without work-done progress.

    A refused token (the client answers ``window/workDoneProgress/create`` with an error) is
    logged and the run goes on, reporting through log messages instead.
    """

    MIN_INTERVAL_S = 0.2  # reports in between are coalesced; phase changes always go out
    CREATE_TIMEOUT_S = 10.0  # a client that never answers the create request is a refusal

    def __init__(
        self, ls: Any, token: str, title: str, on_cancel: Callable[[], object] | None = None
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

    def _client_supports_progress(self) -> bool:
        caps = getattr(self._ls, "client_capabilities", None)
        window = getattr(caps, "window", None)
        return bool(getattr(window, "work_done_progress", False))

    async def begin(self, message: str) -> None:
        """Create the token and send ``begin``; fall back to messages when that is not possible."""
        if self._client_supports_progress():
            try:
                create = self._ls.work_done_progress.create_async(self.token)
                await asyncio.wait_for(create, self.CREATE_TIMEOUT_S)
            except Exception as exc:  # the client may refuse: tolerated, logged
                logger.warning("client refused progress token %s: %s", self.token, exc)
                self._log(f"{self._title}: progress bar unavailable ({exc}); updates follow here")
            else:
                self.uses_work_done_progress = True
        if self.uses_work_done_progress:
            future = self._ls.work_done_progress.tokens.get(self.token)
            if future is not None and self._on_cancel is not None:
                future.add_done_callback(self._cancelled_by_client)
            self._ls.work_done_progress.begin(
                self.token,
                lsp.WorkDoneProgressBegin(
                    title=self._title, message=message, percentage=0, cancellable=True
                ),
            )
        else:
            self._show(f"{self._title}: {message}", lsp.MessageType.Info)
        self._last_sent = time.monotonic()
        self._last_message = message

    def _cancelled_by_client(self, future: Future[Any]) -> None:
        if future.cancelled() and not self._ended and self._on_cancel is not None:
            logger.info("client cancelled progress %s", self.token)
            self._on_cancel()

    def report(
        self, percentage: int, message: str, *, phase: str, cancellable: bool = True
    ) -> None:
        """Send a report, coalescing bursts (the worker may emit many events a second)."""
        if self._ended or message == self._last_message:
            return
        now = time.monotonic()
        phase_changed = phase != self._last_phase
        if not phase_changed and now - self._last_sent < self.MIN_INTERVAL_S:
            return
        self._last_sent, self._last_phase, self._last_message = now, phase, message
        if self.uses_work_done_progress:
            self._ls.work_done_progress.report(
                self.token,
                lsp.WorkDoneProgressReport(
                    message=message, percentage=percentage, cancellable=cancellable
                ),
            )
        elif phase_changed or percentage // 10 > self._last_logged_decile:
            self._last_logged_decile = percentage // 10
            self._log(f"{self._title}: {message}")

    def end(
        self, message: str, *, kind: lsp.MessageType = lsp.MessageType.Info, show: bool = False
    ) -> None:
        """Close the progress with its outcome (idempotent); errors (and ``show``) also shown."""
        if self._ended:
            return
        self._ended = True
        if self.uses_work_done_progress:
            self._ls.work_done_progress.end(self.token, lsp.WorkDoneProgressEnd(message=message))
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


_METRIC_LABELS = [  # (EvalMetrics field, label, shown as a percentage)
    ("valid_json_rate", "valid JSON", True),
    ("unconstrained_valid_json_rate", "unconstrained JSON", True),
    ("schema_valid_rate", "schema-valid", True),
    ("grounded_rate", "grounded", True),
    ("snippet_f1", "snippet F1", False),
    ("val_loss", "val loss", False),
]


def metrics_dict(metrics: Any) -> dict[str, Any] | None:
    """EvalMetrics (a pydantic model), a dict or None -> a plain JSON-ready dict."""
    if metrics is None:
        return None
    if hasattr(metrics, "model_dump"):
        return dict(metrics.model_dump(mode="json"))
    return dict(metrics)


def describe_change(before: dict[str, Any] | None, after: dict[str, Any] | None) -> str:
    """``valid JSON 0% → 95% · snippet F1 0.00 → 0.71 · val loss 6.12 → 1.35 (12 test …)``."""
    if not after:
        return "No evaluation metrics were recorded."
    before = before or {}
    parts = []
    for key, label, as_percent in _METRIC_LABELS:
        new = after.get(key)
        if new is None:
            continue
        old = before.get(key)

        def show(value: Any, as_percent: bool = as_percent) -> str:
            if value is None:
                return "?"
            return f"{value:.0%}" if as_percent else f"{value:.2f}"

        parts.append(f"{label} {show(old)} → {show(new)}")
    count = after.get("n")
    suffix = f" ({count} test example{'' if count == 1 else 's'})" if count else ""
    return " · ".join(parts) + suffix
