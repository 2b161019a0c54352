"""How an answer is decoded: greedy, under the answer grammar when there is one.

The model host serves with this and the training worker evaluates with it, so the gate measures
exactly what users get.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from ai_lsp_tune.decoding.grammar import AnswerGrammar

# Prompt tokens per forward while prefilling. mlx-lm's 2,048 puts a whole analysis prompt in one
# forward, whose attention (MLX's CPU attention materializes every score) computes the full
# square; chunks of 256 compute about the causal half, and prefilled a 1,500-token prompt of
# SmolLM2-135M on a CPU ~1.4x faster (bench/RESULTS.md, "decode, SmolLM2-135M").
PREFILL_STEP_SIZE = 256


@dataclass(frozen=True)
class DecodedAnswer:
    text: str
    output_tokens: int
    finish_reason: str  # "stop" (end of answer) or "length" (cut at max_tokens)


def decode_answer(
    model: Any,
    tokenizer: Any,
    prompt: list[int],
    max_tokens: int,
    *,
    grammar: AnswerGrammar | None = None,
    prompt_cache: list[Any] | None = None,
    should_stop: Callable[[], bool] | None = None,
) -> DecodedAnswer:
    """Greedy answer to ``prompt`` (token ids not yet in ``prompt_cache``)."""
    from mlx_lm import stream_generate
    from mlx_lm.sample_utils import make_sampler

    pieces: list[str] = []
    output_tokens = 0
    finish = "stop"
    processors = [grammar.logits_processor(max_tokens)] if grammar is not None else None
    for response in stream_generate(
        model,
        tokenizer,
        prompt,
        max_tokens=max_tokens,
        sampler=make_sampler(temp=0.0),
        logits_processors=processors,
        prompt_cache=prompt_cache,
        prefill_step_size=PREFILL_STEP_SIZE,
    ):
        pieces.append(response.text)
        output_tokens = response.generation_tokens
        finish = response.finish_reason or finish
        if should_stop is not None and should_stop():
            break
    return DecodedAnswer("".join(pieces), output_tokens, finish)


def model_vocab_size(model: Any) -> int:
    """The width of the model's logits (may exceed the tokenizer's vocabulary)."""
    args = getattr(model, "args", None)
    size = getattr(args, "vocab_size", None)
    if isinstance(size, int):
        return size
    import mlx.core as mx

    return int(model(mx.array([[0]])).shape[-1])
