"""Is the model any good at the task? Greedy answers to test prompts, scored against the schema.

Metrics: the share of answers that are valid JSON, that are a valid DiagnosticResult, whose
issue snippets all occur in the analysed code ("grounded"), the issue-snippet F1 against the
recorded answers, issue-level precision/recall/F1 against them (``agreement``: located by line,
counted per file), file-level "has an issue" agreement, and the loss on the same examples.
MLX is imported only inside functions, so the language server can import ``EvalMetrics`` and
``not_worse`` cheaply.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel, ConfigDict

from ai_lsp_tune.prompts import code_of, prompt_tokens
from ai_lsp_tune.schema import (
    InvalidModelOutput,
    parse_diagnostic_result,
    parse_json_text,
    snippets_grounded,
)
from ai_lsp_tune.training.agreement import (
    F1Difference,
    IssueCounts,
    by_file,
    count_issues,
    file_key,
    paired_bootstrap,
    total,
)

if TYPE_CHECKING:  # data imports numpy: its BLAS threads must not start before the worker
    # blocks its stop signals (training/worker.py), so evaluate does not import it at run time
    import mlx.nn as nn

    from ai_lsp_tune.decoding.grammar import AnswerGrammar
    from ai_lsp_tune.training.data import ChatExample

# A candidate is "not worse" (non-inferior) when the 95 % interval of F1(candidate) −
# F1(current), paired over test files, lies at or above −GATE_F1_MARGIN.
GATE_F1_MARGIN = 0.05


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
    # Issue-level agreement with the recorded (teacher's) answers, see ``training.agreement``.
    issue_precision: float | None = None
    issue_recall: float | None = None
    issue_f1: float | None = None
    file_agreement: float | None = None  # share of files where "has an issue" agrees
    files: dict[str, tuple[int, int, int]] | None = None  # matched, predicted, expected
    answers: list[str] | None = None  # the scored answers, in the examples' order (run.json)
    seconds: float | None = None  # how long the evaluation took (loss and answers)
    # Set on the candidate's metrics: F1 minus the served model's, and its 95 % interval.
    f1_difference: float | None = None
    f1_difference_low: float | None = None
    f1_difference_high: float | None = None

    def file_counts(self) -> dict[str, IssueCounts]:
        return {k: IssueCounts(*v) for k, v in (self.files or {}).items()}

    @property
    def test_files(self) -> int:
        return len(self.files or {})


# How each metric is named and shown, in the CLI's table and the editor's messages alike:
# (EvalMetrics field, label, shown as a percentage).
METRIC_LABELS = (
    ("valid_json_rate", "valid JSON", True),
    ("unconstrained_valid_json_rate", "unconstrained JSON", True),
    ("schema_valid_rate", "schema-valid", True),
    ("grounded_rate", "grounded", True),
    ("issue_precision", "issue precision", False),
    ("issue_recall", "issue recall", False),
    ("issue_f1", "issue F1", False),
    ("file_agreement", "has-issue agreement", True),
    ("snippet_f1", "snippet F1", False),
    ("val_loss", "val loss", False),
)


def format_metric(value: float, as_percent: bool) -> str:
    """``95%`` for a rate, ``0.72`` for a score or a loss."""
    return f"{value:.0%}" if as_percent else f"{value:.2f}"


def compare(candidate: EvalMetrics, current: EvalMetrics) -> EvalMetrics:
    """The candidate's metrics with its F1 difference to the current model's, paired by file."""
    diff: F1Difference = paired_bootstrap(candidate.file_counts(), current.file_counts())
    if not diff.files:
        return candidate  # nothing in common to compare on
    return candidate.model_copy(
        update={
            "f1_difference": diff.difference,
            "f1_difference_low": diff.low,
            "f1_difference_high": diff.high,
        }
    )


def not_worse(candidate: EvalMetrics, current: EvalMetrics) -> bool:
    """Should the candidate replace the current model? Only if its issue F1 is shown not to be
    lower by more than GATE_F1_MARGIN: the interval's lower end is at or above −GATE_F1_MARGIN."""
    if candidate.f1_difference_low is None:
        candidate = compare(candidate, current)
    if candidate.f1_difference_low is None:
        return False  # no test file scored for both: unmeasured is not proven
    return candidate.f1_difference_low >= -GATE_F1_MARGIN


