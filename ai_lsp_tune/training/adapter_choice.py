"""Which adapter a run publishes: the one of the best validation loss, or the last step's.

``keep_last_adapter`` true publishes the last (as ``mlx_lm lora`` does), false the best; unset
(the default, "auto") decides from the run itself. The rule: publish the best only when its
validation loss is surely lower than the last step's. Both are measured on the same validation
windows; Δ = loss(last) − loss(best), each the mean loss per answer token, and its 95 % paired
bootstrap interval resamples the windows' source files (``bootstrap``, as the gate's F1
difference). The best when the interval lies entirely above 0 and there are at least
``MIN_FILES`` files (with fewer the interval cannot be sure: a best lower on each of 4 files
happens by chance 1 time in 16); else the last. A run without validation publishes the last.
Why: a few windows of a few files pick their best by noise, a big, varied split does not
(bench/RESULTS.md "quality", "Keeping the last adapter instead of the best-validation one").
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Literal

from ai_lsp_tune.training.bootstrap import paired_interval

MIN_FILES = 5

Published = Literal["best", "last"]
# Summed answer-token loss and answer tokens of one validation window (or of one file's).
WindowLoss = tuple[float, int]


@dataclass(frozen=True)
class AdapterChoice:
    published: Published
    reason: str  # one line: run.json's ``adapter_choice`` and the CLI's outcome


def losses_by_file(windows: Sequence[WindowLoss], sources: Sequence[str]) -> dict[str, WindowLoss]:
    """Window losses summed per source file (a window without a source is its own unit); a
    window the validation did not reach (no tokens: past ``val_batches``) is left out."""
    files: dict[str, WindowLoss] = {}
    for index, (loss, tokens) in enumerate(windows):
        if tokens <= 0:
            continue
        key = sources[index] if index < len(sources) and sources[index] else f"#{index}"
        summed, count = files.get(key, (0.0, 0))
        files[key] = (summed + loss, count + tokens)
    return files


def choose_adapter(
    best: Mapping[str, WindowLoss],
    last: Mapping[str, WindowLoss],
    *,
    best_iteration: int,
    last_iteration: int,
) -> AdapterChoice:
    """The auto rule (module docstring) on the best's and the last's per-file losses."""
    if best_iteration == last_iteration:
        return AdapterChoice("last", "auto: the last step has the best validation loss")
    step = f"best (step {best_iteration})"
    files = sorted(set(best) & set(last))
    if len(files) < MIN_FILES:
        return AdapterChoice(
            "last",
            f"auto: last; {len(files)} validation file{'s are' if len(files) != 1 else ' is'} "
            f"too few to judge the {step} against it ({MIN_FILES} needed)",
        )
    pairs = [(best[f], last[f]) for f in files]

    def difference(chosen: Sequence[tuple[WindowLoss, WindowLoss]]) -> float:
        best_loss = sum(b[0] for b, _ in chosen) / max(sum(b[1] for b, _ in chosen), 1)
        last_loss = sum(a[0] for _, a in chosen) / max(sum(a[1] for _, a in chosen), 1)
        return last_loss - best_loss

    delta, low, high = paired_interval(pairs, difference)
    interval = f"Δ {delta:+.3f} [{low:+.3f}, {high:+.3f}] over {len(files)} files"
    if low > 0:
        return AdapterChoice("best", f"auto: {step}, surely lower validation loss ({interval})")
    return AdapterChoice("last", f"auto: last; {step} not surely lower ({interval})")


def adapter_to_publish(
    keep_last_adapter: bool | None,
    *,
    best: tuple[int, Sequence[WindowLoss] | None],
    last: tuple[int, Sequence[WindowLoss] | None],
    sources: Sequence[str],
) -> AdapterChoice:
    """Without validation, the last; else the request's choice, or (None) the auto rule on the
    best's and the last validation's (iteration, per-window losses)."""
    (best_iteration, best_windows), (last_iteration, last_windows) = best, last
    if last_windows is None:  # no best to choose: the last adapter is the only one measured
        return AdapterChoice("last", "no validation split")
    if keep_last_adapter is not None:
        return AdapterChoice("last" if keep_last_adapter else "best", "requested")
    if best_windows is None:  # a checkpoint written before they were kept
        return AdapterChoice("last", "auto: last; no per-window losses of the best")
    return choose_adapter(
        losses_by_file(best_windows, sources),
        losses_by_file(last_windows, sources),
        best_iteration=best_iteration,
        last_iteration=last_iteration,
    )
