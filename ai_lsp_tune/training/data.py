"""Examples -> tokens -> batches -> loss: the data side of training.

* Each example is rendered with the base model's chat template (``prompts.render_chat``, as the
  model host renders its prompts) and the prompt is masked: the
  loss is on the assistant's answer only (the original tool trained on ``json.dumps(messages)``,
  a format the model is never prompted in).
* Batches are length-grouped (examples sorted by token count, neighbours batched together),
  so a skewed dataset does not pay for padding; mlx-lm's own batching sorts chat data by the
  number of dict keys, i.e. not at all.
* Logits are computed only where the answer is, which skips the vocabulary projection over
  the (usually long) prompt.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np

from ai_lsp_tune.prompts import chat_messages, prompt_tokens, render_chat
from ai_lsp_tune.training.distributed import World, shard, sum_over_ranks
from ai_lsp_tune.training.forward import CHUNK_ENV, FrozenCache, chunk_size, forward_fault, run
from ai_lsp_tune.training.packing import (
    Item,
    Layout,
    collate_rows,
    empty_batch,
    layout,
    micro_batches,
    packing_fault,
)

if TYPE_CHECKING:
    import mlx.core as mx
    import mlx.nn as nn


class ChatExample(Protocol):
    system: str
    user: str
    assistant: str


def example_tokens(tokenizer: Any, example: ChatExample) -> tuple[list[int], int]:
    """Tokens of prompt + answer, and where the answer starts (the loss starts there)."""
    prompt = prompt_tokens(tokenizer, example.system, example.user)
    messages = chat_messages(example.system, example.user, example.assistant)
    full = render_chat(tokenizer, messages, add_generation_prompt=False)
    offset = len(prompt)
    if full[:offset] != prompt:  # a template that renders the prompt differently mid-chat
        pairs = enumerate(zip(full, prompt, strict=False))
        offset = next((i for i, (a, b) in pairs if a != b), offset)
    return full, offset


@dataclass
class TokenizedSplit:
    """One split as (tokens, answer offset) pairs; too-long and empty examples are skipped.
    ``sources``: the file each kept example is about, when known (validation pairs by file)."""

    items: list[tuple[list[int], int]] = field(default_factory=list)
    too_long: int = 0
    no_answer: int = 0
    sources: list[str] = field(default_factory=list)

    @classmethod
    def build(
        cls, tokenizer: Any, examples: Sequence[ChatExample], *, max_seq_length: int
    ) -> TokenizedSplit:
        split = cls()
        for example in examples:
            split.add(*example_tokens(tokenizer, example), max_seq_length=max_seq_length)
        return split

    def add(self, tokens: list[int], offset: int, *, max_seq_length: int, source: str = "") -> None:
        """One example's tokens and answer offset: kept, or counted as too long or empty."""
        if len(tokens) > max_seq_length:
            self.too_long += 1
        elif offset >= len(tokens) - 1:
            self.no_answer += 1
        else:
            self.items.append((tokens, offset))
            self.sources.append(source)

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, index: int) -> tuple[list[int], int]:
        return self.items[index]

    @property
    def total_tokens(self) -> int:
        return sum(len(tokens) for tokens, _ in self.items)


class WindowLosses:
    """Each example's summed answer-token loss and answer tokens in one validation pass
    (``LengthGroupedBatches`` with ``window_losses``): the adapter choice pairs them by file.
    An example the pass did not reach (past ``val_batches``) keeps 0 tokens."""

    def __init__(self, split: TokenizedSplit) -> None:
        self.index = {id(tokens): i for i, (tokens, _) in enumerate(split.items)}
        self.losses = np.zeros(len(split), np.float64)
        self.tokens = np.zeros(len(split), np.int64)

    def reset(self) -> None:
        self.losses[:] = 0
        self.tokens[:] = 0

    def recorder(self, rows: Sequence[Sequence[Item]]) -> Callable[[mx.array], None]:
        """What the loss calls with a batch's per-position losses (rows x answer positions,
        each row's examples' answers back to back, as ``collate_rows`` lays them)."""

        def record(losses: mx.array) -> None:
            import mlx.core as mx

            values = np.array(losses.astype(mx.float32))
            for r, row in enumerate(rows):
                at = 0
                for tokens, offset in row:
                    n = len(tokens) - offset
                    i = self.index.get(id(tokens))
                    if i is not None:
                        self.losses[i] += float(values[r, at : at + n].sum())
                        self.tokens[i] += n
                    at += n

        return record

    def pairs(self, world: World | None = None) -> list[tuple[float, int]]:
        """(loss sum, answer tokens) of each example, summed over the ranks of ``world``."""
        losses, tokens = [float(x) for x in self.losses], [float(n) for n in self.tokens]
        if world is not None:
            losses, tokens = sum_over_ranks(losses, world), sum_over_ranks(tokens, world)
        return [(loss, round(n)) for loss, n in zip(losses, tokens, strict=True)]


