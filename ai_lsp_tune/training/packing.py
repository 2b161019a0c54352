"""Packing: several examples in one row of a batch, kept independent of each other.

A step's examples (the ``--batch-size`` examples the length grouping puts together) are laid
into rows no wider than the step's longest example (first fit, longest first), so a packed
batch has fewer rows than the padded one and never more columns: compute and activation memory
never exceed the padded batch's. (Wider rows would pack uniform sets too, but attention is
quadratic in the row width: on the CPU that costs more than the padding it saves.)

Independence: every column carries the id of the example it belongs to, and attention is causal
within an example and blocked across examples (a block-diagonal causal mask). Positions: mlx-lm's
models take no position ids; they rotate queries and keys (RoPE) by the row position, from the
cache's offset. A packed example's positions need not restart at 0 for its outputs to be the
ones it gets alone: RoPE makes a query-key score depend only on the distance between the two
tokens, and the mask keeps every score inside one example. ``packing_fault`` checks exactly this
on the model (packed vs alone); a model where it fails (learned absolute positions, a model that
ignores the mask) trains unpacked, and the log says so.

The mask reaches the attention layers through a stand-in for the KV cache (``forward.GradKV``).

A step whose examples start with the same tokens (the system prompt) may instead share them:
``shared_prefix`` finds them, and when one prefix row plus the rows' rest is less to compute
than the packed rows, every example gets a row of its own holding what follows the prefix
(``forward.run`` runs the prefix once). Packed examples never share a prefix: a packed
example's distance to the prefix would differ from the one it has alone.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from ai_lsp_tune.training.forward import run

if TYPE_CHECKING:
    import mlx.core as mx

PAD_TO = 32  # sequence lengths are rounded up to this, so compiled step shapes repeat
PREFIX_STEP = 8  # shared prefixes are rounded down to this (fewer step shapes to compile)

Item = tuple[list[int], int]  # (tokens, where the answer starts)
# tokens (R, W+1), answer positions (R, A), answer mask (R, A), example ids (R, W) or None,
# the shared prefix (1, P) or None; positions and tokens count from after the prefix
Batch = tuple["mx.array", "mx.array", "mx.array", "mx.array | None", "mx.array | None"]
Layout = tuple[list[list[Item]], int]  # rows of examples, and the tokens they share first


def padded_width(tokens: int) -> int:
    """The row width (in tokens, the one extra target included) that holds ``tokens`` tokens."""
    return 1 + PAD_TO * math.ceil((tokens - 1) / PAD_TO)


def pack_rows(lengths: Sequence[int], *, pack: bool = True) -> list[list[int]]:
    """Indices into ``lengths`` laid into rows no wider than the padded longest (first fit
    decreasing); widest rows first. Without ``pack``, one example a row."""
    order = sorted(range(len(lengths)), key=lambda i: -lengths[i])
    if not pack:
        return [[i] for i in order]
    capacity = padded_width(max(lengths))
    rows: list[list[int]] = []
    fills: list[int] = []
    for i in order:
        slot = next((r for r, fill in enumerate(fills) if fill + lengths[i] <= capacity), None)
        if slot is None:
            rows.append([i])
            fills.append(lengths[i])
        else:
            rows[slot].append(i)
            fills[slot] += lengths[i]
    return [rows[r] for r in sorted(range(len(rows)), key=lambda r: -fills[r])]


def shared_prefix(items: Sequence[Item]) -> int:
    """The tokens every item starts with, before any answer's first target (rounded down to
    ``PREFIX_STEP``; 0 for a single item: nothing to share)."""
    if len(items) < 2:
        return 0
    first = items[0][0]
    n = min(offset for _, offset in items) - 1  # position offset - 1 predicts the answer
    for tokens, _ in items[1:]:
        n = min(n, len(tokens))
        same = 0
        while same < n and tokens[same] == first[same]:
            same += 1
        n = same
    return max(0, n) // PREFIX_STEP * PREFIX_STEP


def layout(items: Sequence[Item], *, pack: bool, share: bool) -> Layout:
    """A step's rows: packed (``pack_rows``), or one a row after a shared prefix when that is
    fewer padded tokens (``share``); with the prefix length (0: none)."""
    lengths = [len(tokens) for tokens, _ in items]
    rows = [[items[i] for i in row] for row in pack_rows(lengths, pack=pack)]
    prefix = shared_prefix(items) if share else 0
    if prefix:
        packed = len(rows) * padded_width(max(lengths))
        shared = prefix + len(items) * padded_width(max(lengths) - prefix)
        if shared < packed:
            return [[items[row[0]]] for row in pack_rows(lengths, pack=False)], prefix
    return rows, 0


def micro_batches(
    rows: list[list[Item]], max_tokens: int, prefix: int = 0
) -> list[list[list[Item]]]:
    """Rows (widest first) split into batches of at most ``max_tokens`` padded input tokens
    (after a shared ``prefix``, which each batch runs once); a row over the budget on its own
    is a batch of its own."""
    out: list[list[list[Item]]] = []
    width = 0
    for row in rows:
        fill = sum(len(tokens) for tokens, _ in row) - prefix
        if out and (len(out[-1]) + 1) * (width - 1) <= max_tokens:
            out[-1].append(row)
            continue
        out.append([row])
        width = padded_width(fill)
    return out


def collate_rows(rows: Sequence[Sequence[Item]], prefix: int = 0) -> Batch:
    """A batch of rows, each holding one or more examples back to back, or (``prefix``) one
    example each after the ``prefix`` tokens all of them start with.

    Position p predicts token p + 1; an example's answer positions are its own, so the last
    token of one example (which would predict the next example's first) is never trained on.
    Example ids are None when no row holds two examples (the model's plain causal mask).
    """
    import mlx.core as mx
    import numpy as np

    shared = None
    if prefix:
        shared = mx.array([rows[0][0][0][:prefix]], mx.int32)
        rows = [[(tokens[prefix:], offset - prefix) for tokens, offset in row] for row in rows]
    fills = [sum(len(tokens) for tokens, _ in row) for row in rows]
    width = padded_width(max(fills))
    answers = [sum(len(tokens) - offset for tokens, offset in row) for row in rows]
    answer_width = min(width - 1, PAD_TO * math.ceil(max(answers) / PAD_TO))
    batch = np.zeros((len(rows), width), np.int32)
    positions = np.full((len(rows), answer_width), width - 2, np.int32)
    mask = np.zeros((len(rows), answer_width), np.bool_)
    segments = np.full((len(rows), width - 1), -1, np.int32)
    for r, row in enumerate(rows):
        start = answered = 0
        for e, (tokens, offset) in enumerate(row):
            end = start + len(tokens)
            batch[r, start:end] = tokens
            segments[r, start : min(end, width - 1)] = e
            n = len(tokens) - offset
            positions[r, answered : answered + n] = np.arange(start + offset - 1, end - 1)
            mask[r, answered : answered + n] = True
            start, answered = end, answered + n
    packed = any(len(row) > 1 for row in rows)
    return (
        mx.array(batch),
        mx.array(positions),
        mx.array(mask),
        mx.array(segments) if packed else None,
        shared,
    )


def empty_batch() -> Batch:
    """A one-row batch that trains nothing: it fills a step out to the fixed number of micro
    batches (mlx-lm accumulates a fixed number of gradients per update)."""
    import mlx.core as mx

    width = PAD_TO + 1
    return (
        mx.zeros((1, width), mx.int32),
        mx.zeros((1, PAD_TO), mx.int32),
        mx.zeros((1, PAD_TO), mx.bool_),
        None,
        None,
    )


def packing_fault(model: Any) -> str | None:
    """Why packed examples would not train as they do alone on ``model``; None when they do.

    Two examples packed into one row must give, token for token, the logits each gets alone.
    """
    import mlx.core as mx
    import numpy as np

    vocab = int(getattr(getattr(model, "args", None), "vocab_size", 0) or 32)
    first = [(7 * i + 3) % vocab for i in range(1, 10)]
    second = [(11 * i + 5) % vocab for i in range(1, 14)]
    row = mx.array([first + second + [0] * 10])
    segments = mx.array([[0] * len(first) + [1] * len(second) + [-1] * 10])
    try:
        packed = run(model, row, segments=segments).astype(mx.float32)[0]
        alone = mx.concatenate(
            [model(mx.array([first]))[0], model(mx.array([second]))[0]], axis=0
        ).astype(mx.float32)
    except Exception as exc:  # an architecture whose layers do not take the stand-in cache
        return f"its forward pass does not take a packed attention mask ({exc!s:.120})"
    got = packed[: len(first) + len(second)]
    scale = float(np.array(mx.abs(alone - alone.mean(axis=-1, keepdims=True)).max()))
    error = float(np.array(mx.abs(got - alone).max()))
    if not math.isfinite(error) or error > 0.02 * max(scale, 1e-6):
        return (
            "a packed example's logits differ from the example's own (max difference "
            f"{error:.3g} of {scale:.3g}): positions do not restart per example"
        )
    return None