def f1_summary(metrics: EvalMetrics) -> str:
    """``issue F1 0.52 (+0.31, 95% CI +0.12..+0.48)``: one line for messages and model lists."""
    if metrics.issue_f1 is None:
        return f"snippet F1 {metrics.snippet_f1:.2f}"
    text = f"issue F1 {metrics.issue_f1:.2f}"
    if metrics.f1_difference is not None:
        text += (
            f" ({metrics.f1_difference:+.2f}, 95% CI {metrics.f1_difference_low:+.2f}.."
            f"{metrics.f1_difference_high:+.2f})"
        )
    return text


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
    rows: list[tuple[str, IssueCounts]] = []
    for example, answer in zip(examples, answers, strict=True):
        code = code_of(example.user)
        try:
            teacher = [i.issue_snippet for i in parse_diagnostic_result(example.assistant).issues]
        except InvalidModelOutput:
            teacher = []
        predicted: list[str] = []  # an invalid answer raises nothing the editor could show
        try:
            parse_json_text(answer)
            valid_json += 1
            result = parse_diagnostic_result(answer)
            schema_valid += 1
            grounded += snippets_grounded(result, code)
            predicted = [issue.issue_snippet for issue in result.issues]
            f1_total += _f1(set(predicted), set(teacher))
        except (json.JSONDecodeError, InvalidModelOutput):
            pass
        rows.append((file_key(example.user), count_issues(predicted, teacher, code)))
    rate = (lambda k: k / n) if n else (lambda k: 0.0)
    files = by_file(rows)
    summed = total(files)
    agree = sum((c.predicted > 0) == (c.expected > 0) for c in files.values())
    return EvalMetrics(
        n=n,
        valid_json_rate=rate(valid_json),
        schema_valid_rate=rate(schema_valid),
        grounded_rate=rate(grounded),
        snippet_f1=rate(f1_total),  # type: ignore[arg-type]
        val_loss=val_loss,
        issue_precision=summed.precision,
        issue_recall=summed.recall,
        issue_f1=summed.f1,
        file_agreement=agree / len(files) if files else 0.0,
        files={k: (c.matched, c.predicted, c.expected) for k, c in files.items()},
        answers=list(answers),
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
    batch: int = 16,
    grounded: bool = True,
) -> list[str]:
    """The answers the model host would serve: the same greedy decoding under the same grammar
    (``grounded``, as the host does: each analysis's snippets limited to its code).

    Under a grammar, ``batch`` prompts decode together, each with its own grammar state (a
    decode step reads all the weights whatever the batch: on a CPU that is most of its cost).
    Otherwise one at a time, the prompts' common start (the system prompt, rendered) computed
    once and reused, as the model host does."""
    from mlx_lm.models.cache import can_trim_prompt_cache, make_prompt_cache, trim_prompt_cache

    from ai_lsp_tune.decoding.decode import common_start, decode_answer

    prompts = [prompt_tokens(tokenizer, e.system, e.user) for e in examples]
    grammars = [
        grammar.for_prompt(e.user) if grammar is not None and grounded else grammar
        for e in examples
    ]
    if grammar is not None and batch > 1:
        answers: list[str] = []
        for start in range(0, len(prompts), batch):
            if should_stop is not None and should_stop():
                break
            chunk = prompts[start : start + batch]

            def finished(count: int, base: int = len(answers)) -> None:
                if on_progress is not None:
                    on_progress(base + count, len(examples))

            chosen = grammars[start : start + batch]
            masks = [[g.logits_processor(max_tokens)] for g in chosen if g is not None]
            answers += _batch_answers(model, tokenizer, chunk, max_tokens, finished, masks)
        return answers
    prefix = prompts[0][: common_start(prompts)] if prompts else []
    cache = make_prompt_cache(model) if len(prefix) > 1 else None
    if cache is not None and can_trim_prompt_cache(cache):
        import mlx.core as mx

        model(mx.array(prefix)[None], cache=cache)
        mx.eval([c.state for c in cache])
    else:
        cache, prefix = None, []
    answers = []
    for prompt, grammar in zip(prompts, grammars, strict=True):
        if should_stop is not None and should_stop():
            break
        if cache is None:
            answer = decode_answer(model, tokenizer, prompt, max_tokens, grammar=grammar)
        else:
            try:
                answer = decode_answer(
                    model,
                    tokenizer,
                    prompt[len(prefix) :],
                    max_tokens,
                    grammar=grammar,
                    prompt_cache=cache,
                )
            finally:
                trim_prompt_cache(cache, cache[0].offset - len(prefix))
        answers.append(answer.text)
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
    chunk: int = 16,
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
    processors: list[list[Any]] | None = None,
) -> list[str]:
    """mlx-lm's ``batch_generate``, telling ``finished`` how many answers are complete so far;
    ``processors``: each prompt's logits processors (its grammar). The prompts are prefilled
    first (``prefilled_caches``: no padding, the system prompt once), all decode together."""
    from mlx_lm.generate import BatchGenerator

    from ai_lsp_tune.decoding.decode import prefilled_caches

    generator = BatchGenerator(
        model,
        stop_tokens=[[t] for t in tokenizer.eos_token_ids],
        prefill_batch_size=max(len(prompts), 1),
    )
    try:
        uids = generator.insert(
            [p[-1:] for p in prompts],
            [max_tokens] * len(prompts),
            caches=prefilled_caches(model, prompts),
            logits_processors=processors,
        )
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
