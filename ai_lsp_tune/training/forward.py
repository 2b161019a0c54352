"""The training forward pass: a shared prompt prefix once, rows in query chunks, packed
examples kept apart. Exact: every token's output is the one the plain forward pass gives.

* **Shared prefix.** A step's examples usually start with the same tokens (the system prompt,
  the user prompt's opening): the batch carries those ``P`` tokens once, as a row of their own
  (``prefix``), and the rows only what follows. The prefix runs once, with batch 1; every row's
  queries then attend to its keys and values (broadcast to the rows) and to their own. Its
  gradient is the sum over the rows, as when each row computed it.
* **Query chunks.** A row of ``W`` tokens runs through the model ``chunk`` tokens at a time;
  each chunk's queries attend to the keys of everything before it and causally within it, so
  the masked upper half of the ``W x W`` attention scores is mostly never computed (the chunks
  compute ``W^2 (k+1) / 2k`` of the ``W^2`` scores for ``k`` chunks) and the largest score
  matrix is ``chunk x W``. On the CPU, where MLX computes attention densely, that is most of a
  long example's step; on a GPU the fused attention kernel already skips masked blocks, so rows
  run whole there (``chunk_size``).

Both ride on the cache argument every mlx-lm model takes: a stand-in per layer (``GradKV``)
hands the model the RoPE offset of the chunk, the attention mask, and the keys and values of
the earlier chunks, with their gradients (nothing is detached: this is training, not a cache).
``forward_fault`` checks on the model that the outputs are the plain pass's; a model where
they are not runs rows whole.

* **Frozen layers.** With LoRA on the last ``k`` layers only, the layers before them are the
  same every step: ``FrozenCache`` holds what enters the first LoRA layer, computed once per
  example (``frozen.py``), and ``FrozenCache.tail`` makes the model's own stack run only the
  last ``k`` layers on it: its embedding looks columns up in the cache (a batch of column ids
  laid out as the token batch is), so the prefix, chunks and packed rows above still apply.
"""

from __future__ import annotations

import contextlib
import math
import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import mlx.core as mx

CHUNK_ENV = "AI_LSP_TRAIN_CHUNK"  # "0": rows whole; N: chunks of N tokens (benchmarks compare)
MIN_CHUNK = 64
MAX_CHUNKS = 32


class GradKV:
    """Stands in for one layer's KV cache while training: the keys and values of the prefix
    and of the earlier chunks (broadcast from the prefix's one row to the batch's), the RoPE
    offset of the chunk running now, and its attention mask."""

    def __init__(self, segments: mx.array | None = None, *, keep: bool = True) -> None:
        self.keys: mx.array | None = None
        self.values: mx.array | None = None
        self.offset = 0  # where the chunk running now starts, in the row's positions
        self.segments = segments  # example ids of the row's columns (packed rows) or None
        # A single pass keeps nothing: ``--grad-checkpoint`` runs each layer twice.
        self.keep = keep

    def update_and_fetch(self, keys: mx.array, values: mx.array) -> tuple[mx.array, mx.array]:
        import mlx.core as mx

        if not self.keep:
            return keys, values
        if self.keys is not None and self.values is not None:
            rows = keys.shape[0]
            old_k, old_v = self.keys, self.values
            if old_k.shape[0] != rows:  # the prefix's one row, seen by every row
                old_k = mx.broadcast_to(old_k, (rows, *old_k.shape[1:]))
                old_v = mx.broadcast_to(old_v, (rows, *old_v.shape[1:]))
            keys = mx.concatenate([old_k, keys], axis=2)
            values = mx.concatenate([old_v, values], axis=2)
        self.keys, self.values = keys, values
        return keys, values

    def make_mask(
        self, n: int, return_array: bool = False, window_size: int | None = None
    ) -> mx.array:
        import mlx.core as mx

        queries = mx.arange(self.offset, self.offset + n)[:, None]
        keys = mx.arange(self.offset + n)[None]
        mask = queries >= keys
        if window_size is not None:
            mask = mask & (queries < keys + window_size)
        if self.segments is None:
            return mask
        # Packed rows (no prefix): a query sees only its own example's columns.
        seen = self.segments[:, : self.offset + n]
        asking = self.segments[:, self.offset : self.offset + n]
        return (asking[:, None, :, None] == seen[:, None, None, :]) & mask


def chunk_size(width: int) -> int:
    """Query chunk for rows of ``width`` tokens (``width`` or more: the row runs whole)."""
    wanted = os.environ.get(CHUNK_ENV)
    if wanted is not None:
        return int(wanted) or width
    import mlx.core as mx

    if mx.default_device() != mx.cpu:
        return width  # fused attention kernels skip masked blocks themselves
    return max(MIN_CHUNK, 32 * math.ceil(width / MAX_CHUNKS / 32))


