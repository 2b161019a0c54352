"""The frozen layers' output, computed once per run: LoRA on the last ``k`` layers of ``n``
leaves the first ``n - k`` unchanged, so what they give each training example is computed once
(each example alone, causal, no gradient; the tokens every example starts with, the
system prompt, once) and each step runs only the last ``k`` layers, the
final norm and the head (``forward.FrozenCache``). Exact: the step's rows are assembled from
the cached states laid out as its tokens are (packed rows, a shared prefix, query chunks), and
``frozen_fault`` checks once per model that the outputs are the plain pass's.

It applies when ``--num-layers`` is fewer than the model's layers and ``--grad-checkpoint`` is
off (that option trades compute for memory; the cache trades memory for compute). The cache
is tokens x hidden size x the activations' bytes, at most ``CACHE_SHARE`` of the machine's
memory: the model, its gradients and the step's activations need the rest, and past that the
plain path is the safer one. The validation examples are cached too: a validation pass is
then as cheap as a step's forward (the before/after evaluations run the plain path).
"""

from __future__ import annotations

import contextlib
import os
import sys
import time
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any, NamedTuple

from ai_lsp_tune.training.channel import Cancelled
from ai_lsp_tune.training.data import (
    LengthGroupedBatches,
    TokenizedSplit,
    chunks,
    packs,
)
from ai_lsp_tune.training.forward import FrozenCache, GradKV, run
from ai_lsp_tune.training.packing import collate_rows, layout, shared_prefix

if TYPE_CHECKING:
    from ai_lsp_tune.training.protocol import TrainRequest

FROZEN_ENV = "AI_LSP_TRAIN_FROZEN"  # "0": every step runs every layer (benchmarks compare)
# A quarter of the machine's memory: a 135M model in float32 with its optimizer takes ~2 GB
# of 8, and the cache of a few hundred analyses ~0.3 GB; past this, plain steps.
CACHE_SHARE = 0.25


class CacheProgress(NamedTuple):
    done: int  # examples
    of: int
    seconds: float
    rows: int  # tokens computed so far (the shared prefix's once)
    shared: int  # tokens every example starts with


Progress = Callable[[CacheProgress], None]


def frozen_layers(model: Any, request: TrainRequest) -> int:
    """How many leading layers carry no LoRA and stay fixed (0: the cache does not apply)."""
    layers = len(model.layers)
    if request.grad_checkpoint or request.num_layers < 0 or request.num_layers >= layers:
        return 0
    return layers - request.num_layers


def memory_bytes() -> int:
    """The memory the cache shares: the accelerator's where MLX reports one, else the RAM."""
    import mlx.core as mx

    try:
        size = int(mx.device_info().get("memory_size", 0))  # type: ignore[attr-defined]
    except Exception:
        size = 0
    return size or os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")


def cache_frozen(
    model: Any,
    request: TrainRequest,
    train: TokenizedSplit,
    progress: Progress | None = None,
    should_stop: Callable[[], bool] | None = None,
    valid: TokenizedSplit | None = None,
) -> tuple[FrozenCache | None, dict[str, Any]]:
    """The cache for ``train`` and ``valid`` (each validation then runs the last layers only)
    when it applies and fits (else None, and one stderr line when it would apply), with what
    run.json records about it."""
    if valid is not None and len(valid):
        train = TokenizedSplit(items=[*train.items, *valid.items])
    split = frozen_layers(model, request)
    hidden = int(getattr(getattr(model, "args", None), "hidden_size", 0) or 0)
    tokens = train.total_tokens
    record: dict[str, Any] = {"frozen_layers": split, "frozen_cache_tokens": 0}
    why = None
    if not split:
        record["frozen_off_because"] = (
            "--grad-checkpoint" if request.grad_checkpoint else "LoRA covers every layer"
        )
        return None, record
    if os.environ.get(FROZEN_ENV) == "0":
        why = f"{FROZEN_ENV}=0"
    elif why := frozen_fault(model, split):
        pass
    else:
        size = (tokens + 1) * hidden * _activation_bytes(model)
        cap = int(CACHE_SHARE * memory_bytes())
        if size > cap:
            why = (
                f"its cache would take {size / 2**20:.0f} MiB, more than {cap / 2**20:.0f} MiB "
                f"({CACHE_SHARE:.0%} of memory); fewer training examples or more --num-layers fit"
            )
    if why:
        print(f"every layer runs every step for {request.model_name}: {why}", file=sys.stderr)
        return None, {**record, "frozen_layers": 0, "frozen_off_because": why}
    cache = build_cache(model, split, train, progress, should_stop)
    return cache, {
        **record,
        "frozen_cache_tokens": int(cache.table.shape[0] - 1),
        "frozen_cache_mib": round(cache.table.nbytes / 2**20, 1),
        "frozen_cache_seconds": round(cache.seconds, 2),
    }


def _activation_bytes(model: Any) -> int:
    """Bytes of one hidden-state value: the dtype the embedding gives."""
    import mlx.core as mx

    return int(model.model.embed_tokens(mx.array([[0]])).dtype.size)