def collate(items: Sequence[tuple[list[int], int]]) -> tuple[mx.array, mx.array, mx.array]:
    """A padded batch: tokens (B, L+1), answer positions (B, W) and their mask (B, W)."""
    return collate_rows([[item] for item in items])[:3]  # type: ignore[return-value]


class LengthGroupedBatches:
    """mlx-lm ``iterate_batches`` replacement: batches of similar length, shuffled order.

    A step is ``batch_size`` examples of similar length; with ``pack`` they are packed into as
    few rows as they fit, or with ``share`` the tokens they all start with run once when that
    is less to compute (``packing.py``), and a step over ``max_batch_tokens`` padded tokens is
    split into micro-batches whose gradients mlx-lm accumulates: always ``steps_per_update``
    of them (filled out with empty ones), each loss weighted by the step's answer tokens, so
    the update is the one of the whole step. ``skip`` steps are passed over at the start
    (resuming replays the same order), and the real (unpadded) token count of every training
    step is kept for tokens/s.
    """

    def __init__(
        self,
        *,
        seed: int = 0,
        skip: int = 0,
        pack: bool = False,
        share: bool = False,
        max_batch_tokens: int | None = None,
        frozen: FrozenCache | None = None,
        window_losses: WindowLosses | None = None,
    ) -> None:
        self.seed = seed
        self.window_losses = window_losses  # each validation pass records into it
        self.skip = skip
        self.pack = pack
        self.share = share
        self.max_batch_tokens = max_batch_tokens or (1 << 62)
        self.frozen = frozen  # training batches then also carry their cache columns
        self.trained_tokens = 0
        self.padded_tokens = 0  # input columns x rows of the training batches
        self.rows = 0

    def _groups(self, dataset: TokenizedSplit, batch_size: int) -> list[list[int]]:
        order = sorted(range(len(dataset)), key=lambda i: len(dataset[i][0]))
        return [order[i : i + batch_size] for i in range(0, len(order), batch_size)]

    def _micro(self, items: Sequence[Item]) -> list[Layout]:
        if not items:
            return []
        rows, prefix = layout(items, pack=self.pack, share=self.share)
        return [(batch, prefix) for batch in micro_batches(rows, self.max_batch_tokens, prefix)]

    def columns_of(self, rows: list[list[Item]], prefix: int) -> tuple[Any, ...]:
        """The cache rows of the batch's columns and of its prefix (``FrozenCache``); none
        without a cache. An empty batch's are the padding's."""
        if self.frozen is None:
            return ()
        if not rows:
            return (empty_batch()[0][:, :-1], None)
        frozen = self.frozen
        columns = collate_rows([[frozen.columns(item) for item in row] for row in rows], prefix)
        return columns[0][:, :-1], columns[4]

    def steps_per_update(self, dataset: TokenizedSplit, batch_size: int, size: int = 1) -> int:
        """Micro-batches per optimizer step: the most any step needs on any rank."""
        most = 1
        for group in self._groups(dataset, batch_size):
            items = [dataset[i] for i in group]
            for rank in range(size):
                most = max(most, len(self._micro(shard(items, rank, size))))
        return most

    def __call__(
        self,
        dataset: TokenizedSplit,
        batch_size: int,
        max_seq_length: int,
        loop: bool = False,
        seed: int | None = None,
        comm_group: Any = None,
    ) -> Iterator[tuple[Any, ...]]:
        # Every rank builds the same groups in the same order and takes its shard of each.
        rank, size = (comm_group.rank(), comm_group.size()) if comm_group else (0, 1)
        groups = self._groups(dataset, batch_size)
        if not loop:  # evaluation: one (packed) batch per group, each loss a token mean
            recording = self.window_losses
            if recording is not None:
                recording.reset()
            for group in groups:
                if group[rank::size]:  # losses are summed over ranks: no repeats here
                    items = [dataset[i] for i in group[rank::size]]
                    rows, prefix = layout(items, pack=self.pack, share=self.share)
                    cached = self.frozen is not None and all(map(self.frozen.covers, items))
                    columns = self.columns_of(rows, prefix) if cached else (None, None)
                    record = recording.recorder(rows) if recording is not None else None
                    # weight None: a token mean
                    yield (*collate_rows(rows, prefix), None, *columns, record)
            return
        import mlx.core as mx

        per_update = self.steps_per_update(dataset, batch_size, size)
        skip = self.skip
        epoch = 0
        while True:
            rng = np.random.default_rng((self.seed, epoch))
            for g in rng.permutation(len(groups)):
                if skip:
                    skip -= 1
                    continue
                items = [dataset[i] for i in groups[g]]
                self.trained_tokens += sum(len(tokens) for tokens, _ in items)  # all ranks'
                answers = sum(  # all ranks' (an item a small group repeats counts twice)
                    len(tokens) - offset
                    for r in range(size)
                    for tokens, offset in shard(items, r, size)
                )
                # mlx-lm divides the summed gradients by per_update and averages over ranks
                weight = mx.array(per_update * size / answers, mx.float32)
                micro = self._micro(shard(items, rank, size))
                for rows, prefix in micro:
                    batch = collate_rows(rows, prefix)
                    self.rows += batch[0].shape[0]
                    self.padded_tokens += batch[0].shape[0] * (batch[0].shape[1] - 1) + prefix
                    yield (*batch, weight, *self.columns_of(rows, prefix))
                for _ in range(per_update - len(micro)):
                    yield (*empty_batch(), weight, *self.columns_of([], 0))
            epoch += 1


