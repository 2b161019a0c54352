"""How an answer is decoded: greedy, under the answer grammar when there is one.

The model host serves with this and the training worker evaluates with it, so the gate measures
exactly what users get.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from ai_lsp_tune.decoding.grammar import AnswerGrammar

# Prompt tokens per forward while prefilling. mlx-lm's 2,048 puts a whole analysis prompt in one
# forward, whose attention (MLX's CPU attention materializes every score) computes the full
# square; chunks of 256 compute about the causal half, and prefilled a 1,500-token prompt of
# SmolLM2-135M on a CPU ~1.4x faster (bench/RESULTS.md, "decode, SmolLM2-135M"; a scratch run).
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


def prefilled_caches(model: Any, prompts: list[list[int]]) -> list[list[Any]]:
    """Each prompt's KV cache holding all its tokens but the last (a batch decodes from there),
    the tokens they all start with computed once. mlx-lm's batch prefill pads every prompt to
    the longest, recomputes the shared system prompt per prompt and runs the LM head over every
    prompt token; the keys and values are those of the layers alone, so the head is skipped."""
    import mlx.core as mx
    from mlx_lm.models.cache import make_prompt_cache

    layers = getattr(model, "model", None)
    forward = layers if callable(layers) else model  # the layer stack of mlx-lm's usual layout

    def extend(cache: list[Any], tokens: list[int]) -> None:
        for start in range(0, len(tokens), PREFILL_STEP_SIZE):
            forward(mx.array(tokens[start : start + PREFILL_STEP_SIZE])[None], cache=cache)
            mx.eval([c.state for c in cache])

    shared = common_start(prompts)
    start = make_prompt_cache(model)
    extend(start, prompts[0][:shared] if prompts else [])
    caches = []
    for prompt in prompts:
        cache = copy.deepcopy(start)  # a cache grows in place: each prompt needs its own
        extend(cache, prompt[shared:-1])
        caches.append(cache)
    return caches


def common_start(prompts: Sequence[list[int]]) -> int:
    """How many tokens every prompt starts with, each keeping at least one to decode from."""
    if not prompts:
        return 0
    first, shared = prompts[0], min(len(p) for p in prompts) - 1
    for prompt in prompts[1:]:
        shared = next((i for i in range(shared) if prompt[i] != first[i]), shared)
    return max(shared, 0)


def model_vocab_size(model: Any) -> int:
    """The width of the model's logits (may exceed the tokenizer's vocabulary)."""
    args = getattr(model, "args", None)
    size = getattr(args, "vocab_size", None)
    if isinstance(size, int):
        return size
    import mlx.core as mx

    return int(model(mx.array([[0]])).shape[-1])