def build_cache(
    model: Any,
    split: int,
    train: TokenizedSplit,
    progress: Progress | None = None,
    should_stop: Callable[[], bool] | None = None,
) -> FrozenCache:
    """What the first ``split`` layers give each example of ``train``, each alone (the tokens
    all of them start with once, their keys and values then seen by each example, as a step's
    shared prefix is); ``progress`` hears of it at once and about once a second;
    ``should_stop`` is asked before each example (a large cache takes minutes)."""
    import mlx.core as mx

    started = time.perf_counter()
    inner = model.model
    shared = shared_prefix(train.items) if chunks(model) else 0
    rows: list[mx.array] = []
    starts: dict[int, int] = {}
    next_row, last = 1 + shared, started
    if progress is not None:
        progress(CacheProgress(0, len(train), 0.0, 0, shared))
    with _first_layers(inner, split):
        prefix = [GradKV() for _ in range(split)]
        if shared:
            rows.append(inner(mx.array([train.items[0][0][:shared]]), cache=prefix)[0])
            mx.eval(rows, [(c.keys, c.values) for c in prefix])
        for done, (tokens, _) in enumerate(train.items, 1):
            if should_stop is not None and should_stop():
                raise Cancelled("Cancelled while caching the frozen layers, before training.")
            caches = [GradKV() for _ in range(split)] if shared else None
            for cache, seen in zip(caches or [], prefix, strict=True):
                cache.keys, cache.values, cache.offset = seen.keys, seen.values, shared
            hidden = mx.stop_gradient(inner(mx.array([tokens[shared:]]), cache=caches)[0])
            mx.eval(hidden)
            rows.append(hidden)
            starts[id(tokens)] = next_row
            next_row += len(tokens) - shared
            now = time.perf_counter()
            if progress is not None and (now - last > 1.0 or done == len(train)):
                progress(CacheProgress(done, len(train), now - started, next_row - 1, shared))
                last = now
    width = rows[0].shape[-1] if rows else int(model.args.hidden_size)
    dtype = rows[0].dtype if rows else mx.float32
    table = mx.concatenate([mx.zeros((1, width), dtype), *rows], axis=0)
    mx.eval(table)
    return FrozenCache(split, table, starts, time.perf_counter() - started, shared)


@contextlib.contextmanager
def _first_layers(inner: Any, split: int) -> Iterator[None]:
    """``inner`` runs its first ``split`` layers and returns their output (no final norm)."""
    import mlx.nn as nn

    layers, norm = inner["layers"], inner["norm"]
    inner["layers"], inner["norm"] = layers[:split], nn.Identity()
    try:
        yield
    finally:
        inner["layers"], inner["norm"] = layers, norm


def frozen_fault(model: Any, split: int) -> str | None:
    """Why the cached path would change ``model``'s outputs; None when it does not (checked
    once per model and split, on probe examples packed and over a shared prefix, against the
    plain pass; ``forward_fault`` checks chunks)."""
    import math

    import mlx.core as mx
    import numpy as np

    known = getattr(model, "_ai_lsp_frozen_fault", None)
    if known is not None and known[0] == split:
        return str(known[1]) or None
    vocab = int(getattr(getattr(model, "args", None), "vocab_size", 0) or 32)
    system = [(5 * i + 1) % vocab for i in range(1, 10)]  # a shared prefix of 8
    items = [
        (system + [(7 * i + 3 + r) % vocab for i in range(1, n)], len(system) + n // 2)
        for r, n in enumerate((9, 7, 5))
    ]
    fault = ""
    try:
        cache = build_cache(model, split, TokenizedSplit(items=items))
        batches = LengthGroupedBatches(frozen=cache)
        for pack, share in {(packs(model), False), (False, chunks(model))}:
            rows, prefix = layout(items, pack=pack, share=share)
            tokens, _, _, segments, shared = collate_rows(rows, prefix)
            columns, prefix_columns = batches.columns_of(rows, prefix)
            plain = run(model.model, tokens[:, :-1], segments=segments, prefix=shared)
            with cache.tail(model.model):
                mine = run(model.model, columns, segments=segments, prefix=prefix_columns)
            real = np.array(columns) > 0  # padding's outputs differ and are never read
            want = np.array(plain.astype(mx.float32))[real]
            got = np.array(mine.astype(mx.float32))[real]
            scale = float(np.abs(want - want.mean(axis=-1, keepdims=True)).max())
            error = float(np.abs(got - want).max()) if got.shape == want.shape else math.inf
            if not math.isfinite(error) or error > 0.02 * max(scale, 1e-6):
                fault = (
                    "its outputs over cached layers differ from the plain pass's (max "
                    f"difference {error:.3g} of {scale:.3g})"
                )
                break
    except Exception as exc:  # an architecture whose stack cannot start from cached states
        fault = f"its layers cannot start from cached hidden states ({exc!s:.120})"
    model._ai_lsp_frozen_fault = (split, fault)
    return fault or None
