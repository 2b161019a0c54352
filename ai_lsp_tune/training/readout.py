"""How a training run reads to a person: the CLI's console and the editor's progress both say
a step, its rate and ETA, and an evaluation's count the same way (from the worker's events)."""

from __future__ import annotations

import math

from ai_lsp_tune.training.protocol import EvaluatingEvent


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


def training_readout(
    *,
    train_loss: float | None = None,
    val_loss: float | None = None,
    tokens_per_sec: float | None = None,
    eta_s: float | None = None,
    iteration: int | None = None,
    total: int | None = None,
) -> list[str]:
    """``["loss 0.84", "val 0.91", "1.2k tok/s", "ETA 3 min"]``: what is known, no ETA once
    the last step is reached."""
    parts = []
    if train_loss is not None:
        parts.append(f"loss {train_loss:.2f}")
    if val_loss is not None:
        parts.append(f"val {val_loss:.2f}")
    if tokens_per_sec:
        parts.append(format_rate(tokens_per_sec))
    last_step = iteration is not None and bool(total) and iteration >= (total or 0)
    if eta_s is not None and not last_step:
        parts.append(format_eta(eta_s))
    return parts


def evaluating_count(event: EvaluatingEvent) -> tuple[int, int, str]:
    """``(3, 8, "pass 2 of 2")``: examples done of the examples, and which pass where
    constrained decoding answers each example twice ("" for one pass); the CLI and the editor
    both count this way, not answers ("11/16")."""
    done, total = event.done, event.total
    if not (event.examples and total > event.examples):
        return done, total, ""
    passes = total // event.examples
    at_pass = min(done // event.examples, passes - 1)
    return done - at_pass * event.examples, event.examples, f"pass {at_pass + 1} of {passes}"