def iterations_for(n_train: int, num_epochs: int, batch_size: int) -> int:
    """The original tool's count: every example seen ``num_epochs`` times."""
    return math.ceil(n_train * num_epochs / batch_size)


def make_loss(
    model: nn.Module,
    group: Any = None,
    *,
    chunked: bool = True,
    frozen: FrozenCache | None = None,
) -> Callable[..., tuple[mx.array, mx.array]]:
    """Cross-entropy on the answer tokens, computing logits only at the answer's positions.

    With a distributed ``group``, a training step divides by the answer tokens of all ranks'
    shards (times the world size, which mlx-lm's gradient average divides out): the update is
    the one a single rank would make on the whole batch, not a mean of the shards' means.
    A training batch's ``weight`` does the same without communicating: the iterator knows every
    rank's and every micro-batch's answer tokens (``LengthGroupedBatches``). Packed rows
    (``segments``) attend within each example only (``packing.py``); a shared ``prefix`` runs
    once and, with ``chunked`` (a model ``forward_fault`` passes), rows run in query chunks
    (``forward.py``). With a ``frozen`` cache, a batch that carries its cache ``columns``
    runs only the layers after the cached ones (``FrozenCache.tail``); one without (validation)
    runs them all.
    """
    import mlx.core as mx
    import mlx.nn as nn

    head = _verified_head(model)
    chunked = chunked and chunks(model)

    def answer_loss(
        model: nn.Module,
        batch: mx.array,
        positions: mx.array,
        mask: mx.array,
        segments: mx.array | None = None,
        prefix: mx.array | None = None,
        weight: mx.array | None = None,
        columns: mx.array | None = None,
        prefix_columns: mx.array | None = None,
        record: Callable[[mx.array], None] | None = None,
    ) -> tuple[mx.array, mx.array]:
        inputs, targets = batch[:, :-1], batch[:, 1:]
        chunk = chunk_size(inputs.shape[1]) if chunked else None
        forward = model.model if head is not None else model
        if frozen is not None and head is not None and columns is not None:
            with frozen.tail(forward):
                outputs = run(
                    forward, columns, segments=segments, prefix=prefix_columns, chunk=chunk
                )
        else:
            outputs = run(forward, inputs, segments=segments, prefix=prefix, chunk=chunk)
        logits = mx.take_along_axis(outputs, positions[..., None], axis=1)
        if head is not None:
            logits = head(logits)
        answer_targets = mx.take_along_axis(targets, positions, axis=1)
        ce = nn.losses.cross_entropy(logits, answer_targets) * mask
        ntoks = mask.sum()
        if record is not None:  # a validation batch: each example's loss too (WindowLosses)
            record(ce)
        if weight is not None:  # a training micro-batch: its share of the whole step's loss
            return ce.astype(mx.float32).sum() * weight, ntoks
        if group is not None and group.size() > 1 and model.training:
            everyone = mx.stop_gradient(mx.distributed.all_sum(ntoks, group=group))
            return ce.astype(mx.float32).sum() / everyone * group.size(), ntoks
        return ce.astype(mx.float32).sum() / ntoks, ntoks

    return answer_loss


