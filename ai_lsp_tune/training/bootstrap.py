"""The paired bootstrap: how sure a difference between two models, measured on the same units
(files), is. Resample the units with replacement, recompute the difference from the resampled
pairs, and take the percentile interval. The gate's F1 difference (``agreement``) and the
choice of the adapter a run publishes (``adapter_choice``) both use it.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Sequence
from typing import TypeVar

BOOTSTRAP_SAMPLES = 2000
CONFIDENCE = 0.95

P = TypeVar("P")


def paired_interval(
    pairs: Sequence[P],
    difference: Callable[[Sequence[P]], float],
    *,
    samples: int = BOOTSTRAP_SAMPLES,
    confidence: float = CONFIDENCE,
    seed: int = 0,
) -> tuple[float, float, float]:
    """``difference(pairs)`` and its percentile interval over resamplings of ``pairs``."""
    rng = random.Random(seed)
    draws = sorted(difference(rng.choices(pairs, k=len(pairs))) for _ in range(samples))
    tail = (1 - confidence) / 2
    low = draws[int(tail * (samples - 1))]
    high = draws[round((1 - tail) * (samples - 1))]
    return difference(pairs), low, high
