"""A run's inputs: the dataset's examples checked and tokenized, and the batch size and
evaluation split that fit them; each problem is a warning event or a ``bad_dataset`` error.
The hyper-parameters are fitted to the model too (``fit_layers``, ``check_fits``).

Examples are cropped once, by the dataset (``dataset.crop``): a split folder's rows are used as
``prepare-dataset`` wrote them and tokenized once. Only an example the model's tokenizer counts
over ``--max-seq-length`` goes to the dataset's ``fit_examples``: a dataset.json's whole ones,
and a row whose window was sized with the token estimate (``prepare-dataset`` without
``--tokenizer``) or for a larger limit. Leaving such a row out would lose it: SmolLM2's
tokenizer counts 246 of 1,066 estimate-sized windows over the limit (bench/RESULTS.md).
"""

from __future__ import annotations

from typing import Any

from ai_lsp_tune.dataset.crop import fit_examples
from ai_lsp_tune.dataset.example import Example
from ai_lsp_tune.prompts import render_chat
from ai_lsp_tune.training.agreement import file_key
from ai_lsp_tune.training.channel import EventChannel, WorkerError
from ai_lsp_tune.training.data import TokenizedSplit, example_tokens
from ai_lsp_tune.training.protocol import TrainRequest, WarningEvent, at
from ai_lsp_tune.training.splits import (
    BadDataset,
    InvalidAnswers,
    drop_invalid_answers,
    load_splits,
)


def load_dataset(
    request: TrainRequest, channel: EventChannel
) -> tuple[dict[str, list[Example]], InvalidAnswers]:
    """The examples whose answers are DiagnosticResults; checked before the model is loaded."""
    try:
        splits = load_splits(request.dataset)
    except BadDataset as exc:
        raise WorkerError("bad_dataset", str(exc)) from exc
    total = sum(len(examples) for examples in splits.values())
    if total == 0:
        raise WorkerError(
            "bad_dataset",
            f"Dataset {request.dataset} has no examples; record some analyses first, then run "
            "`ai-lsp finetune prepare-dataset`.",
        )
    splits, invalid = drop_invalid_answers(splits)
    if invalid.total == total:
        raise WorkerError(
            "bad_dataset",
            f"None of the {total} examples in {request.dataset} has an answer that is a "
            f"DiagnosticResult (first: {invalid.first_reason}); the assistant fields must be "
            "the analysis JSON that `ai-lsp finetune prepare-dataset` writes.",
        )
    if invalid.total:
        channel.emit(
            WarningEvent(
                message=f"Skipped {invalid.total} of {total} examples whose answer is not a "
                f"DiagnosticResult (first: {invalid.first_reason}).",
                count=invalid.total,
                fraction=at("loading", 0.1),
            )
        )
    return splits, invalid


def tokenized(
    request: TrainRequest,
    tokenizer: Any,
    splits: dict[str, list[Example]],
    invalid: InvalidAnswers,
    channel: EventChannel,
) -> dict[str, Any]:
    """Every split tokenized, an example over ``max_seq_length`` cropped by the dataset's
    ``fit_examples``; no training example left is a ``bad_dataset`` error."""
    limit = request.max_seq_length
    total = sum(len(examples) for examples in splits.values())
    tokenized: dict[str, TokenizedSplit] = {}
    cropped: dict[str, int] = {}
    for name in ("train", "valid", "test"):
        splits[name], tokenized[name], cropped[name] = _fit_split(
            tokenizer, splits.get(name, []), limit
        )
    too_long = sum(s.too_long for s in tokenized.values())
    if sum(cropped.values()):
        why = (
            ""
            if not request.dataset.is_dir()
            else " (the splits' windows were sized for a larger --max-seq-length or with the "
            "token estimate, not the model's tokenizer)"
        )
        channel.emit(
            WarningEvent(
                message=f"Cropped {sum(cropped.values())} of {total} examples longer than "
                f"--max-seq-length {limit} tokens to windows of their code around their "
                f"issues{why}.",
                count=sum(cropped.values()),
                fraction=at("loading", 0.8),
            )
        )
    if too_long:
        channel.emit(
            WarningEvent(
                message=f"Left out {too_long} of {total} examples longer than --max-seq-length "
                f"{limit} tokens that no window can hold (an issue snippet alone is too long).",
                count=too_long,
                fraction=at("loading", 0.8),
            )
        )
    if not tokenized["train"]:
        raise WorkerError(
            "bad_dataset",
            f"No training examples left in {request.dataset} ({too_long} longer than "
            f"--max-seq-length {request.max_seq_length}, {invalid.by_split.get('train', 0)} "
            "with an answer that is not a DiagnosticResult); raise --max-seq-length or add "
            "examples.",
        )
    return {
        "splits": splits,
        "tokens": tokenized,
        "invalid_answers": invalid.by_split,
        "cropped": cropped,
    }