def _verified_head(model: nn.Module) -> Callable[[mx.array], mx.array] | None:
    """hidden states -> logits for the usual mlx-lm layout, checked against ``model(x)``.

    Returns None (use the full forward pass) for any model where the check fails.
    """
    import mlx.core as mx

    inner = getattr(model, "model", None)
    if inner is None:
        return None
    lm_head = model.get("lm_head")  # an nn.Module is a dict of its children
    embed = getattr(inner, "embed_tokens", None)
    project = lm_head if lm_head is not None else getattr(embed, "as_linear", None)
    if project is None:
        return None
    args = getattr(model, "args", None)
    cap = getattr(args, "final_logit_softcapping", None)

    def head(hidden: mx.array) -> mx.array:
        logits = project(hidden)
        return mx.tanh(logits / cap) * cap if cap else logits

    try:
        probe = mx.array([[1, 2, 3, 4, 5]])
        full = model(probe).astype(mx.float32)
        mine = head(inner(probe)).astype(mx.float32)
        if full.shape != mine.shape or not mx.allclose(full, mine, atol=1e-2, rtol=1e-2).item():
            return None
    except Exception:
        return None
    return head


def split_loss(
    model: nn.Module, split: TokenizedSplit, *, batch_size: int, num_batches: int = -1
) -> float:
    """Mean answer-token loss of the model on a split (mlx-lm's ``evaluate``, our batches)."""
    from mlx_lm.tuner.trainer import evaluate

    return float(
        evaluate(
            model=model,
            dataset=split,
            batch_size=min(batch_size, len(split)),
            num_batches=num_batches,
            max_seq_length=1 << 30,
            loss=make_loss(model),
            iterate_batches=LengthGroupedBatches(pack=packs(model), share=chunks(model)),
        )
    )


def packs(model: nn.Module) -> bool:
    """Whether examples can be packed into rows for ``model`` (checked once per model)."""
    return not _fault(model, "_ai_lsp_packing_fault", packing_fault)


def chunks(model: nn.Module) -> bool:
    """Whether to share prefixes and chunk rows for ``model``: not turned off (``CHUNK_ENV``
    "0") and keeping its outputs (checked once)."""
    wanted = os.environ.get(CHUNK_ENV) != "0"
    return wanted and not _fault(model, "_ai_lsp_forward_fault", forward_fault)


def _fault(model: nn.Module, name: str, check: Callable[[Any], str | None]) -> str:
    """``check(model)``'s finding ("" for none), kept on the model so it runs once."""
    fault = getattr(model, name, None)
    if fault is None:
        fault = check(model) or ""
        setattr(model, name, fault)
    return str(fault)
