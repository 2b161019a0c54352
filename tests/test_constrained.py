"""Constrained decoding: a random, untrained local model still answers valid DiagnosticResults."""

from __future__ import annotations

from pathlib import Path

import pytest
from lsprotocol import types

from ai_lsp_tune.traces import genai, otlp
from ai_lsp_tune.traces.telemetry import default_trace_file
from tests.helpers.lsp_session import Session, start_session, stop_session

ANALYSES = 50


def document(number: int) -> str:
    """Small, varied documents: the model sees a different prompt each time."""
    lines = [f"def handler_{number}(items, key={number}):"]
    lines += [f"    value_{i} = items[{i}] * {number + i}" for i in range(number % 7 + 1)]
    lines.append(f"    return eval(str(value_0)) if key else {number}")
    return "\n".join(lines) + "\n"


async def analyse_documents(
    workspace: Path, model: Path, home: Path, count: int, **settings: object
) -> tuple[Session, list[genai.AnalysisRecord]]:
    s = await start_session(
        workspace,
        env={"AI_LSP_HOME": str(home), "AI_LSP_MODEL": str(model)},
        init_options={"aiLsp": {"debounceMs": 0, **settings}},
    )
    try:
        uris = [s.open(f"m{n}.py", document(n)) for n in range(count)]
        for uri in uris:
            await s.wait_for_diagnostics(uri, timeout_s=300)
    finally:
        await stop_session(s)
    spans = list(otlp.read_spans([default_trace_file(workspace)], otlp.ReadReport()))
    records = [
        genai.analysis_from_attributes(sp.attributes)
        for sp in spans
        if genai.is_analysis_span(sp.name, sp.attributes)
    ]
    return s, records


def warnings_shown(s: Session) -> list[str]:
    return [m.message for m in s.client.messages if m.type == types.MessageType.Warning]


@pytest.mark.model
@pytest.mark.parametrize("tokenizer", ["merged across spaces", "words split first"])
async def test_an_untrained_model_answers_valid_diagnostic_results_first_time(
    tokenizer: str,
    tmp_path: Path,
    tiny_model: Path,
    tiny_model_word_split: Path,
    isolated_home: Path,
) -> None:
    model = tiny_model if tokenizer == "merged across spaces" else tiny_model_word_split
    workspace = tmp_path / "ws"
    workspace.mkdir()
    s, records = await analyse_documents(workspace, model, isolated_home, ANALYSES, maxTokens=96)

    assert len(records) == ANALYSES
    assert [r.error for r in records if not r.valid] == []
    assert all(r.attempts == 1 for r in records)  # no retry was needed
    assert warnings_shown(s) == []


