"""Is the model any good at the task? Greedy answers to test prompts, scored against the schema.

Metrics: the share of answers that are valid JSON, that are a valid DiagnosticResult, whose
issue snippets all occur in the analysed code ("grounded"), the issue-snippet F1 against the
recorded answers, and the loss on the same examples. MLX is imported only inside functions, so
the language server can import ``EvalMetrics`` and ``not_worse`` cheaply.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel, ConfigDict

from ai_lsp_tune.prompts import code_of, prompt_tokens
from ai_lsp_tune.schema import (
    DiagnosticResult,
    InvalidModelOutput,
    parse_diagnostic_result,
    parse_json_text,
    snippets_grounded,
)

if TYPE_CHECKING:  # data imports numpy: its BLAS threads must not start before the worker
    # blocks its stop signals (training/worker.py), so evaluate does not import it at run time
    import mlx.nn as nn

    from ai_lsp_tune.decoding.grammar import AnswerGrammar
    from ai_lsp_tune.training.data import ChatExample

# A candidate may trail the current model by this much on a rate and still be "not worse":
# test sets are small, one example is often several percent.
NOT_WORSE_TOLERANCE = 0.05


class EvalMetrics(BaseModel):
    """Scores of one model on one set of test prompts (rates are 0..1)."""

    model_config = ConfigDict(frozen=True)

    n: int
    valid_json_rate: float
    schema_valid_rate: float
    grounded_rate: float
    snippet_f1: float
    val_loss: float | None = None
    # With constrained decoding the rates above are of answers decoded under the grammar (as
    # served); this one is of free greedy answers: how much JSON the model writes on its own.
    unconstrained_valid_json_rate: float | None = None


# How each metric is named and shown, in the CLI's table and the editor's messages alike:
# (EvalMetrics field, label, shown as a percentage).
METRIC_LABELS = (
    ("valid_json_rate", "valid JSON", True),
    ("unconstrained_valid_json_rate", "unconstrained JSON", True),
    ("schema_valid_rate", "schema-valid", True),
    ("grounded_rate", "grounded", True),
    ("snippet_f1", "snippet F1", False),
    ("val_loss", "val loss", False),
)


def format_metric(value: float, as_percent: bool) -> str:
    """``95%`` for a rate, ``0.72`` for a score or a loss."""
    return f"{value:.0%}" if as_percent else f"{value:.2f}"


def not_worse(candidate: EvalMetrics, current: EvalMetrics) -> bool:
    """Should the candidate replace the current model? Not if it scores clearly lower."""
    for name in ("schema_valid_rate", "grounded_rate", "snippet_f1"):
        if getattr(candidate, name) < getattr(current, name) - NOT_WORSE_TOLERANCE:
            return False
    if candidate.val_loss is not None and current.val_loss is not None:
        return candidate.val_loss <= current.val_loss * (1 + NOT_WORSE_TOLERANCE)
    return True


def _snippets(result: DiagnosticResult) -> set[str]:
    return {issue.issue_snippet for issue in result.issues}


def _f1(predicted: set[str], expected: set[str]) -> float:
    if not predicted and not expected:
        return 1.0
    hits = len(predicted & expected)
    if hits == 0:
        return 0.0
    precision, recall = hits / len(predicted), hits / len(expected)
    return 2 * precision * recall / (precision + recall)


def score_answers(
    examples: Sequence[ChatExample], answers: Sequence[str], val_loss: float | None = None
) -> EvalMetrics:
    """Score model answers against the examples' prompts and recorded answers."""
    n = len(answers)
    valid_json = schema_valid = grounded = 0
    f1_total = 0.0
    for example, answer in zip(examples, answers, strict=True):
        try:
            parse_json_text(answer)
            valid_json += 1
            result = parse_diagnostic_result(answer)
        except (json.JSONDecodeError, InvalidModelOutput):
            continue
        schema_valid += 1
        grounded += snippets_grounded(result, code_of(example.user))
        try:
            expected = _snippets(parse_diagnostic_result(example.assistant))
        except InvalidModelOutput:
            expected = set()
        f1_total += _f1(_snippets(result), expected)
    rate = (lambda k: k / n) if n else (lambda k: 0.0)
    return EvalMetrics(
        n=n,
        valid_json_rate=rate(valid_json),
        schema_valid_rate=rate(schema_valid),
        grounded_rate=rate(grounded),
        snippet_f1=rate(f1_total),  # type: ignore[arg-type]
        val_loss=val_loss,
    )


