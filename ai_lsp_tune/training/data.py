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
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np

from ai_lsp_tune.prompts import chat_messages, prompt_tokens, render_chat
from ai_lsp_tune.training.distributed import shard

if TYPE_CHECKING:
    import mlx.core as mx
    import mlx.nn as nn

    from ai_lsp_tune.dataset.chunks import Example

PAD_TO = 32  # sequence lengths are rounded up to this, so compiled step shapes repeat


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


def crop_to_fit(
    tokenizer: Any, examples: Sequence[Example], *, max_seq_length: int
) -> tuple[list[Example], int, int]:
    """Examples longer than ``max_seq_length`` replaced by windows of their code that fit,
    answers whole; with how many were cropped and how many could not be (left in, too long)."""
    from ai_lsp_tune.dataset.crop import crop_example
    from ai_lsp_tune.schema import parse_json_text

    def count(messages: list[dict[str, str]]) -> int:
        return len(render_chat(tokenizer, messages, add_generation_prompt=False))

    out: list[Example] = []
    cropped = failed = 0
    for example in examples:
        tokens, _ = example_tokens(tokenizer, example)
        if len(tokens) <= max_seq_length:
            out.append(example)
            continue
        try:
            result = parse_json_text(example.assistant)
        except ValueError:
            result = None
        crops = None
        if isinstance(result, dict):
            crops = crop_example(example.system, example.user, result, count, max_seq_length)
        if not crops:
            failed += 1
            out.append(example)  # TokenizedSplit counts it as too long
            continue
        cropped += 1
        out.extend(
            example.model_copy(update={"user": c.user, "assistant": c.assistant}) for c in crops
        )
    return out, cropped, failed


@dataclass
class TokenizedSplit:
    """One split as (tokens, answer offset) pairs; too-long and empty examples are skipped."""

    items: list[tuple[list[int], int]] = field(default_factory=list)
    too_long: int = 0
    no_answer: int = 0

    @classmethod
    def build(
        cls, tokenizer: Any, examples: Sequence[ChatExample], *, max_seq_length: int
    ) -> TokenizedSplit:
        split = cls()
        for example in examples:
            tokens, offset = example_tokens(tokenizer, example)
            if len(tokens) > max_seq_length:
                split.too_long += 1
            elif offset >= len(tokens) - 1:
                split.no_answer += 1
            else:
                split.items.append((tokens, offset))
        return split

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, index: int) -> tuple[list[int], int]:
        return self.items[index]

    @property
    def total_tokens(self) -> int:
        return sum(len(tokens) for tokens, _ in self.items)


def collate(items: Sequence[tuple[list[int], int]]) -> tuple[mx.array, mx.array, mx.array]:
    """A padded batch: tokens (B, L+1), answer positions (B, W) and their mask (B, W)."""
    import mlx.core as mx

    longest = max(len(tokens) for tokens, _ in items)
    width = 1 + PAD_TO * math.ceil((longest - 1) / PAD_TO)
    answer = max(len(tokens) - offset for tokens, offset in items)
    answer_width = min(width - 1, PAD_TO * math.ceil(answer / PAD_TO))
    batch = np.zeros((len(items), width), np.int32)
    positions = np.zeros((len(items), answer_width), np.int32)
    mask = np.zeros((len(items), answer_width), np.bool_)
    steps = np.arange(answer_width)
    for row, (tokens, offset) in enumerate(items):
        batch[row, : len(tokens)] = tokens
        # position p predicts token p + 1: the answer's tokens offset..len-1
        positions[row] = np.minimum(offset - 1 + steps, width - 2)
        mask[row] = steps < len(tokens) - offset
    return mx.array(batch), mx.array(positions), mx.array(mask)


class LengthGroupedBatches:
    """mlx-lm ``iterate_batches`` replacement: batches of similar length, shuffled order.

    ``skip`` batches are passed over at the start (resuming replays the same order), and the
    real (unpadded) token count of every training batch is kept for tokens/s.
    """

    def __init__(self, *, seed: int = 0, skip: int = 0) -> None:
        self.seed = seed
        self.skip = skip
        self.trained_tokens = 0

    def __call__(
        self,
        dataset: TokenizedSplit,
        batch_size: int,
        max_seq_length: int,
        loop: bool = False,
        seed: int | None = None,
        comm_group: Any = None,
    ) -> Iterator[tuple[mx.array, mx.array, mx.array]]:
        # Every rank builds the same groups in the same order and takes its shard of each.
        rank, size = (comm_group.rank(), comm_group.size()) if comm_group else (0, 1)
        order = sorted(range(len(dataset)), key=lambda i: len(dataset[i][0]))
        groups = [order[i : i + batch_size] for i in range(0, len(order), batch_size)]
        if not loop:
            for group in groups:
                if group[rank::size]:  # losses are summed over ranks: no repeats here
                    yield collate([dataset[i] for i in group[rank::size]])
            return
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
                yield collate(shard(items, rank, size))
            epoch += 1


def iterations_for(n_train: int, num_epochs: int, batch_size: int) -> int:
    """The original tool's count: every example seen ``num_epochs`` times."""
    return math.ceil(n_train * num_epochs / batch_size)


def make_loss(model: nn.Module, group: Any = None) -> Callable[..., tuple[mx.array, mx.array]]:
    """Cross-entropy on the answer tokens, computing logits only at the answer's positions.

    With a distributed ``group``, a training step divides by the answer tokens of all ranks'
    shards (times the world size, which mlx-lm's gradient average divides out): the update is
    the one a single rank would make on the whole batch, not a mean of the shards' means.
    """
    import mlx.core as mx
    import mlx.nn as nn

    head = _verified_head(model)

    def answer_loss(
        model: nn.Module, batch: mx.array, positions: mx.array, mask: mx.array
    ) -> tuple[mx.array, mx.array]:
        inputs, targets = batch[:, :-1], batch[:, 1:]
        if head is not None:
            hidden = model.model(inputs)
            logits = head(mx.take_along_axis(hidden, positions[..., None], axis=1))
        else:
            logits = mx.take_along_axis(model(inputs), positions[..., None], axis=1)
        answer_targets = mx.take_along_axis(targets, positions, axis=1)
        ce = nn.losses.cross_entropy(logits, answer_targets) * mask
        ntoks = mask.sum()
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
            iterate_batches=LengthGroupedBatches(),
        )
    )