@pytest.fixture(scope="module")
def model_llguidance_rejects(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A model whose tokenizer has tokens hundreds of bytes long (llguidance's trie panics)."""
    from ai_lsp_tune.cli.tiny_model import build_tiny_model

    out = tmp_path_factory.mktemp("long-token-model")
    build_tiny_model(out, max_token_chars=None)
    return out


@pytest.mark.model
async def test_a_tokenizer_the_grammar_library_rejects_falls_back_with_one_warning(
    tmp_path: Path, model_llguidance_rejects: Path, isolated_home: Path
) -> None:
    workspace = tmp_path / "ws"
    workspace.mkdir()
    s, records = await analyse_documents(
        workspace, model_llguidance_rejects, isolated_home, 2, maxTokens=16
    )
    assert len(records) == 2  # the analyses ran, unconstrained
    (fallback,) = [m for m in warnings_shown(s) if "constrained decoding is off" in m]
    assert "llguidance cannot read its tokenizer" in fallback
    assert "aiLsp.constrainedDecoding" in fallback
    assert not [m for m in s.client.messages if m.type == types.MessageType.Error]


@pytest.fixture(scope="module")
def model_without_chat_template(tmp_path_factory: pytest.TempPathFactory, tiny_model: Path) -> Path:
    import json
    import shutil

    out = tmp_path_factory.mktemp("no-template") / "model"
    shutil.copytree(tiny_model, out)
    config = json.loads((out / "tokenizer_config.json").read_text())
    del config["chat_template"]
    (out / "tokenizer_config.json").write_text(json.dumps(config))
    return out


@pytest.mark.model
async def test_a_model_without_a_chat_template_is_prompted_in_plain_text_with_one_warning(
    tmp_path: Path, model_without_chat_template: Path, isolated_home: Path
) -> None:
    workspace = tmp_path / "ws"
    workspace.mkdir()
    s, records = await analyse_documents(
        workspace, model_without_chat_template, isolated_home, 2, maxTokens=64
    )
    assert [r.valid for r in records] == [True, True]  # still decoded under the grammar
    (warning,) = warnings_shown(s)
    assert "has no chat template" in warning and "aiLsp.model" in warning


def test_a_schema_the_library_cannot_compile_is_a_clear_reason(tiny_model: Path) -> None:
    from mlx_lm import load

    from ai_lsp_tune.decoding.grammar import GrammarUnavailable, answer_grammar

    model, tokenizer = load(str(tiny_model))[:2]
    bad = {"type": "object", "properties": {"x": {"type": "string", "pattern": "(?<=a)b"}}}
    with pytest.raises(GrammarUnavailable, match="cannot compile the answer schema"):
        answer_grammar(tokenizer, model.args.vocab_size, bad)
    # The DiagnosticResult grammar is compiled once per tokenizer.
    first = answer_grammar(tokenizer, model.args.vocab_size)
    assert answer_grammar(tokenizer, model.args.vocab_size) is first


@pytest.mark.parametrize("max_tokens", [1, 8, 24, 40, 57, 80, 133])
def test_an_answer_near_the_token_budget_is_closed_not_cut(
    tiny_model_word_split: Path, max_tokens: int
) -> None:
    """This random model opens issues and strings it never closes; the budget closes them."""
    from mlx_lm import load

    from ai_lsp_tune.decoding.decode import decode_answer
    from ai_lsp_tune.decoding.grammar import answer_grammar
    from ai_lsp_tune.prompts import SYSTEM_PROMPT, prompt_tokens, user_prompt
    from ai_lsp_tune.schema import parse_diagnostic_result

    model, tokenizer = load(str(tiny_model_word_split))[:2]
    grammar = answer_grammar(tokenizer, model.args.vocab_size)
    prompt = prompt_tokens(tokenizer, SYSTEM_PROMPT, user_prompt("python", document(3), "a.py"))
    answer = decode_answer(model, tokenizer, prompt, max_tokens, grammar=grammar)
    assert answer.output_tokens <= max_tokens
    if max_tokens >= grammar.reserve + 13:  # room to close whatever one token opens
        parse_diagnostic_result(answer.text)


def long_document() -> str:
    """Longer than one prefill chunk, so the model host prefills it in several forwards."""
    return "".join(document(n) for n in range(12))


@pytest.mark.parametrize("constrained", [True, False])
def test_greedy_answers_are_those_of_a_one_forward_prefill(
    tiny_model_word_split: Path, constrained: bool
) -> None:
    """Prefilling in chunks (faster on a CPU) picks the tokens a whole-prompt forward picks."""
    from mlx_lm import load, stream_generate
    from mlx_lm.sample_utils import make_sampler

    from ai_lsp_tune.decoding.decode import PREFILL_STEP_SIZE, decode_answer
    from ai_lsp_tune.decoding.grammar import answer_grammar
    from ai_lsp_tune.prompts import SYSTEM_PROMPT, prompt_tokens, user_prompt

    model, tokenizer = load(str(tiny_model_word_split))[:2]
    grammar = answer_grammar(tokenizer, model.args.vocab_size) if constrained else None
    prompt = prompt_tokens(tokenizer, SYSTEM_PROMPT, user_prompt("python", long_document(), "a.py"))
    assert len(prompt) > 3 * PREFILL_STEP_SIZE
    served = decode_answer(model, tokenizer, prompt, 48, grammar=grammar)
    whole = stream_generate(
        model,
        tokenizer,
        prompt,
        max_tokens=48,
        sampler=make_sampler(temp=0.0),
        logits_processors=[grammar.logits_processor(48)] if grammar else None,
        prefill_step_size=len(prompt),
    )
    assert served.text == "".join(response.text for response in whole)


def test_the_grammar_allows_exactly_the_tokens_llguidance_allows(
    tiny_model_word_split: Path,
) -> None:
    import mlx.core as mx
    import numpy as np
    from mlx_lm import load

    from ai_lsp_tune.decoding.grammar import answer_grammar

    model, tokenizer = load(str(tiny_model_word_split))[:2]
    grammar = answer_grammar(tokenizer, model.args.vocab_size)
    processor = grammar.logits_processor(1000)
    reference = grammar.matcher.deep_copy()
    answer = tokenizer.encode('{"issues":[{"issue_snippet":"eval","severity":"error"')
    prompt = [1, 2, 3]
    logits = mx.random.normal((1, grammar.vocab_size))
    for step in range(len(answer)):
        masked = processor(mx.array(prompt + answer[:step]), logits)
        allowed = np.flatnonzero(np.isfinite(np.array(masked[0])))
        bias = reference.compute_logit_bias()  # one byte per token: 200 allowed, 0 not
        expected = [t for t in range(grammar.vocab_size) if bias[t] == 200]
        assert allowed.tolist() == expected, step
        assert np.array_equal(np.array(masked[0])[allowed], np.array(logits[0])[allowed])
        assert reference.consume_token(answer[step])


def test_a_grounded_answer_cannot_point_at_a_line_the_code_does_not_have(
    tiny_model_word_split: Path,
) -> None:
    """Whatever the model prefers (here: random logits, 30 answers), every snippet the host
    decodes for an analysis prompt is a piece of one of its code's lines, and the answer is
    valid; the teacher's answers (a line with quotes and a backslash, a token, a fix) stay
    possible."""
    import json

    import mlx.core as mx
    from mlx_lm import load

    from ai_lsp_tune.decoding.grammar import answer_grammar
    from ai_lsp_tune.prompts import LOCAL_SYSTEM_PROMPT, user_prompt
    from ai_lsp_tune.schema import parse_diagnostic_result

    model, tokenizer = load(str(tiny_model_word_split))[:2]
    grammar = answer_grammar(tokenizer, model.args.vocab_size)
    code = document(3) + '    password = "a\\\\b\\"c"  # é\n'
    grounded = grammar.for_prompt(user_prompt("python", code, "a.py"))
    outside = '{"issues":[{"issue_snippet":"assert False"'
    assert not grounded.matcher.deep_copy().consume_tokens(tokenizer.encode(outside))
    assert grammar.matcher.deep_copy().consume_tokens(tokenizer.encode(outside))
    fix = {"title": "t", "target_snippet": "x", "replacement_snippet": "y"}
    for snippet, fixes in [(code.splitlines()[-1].strip(), None), ("eval(str(", [fix])]:
        issue = {"issue_snippet": snippet, "severity": "error", "message": "m"}
        answer = {"issues": [issue | ({"suggested_fixes": fixes} if fixes else {})]}
        text = json.dumps(answer, separators=(",", ":"), ensure_ascii=False)
        matcher = grounded.matcher.deep_copy()
        assert matcher.consume_tokens(tokenizer.encode(text)) and matcher.is_accepting(), text
    mx.random.seed(0)
    snippets = []
    for _ in range(30):
        processor = grounded.logits_processor(120)
        answer: list[int] = []
        for _ in range(120):
            logits = processor(
                mx.array([1, 2, 3, *answer]), mx.random.normal((1, grammar.vocab_size))
            )
            token = int(mx.argmax(logits[0]).item())
            if token in grammar.eos:
                break
            answer.append(token)
        text = tokenizer.decode(answer)
        snippets += [i.issue_snippet for i in parse_diagnostic_result(text).issues]
    lines = code.splitlines()
    assert snippets and all(any(s in ln for ln in lines) for s in snippets), json.dumps(snippets)
    # Not an analysis prompt: the plain grammar.
    assert grammar.for_prompt(LOCAL_SYSTEM_PROMPT) is grammar