def _layer_count(forward: Callable[..., mx.array]) -> int:
    owner = getattr(forward, "__self__", forward)
    layers = getattr(owner, "layers", None)
    if layers is None:
        layers = getattr(getattr(owner, "model", None), "layers", [])
    return len(layers)


def run(
    forward: Callable[..., mx.array],
    inputs: mx.array,
    *,
    segments: mx.array | None = None,
    prefix: mx.array | None = None,
    chunk: int | None = None,
) -> mx.array:
    """``forward`` (the model, or its inner stack) over ``prefix + inputs``; the outputs of
    ``inputs``' positions. ``prefix`` is (1, P), shared by every row; ``segments`` (rows, W)
    keeps packed examples apart (never with a prefix)."""
    import mlx.core as mx

    assert prefix is None or segments is None, "packed rows never share a prefix"

    width = inputs.shape[1]
    chunk = chunk or width
    if prefix is None and segments is None and chunk >= width:
        return forward(inputs)  # the model's own causal mask
    keep = prefix is not None or chunk < width
    caches = [GradKV(segments, keep=keep) for _ in range(_layer_count(forward))]
    start = 0
    if prefix is not None:
        for begin in range(0, prefix.shape[1], chunk):
            for cache in caches:
                cache.offset = begin
            forward(prefix[:, begin : begin + chunk], cache=caches)  # its keys and values
        start = prefix.shape[1]
    outputs = []
    for begin in range(0, width, chunk):
        for cache in caches:
            cache.offset = start + begin
        outputs.append(forward(inputs[:, begin : begin + chunk], cache=caches))
    return outputs[0] if len(outputs) == 1 else mx.concatenate(outputs, axis=1)


def forward_fault(model: Any) -> str | None:
    """Why a shared prefix and query chunks would change ``model``'s outputs; None when they
    do not (checked once per model, against the plain forward pass)."""
    import mlx.core as mx
    import numpy as np

    vocab = int(getattr(getattr(model, "args", None), "vocab_size", 0) or 32)
    prefix = [(5 * i + 1) % vocab for i in range(1, 8)]
    rows = [[(7 * i + 3 + r) % vocab for i in range(1, 12)] for r in range(2)]
    try:
        whole = model(mx.array([prefix + row for row in rows])).astype(mx.float32)
        mine = run(model, mx.array(rows), prefix=mx.array([prefix]), chunk=4)
        mine = mine.astype(mx.float32)
    except Exception as exc:  # an architecture whose layers do not take the stand-in cache
        return f"its forward pass does not take a stand-in KV cache ({exc!s:.120})"
    want = whole[:, len(prefix) :]
    scale = float(np.array(mx.abs(want - want.mean(axis=-1, keepdims=True)).max()))
    error = float(np.array(mx.abs(mine - want).max())) if mine.shape == want.shape else math.inf
    if not math.isfinite(error) or error > 0.02 * max(scale, 1e-6):
        return (
            f"its outputs over a shared prefix in chunks differ from the plain pass's (max "
            f"difference {error:.3g} of {scale:.3g})"
        )
    return None


@dataclass
class FrozenCache:
    """What enters layer ``split`` for every token of every training example, each example
    computed alone: row 0 of ``table`` is the padding's (zeros), rows 1 to ``shared`` the
    tokens every example starts with (computed once), and an example's own tokens' rows start
    at ``starts[id(its tokens)]``."""

    split: int
    table: mx.array  # (1 + tokens, hidden)
    starts: dict[int, int] = field(default_factory=dict)
    seconds: float = 0.0
    shared: int = 0

    def columns(self, item: tuple[list[int], int]) -> tuple[list[int], int]:
        """``item`` with each token replaced by its row in ``table`` (collated as tokens are)."""
        tokens, offset = item
        start = self.starts[id(tokens)]
        own = range(start, start + len(tokens) - self.shared)
        return [*range(1, 1 + self.shared), *own], offset

    def covers(self, item: tuple[list[int], int]) -> bool:
        """Whether ``item``'s tokens are in the table (the training and validation examples)."""
        return id(item[0]) in self.starts

    @contextlib.contextmanager
    def tail(self, inner: Any) -> Iterator[None]:
        """``inner`` (the model's layer stack) runs its last layers on rows of ``table``: its
        embedding becomes a look-up, its layers the ones from ``split`` on; put back after."""
        embed, layers = inner["embed_tokens"], inner["layers"]
        inner["embed_tokens"] = _Rows(self.table)
        inner["layers"] = layers[self.split :]
        try:
            yield
        finally:
            inner["embed_tokens"], inner["layers"] = embed, layers


class _Rows:
    """Stands in for the embedding: column ids -> rows of the cache (never a parameter)."""

    def __init__(self, table: mx.array) -> None:
        self.table = table

    def __call__(self, columns: mx.array) -> mx.array:
        import mlx.core as mx

        return mx.stop_gradient(self.table[columns])