def _fit_split(
    tokenizer: Any, examples: list[Example], limit: int
) -> tuple[list[Example], TokenizedSplit, int]:
    """A split's examples as trained (in order, windows where a cropped one stood), each
    tokenized once, and how many were cropped."""

    def count(messages: list[dict[str, str]]) -> int:  # as example_tokens renders them
        return len(render_chat(tokenizer, messages, add_generation_prompt=False))

    kept: list[Example] = []
    split, cropped = TokenizedSplit(), 0
    for example in examples:
        tokens, offset = example_tokens(tokenizer, example)
        source = file_key(example.user)  # the validation pairs losses by file
        if len(tokens) <= limit:
            kept.append(example)
            split.add(tokens, offset, max_seq_length=limit, source=source)
            continue
        windows, was_cropped = fit_examples([example], count, limit)
        cropped += was_cropped
        for window in windows:  # the example itself when it cannot be cropped: too long
            kept.append(window)
            split.add(*example_tokens(tokenizer, window), max_seq_length=limit, source=source)
    return kept, split, cropped


def fit_batch_size(request: TrainRequest, n_train: int, channel: EventChannel) -> TrainRequest:
    """A batch no larger than the training split (a first fine-tune has few examples)."""
    if request.batch_size <= n_train:
        return request
    only = "is only 1 training example" if n_train == 1 else f"are only {n_train} training examples"
    channel.emit(
        WarningEvent(
            message=f"Lowered --batch-size from {request.batch_size} to {n_train}: there {only}.",
            fraction=at("loading", 0.9),
        )
    )
    return request.model_copy(update={"batch_size": n_train})


def evaluation_split(data: dict[str, Any], channel: EventChannel) -> str:
    """The split the model is scored on: test, else valid, else train (with a warning)."""
    for name, why in (("test", ""), ("valid", "no test split"), ("train", "no test/valid split")):
        if len(data["tokens"][name]):
            if why:
                channel.emit(WarningEvent(message=f"Evaluating on the {name} split ({why})."))
            return name
    return "train"


def fit_layers(model: Any, request: TrainRequest) -> tuple[TrainRequest, str | None]:
    """More layers asked for than the model has means all of them (as ``mlx_lm lora`` does).

    Returns the request to train with and, when it changed, the line that says so.
    """
    layers = len(model.layers)
    if request.num_layers <= layers:
        return request, None
    note = (
        f"num_layers {request.num_layers} is more than the {layers} layers of "
        f"{request.model_name}: adapting all {layers} layers"
    )
    return request.model_copy(update={"num_layers": layers}), note


def check_fits(model: Any, request: TrainRequest) -> None:
    """Refuse hyper-parameters the model cannot take, before anything expensive runs."""
    hidden = getattr(getattr(model, "args", None), "hidden_size", None)
    if isinstance(hidden, int) and request.lora_rank > hidden:
        raise WorkerError(
            "bad_hyperparameter",
            f"--lora-rank {request.lora_rank} is more than the hidden size {hidden} of "
            f"{request.model_name}, the most a LoRA update of its layers can use; pass "
            f"--lora-rank {hidden} or less.",
        )