def valid_json_rate(answers: Sequence[str]) -> float:
    """The share of answers that parse as JSON."""
    valid = 0
    for answer in answers:
        try:
            parse_json_text(answer)
        except json.JSONDecodeError:
            continue
        valid += 1
    return valid / len(answers) if answers else 0.0


def served_answers(
    model: nn.Module,
    tokenizer: Any,
    examples: Sequence[ChatExample],
    *,
    grammar: AnswerGrammar | None,
    max_tokens: int = 512,
    on_progress: Callable[[int, int], None] | None = None,
    should_stop: Callable[[], bool] | None = None,
) -> list[str]:
    """The answers the model host would serve: the same decoding (``serving.decode``)."""
    from ai_lsp_tune.decoding.decode import decode_answer

    answers: list[str] = []
    for example in examples:
        if should_stop is not None and should_stop():
            break
        prompt = prompt_tokens(tokenizer, example.system, example.user)
        answers.append(decode_answer(model, tokenizer, prompt, max_tokens, grammar=grammar).text)
        if on_progress is not None:
            on_progress(len(answers), len(examples))
    return answers


def serving_grammar(model: nn.Module, tokenizer: Any) -> tuple[AnswerGrammar | None, str | None]:
    """The answer grammar the model host would use for this model, or why there is none."""
    from ai_lsp_tune.decoding.decode import model_vocab_size
    from ai_lsp_tune.decoding.grammar import GrammarUnavailable, answer_grammar

    try:
        return answer_grammar(tokenizer, model_vocab_size(model)), None
    except GrammarUnavailable as exc:
        return None, exc.reason


def greedy_answers(
    model: nn.Module,
    tokenizer: Any,
    examples: Sequence[ChatExample],
    *,
    max_tokens: int = 512,
    chunk: int = 8,
    on_progress: Callable[[int, int], None] | None = None,
    should_stop: Callable[[], bool] | None = None,
) -> list[str]:
    """Free (unconstrained) greedy answers to each example's prompt, a few prompts at a time.

    ``on_progress`` hears of every answer as it finishes, not once per batch of prompts.
    """
    answers: list[str] = []
    for start in range(0, len(examples), chunk):
        if should_stop is not None and should_stop():
            break
        batch = examples[start : start + chunk]
        prompts = [prompt_tokens(tokenizer, e.system, e.user) for e in batch]

        def finished(count: int, base: int = len(answers)) -> None:
            if on_progress is not None:
                on_progress(base + count, len(examples))

        answers += _batch_answers(model, tokenizer, prompts, max_tokens, finished)
    return answers


def _batch_answers(
    model: nn.Module,
    tokenizer: Any,
    prompts: list[list[int]],
    max_tokens: int,
    finished: Callable[[int], None],
) -> list[str]:
    """mlx-lm's ``batch_generate``, telling ``finished`` how many answers are complete so far."""
    from mlx_lm.generate import BatchGenerator

    generator = BatchGenerator(model, stop_tokens=[[t] for t in tokenizer.eos_token_ids])
    try:
        uids = generator.insert(prompts, [max_tokens] * len(prompts))
        tokens: dict[int, list[int]] = {uid: [] for uid in uids}
        done = 0
        while responses := generator.next_generated():
            for response in responses:
                if response.finish_reason != "stop":
                    tokens[response.uid].append(response.token)
                if response.finish_reason is not None:
                    done += 1
                    finished(done)
    finally:
        generator.close()
    return [tokenizer.decode(tokens[uid]) for uid in uids]


def evaluate_model_path(
    model_path: str | Path,
    examples: Sequence[ChatExample],
    *,
    max_tokens: int = 512,
    constrained: bool = True,
) -> EvalMetrics:
    """Load a model (folder, GGUF or hub name) and score the answers it would serve on
    ``examples``."""
    from ai_lsp_tune.models.load import load_model
    from ai_lsp_tune.training.data import TokenizedSplit, split_loss

    model, tokenizer, _, _ = load_model(str(model_path))
    grammar = serving_grammar(model, tokenizer)[0] if constrained else None
    free = greedy_answers(model, tokenizer, examples, max_tokens=max_tokens)
    answers = (
        served_answers(model, tokenizer, examples, grammar=grammar, max_tokens=max_tokens)
        if grammar is not None
        else free
    )
    split = TokenizedSplit.build(tokenizer, examples, max_seq_length=1 << 30)
    loss = split_loss(model, split, batch_size=1) if len(split) else None
    metrics = score_answers(examples, answers, val_loss=loss)
    return metrics.model_copy(update={"unconstrained_valid_json_rate": valid_json_rate(free)})
