"""Scoring greedy answers, the not-worse gate, and the worker's event protocol."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from ai_lsp_tune.cli.demo import sample_analyses
from ai_lsp_tune.prompts import code_of
from ai_lsp_tune.training.evaluate import (
    EvalMetrics,
    greedy_answers,
    score_answers,
)
from ai_lsp_tune.training.protocol import WORKER_EVENTS, DoneEvent, TrainingEvent
from ai_lsp_tune.wire import ProtocolMismatch, encode_line

parse_event = WORKER_EVENTS.parse


def test_answers_are_scored_for_json_schema_grounding_and_snippets() -> None:
    examples = sample_analyses(5, seed=3)  # kinds cycle: eval, time.sleep, password, except:, none
    answers = [
        examples[0].assistant,  # exactly the recorded answer
        '{"issues": [{"issue_snippet": "not in code", "severity": "error", "message": "m"}]}',
        '{"issues": [{"issue_snippet": "password", "severity": "loud", "message": "m"}]}',
        "Sure! Here are the issues:",
        '```json\n{"issues": []}\n```',
    ]
    metrics = score_answers(examples, answers, val_loss=1.5)
    assert metrics.n == 5
    assert metrics.valid_json_rate == pytest.approx(4 / 5)
    assert metrics.schema_valid_rate == pytest.approx(3 / 5)  # "loud" is no severity
    assert metrics.grounded_rate == pytest.approx(2 / 5)  # "not in code" is not in the code
    assert metrics.snippet_f1 == pytest.approx(2 / 5)  # exact answer + correct empty answer
    assert metrics.val_loss == 1.5


def test_the_code_is_read_from_the_prompt_fence() -> None:
    sample = sample_analyses(1)[0]
    assert code_of(sample.user) == sample.code


def _metrics(rate: float, loss: float | None = 1.0) -> EvalMetrics:
    return EvalMetrics(
        n=20,
        valid_json_rate=rate,
        schema_valid_rate=rate,
        grounded_rate=rate,
        snippet_f1=rate,
        val_loss=loss,
    )


def test_events_round_trip_one_json_line_each(tmp_path: object) -> None:
    event = TrainingEvent(iteration=3, total=10, train_loss=1.25, eta_s=4.0, fraction=0.4)
    line = encode_line(event)
    assert line.endswith(b"\n") and line.count(b"\n") == 1
    assert parse_event(line) == event
    done = DoneEvent(
        output_dir="o", model_path="o/model", run_json="o/run.json", after=_metrics(1.0)
    )
    assert parse_event(encode_line(done)) == done


def test_another_protocol_version_is_refused() -> None:
    line = TrainingEvent(iteration=1, total=2).model_dump_json().replace('"v":1', '"v":99')
    with pytest.raises(ProtocolMismatch, match="v99"):
        parse_event(line)
    with pytest.raises(ValueError):
        parse_event(b'{"phase": "nonsense"}')


@pytest.mark.training
def test_greedy_answers_report_each_finished_answer_and_match_mlx_lm(tiny_model: Path) -> None:
    """Evaluation progress moves per example ("evaluating 3/6"), not 0/6 then 6/6."""
    from mlx_lm import load
    from mlx_lm.generate import batch_generate

    from ai_lsp_tune.prompts import prompt_tokens

    model, tokenizer = load(str(tiny_model))
    examples = sample_analyses(6, seed=1)
    heard: list[tuple[int, int]] = []
    answers = greedy_answers(
        model, tokenizer, examples, max_tokens=24, on_progress=lambda d, t: heard.append((d, t))
    )
    assert heard == [(done, 6) for done in range(1, 7)]
    prompts = [prompt_tokens(tokenizer, e.system, e.user) for e in examples]
    assert answers == batch_generate(model, tokenizer, prompts, max_tokens=24).texts


@pytest.mark.training
def test_served_answers_reuse_the_system_prompt_and_answer_as_without(tiny_model: Path) -> None:
    """The shared start of the prompts is computed once; the answers are those decoded alone."""
    from mlx_lm import load

    from ai_lsp_tune.decoding.decode import decode_answer
    from ai_lsp_tune.prompts import prompt_tokens
    from ai_lsp_tune.training.evaluate import served_answers

    model, tokenizer = load(str(tiny_model))
    examples = sample_analyses(4, seed=2)
    answers = served_answers(model, tokenizer, examples, grammar=None, max_tokens=24)
    alone = [
        decode_answer(model, tokenizer, prompt_tokens(tokenizer, e.system, e.user), 24).text
        for e in examples
    ]
    assert answers == alone


@pytest.mark.training
def test_served_answers_under_the_grammar_decode_in_batches_as_alone(tiny_model: Path) -> None:
    """Batched constrained answers are those the model host decodes one at a time: each prompt
    keeps its own grammar state (a shared one would corrupt the others' JSON), grounded in its
    own code as the host grounds it."""
    from mlx_lm import load

    from ai_lsp_tune.decoding.decode import decode_answer
    from ai_lsp_tune.prompts import prompt_tokens
    from ai_lsp_tune.training.evaluate import served_answers, serving_grammar

    model, tokenizer = load(str(tiny_model))
    grammar, why = serving_grammar(model, tokenizer)
    assert grammar is not None, why
    examples = sample_analyses(5, seed=3)
    answers = served_answers(model, tokenizer, examples, grammar=grammar, max_tokens=40, batch=3)
    alone = [
        decode_answer(
            model,
            tokenizer,
            prompt_tokens(tokenizer, e.system, e.user),
            40,
            grammar=grammar.for_prompt(e.user),
        ).text
        for e in examples
    ]
    assert answers == alone
    assert all(json.loads(a) is not None for a in answers)
