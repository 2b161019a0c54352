"""Constrained vs unconstrained decoding: generated tokens/s, and the cost of compiling the grammar.

Two random-init local models, decoded greedily exactly as the model host serves
(``serving.decode.decode_answer``), with and without the DiagnosticResult grammar:

- the tiny test model (1,024-token byte-level BPE that merges across spaces);
- a model with a 151,936-wide vocabulary (Qwen2's width: a 151,643-token byte-level BPE with
  GPT-2's word split, trained here on the Python standard library's sources, padded to 151,936),
  4 layers, hidden size 128: small enough for a CPU, so the vocabulary dominates the step.

A random model under the grammar soon writes ``{"issues":[]}``, and without it never stops:
their token counts differ. So for tokens/s both runs are steered to the same long answer (a
valid DiagnosticResult of ~300 tokens, one token at a time by a second logits processor, the
same in both runs): the grammar still computes its mask at every step, and both generate the
same tokens. Tokens/s counts generated tokens over generation time (mlx-lm's ``generation_tps``:
prompt processing excluded), median over the prompts. "Mask" is the time inside the grammar's
logits processor per token. "Natural" answers (unsteered) give the validity counts. "First
analysis" is a fresh grammar cache: compile + the first answer, which the host pays at model
load instead (it compiles while warming up). Writes its section of RESULTS.md.

    uv run python bench/decode.py [--prompts 5] [--max-tokens 256]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import sysconfig
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from ai_lsp_tune import paths
from ai_lsp_tune.cli.tiny_model import build_tiny_model, ensure_tiny_model
from ai_lsp_tune.decoding import grammar as grammar_module
from ai_lsp_tune.decoding.decode import model_vocab_size
from ai_lsp_tune.decoding.grammar import answer_grammar
from ai_lsp_tune.prompts import SYSTEM_PROMPT, user_prompt
from ai_lsp_tune.schema import InvalidModelOutput, parse_diagnostic_result

RESULTS = Path(__file__).with_name("RESULTS.md")
SECTION = "## decode (constrained vs unconstrained generation)"
LARGE_VOCAB = 151_936
LARGE_CONFIG = {"hidden_size": 128, "num_hidden_layers": 4, "intermediate_size": 256}


def stdlib_sources() -> Iterator[str]:
    for path in sorted(Path(sysconfig.get_paths()["stdlib"]).rglob("*.py")):
        yield path.read_text(encoding="utf-8", errors="ignore")


def large_vocab_model() -> Path:
    target = paths.cache_dir() / f"bench-decode-vocab-{LARGE_VOCAB}"
    if not (target / "model.safetensors").exists():
        staging = target.with_name(target.name + ".partial")
        staging.mkdir(parents=True, exist_ok=True)
        build_tiny_model(
            staging,
            word_split=True,
            vocab_size=151_643,
            model_vocab_size=LARGE_VOCAB,
            corpus=stdlib_sources(),
            config=LARGE_CONFIG,
        )
        os.rename(staging, target)
    return target


def code(n: int) -> str:
    return f"def handler_{n}(items):\n    total = items[{n}] * {n}\n    return eval(str(total))\n"


LONG_ANSWER = {
    "issues": [
        {
            "issue_snippet": f"total = items[{n}] * {n}",
            "severity": "warning",
            "message": f"Index {n} may be out of range when items is shorter; check len(items).",
            "suggested_fixes": [
                {
                    "title": "Guard the index",
                    "target_snippet": f"items[{n}]",
                    "replacement_snippet": f"(items[{n}] if len(items) > {n} else 0)",
                }
            ],
        }
        for n in range(4)
    ]
}


class Steer:
    """Forces a fixed token sequence, then the end token (the same in both runs)."""

    def __init__(self, target: list[int], eos: int) -> None:
        self.target, self.eos, self.start = [*target, eos], eos, None

    def __call__(self, tokens: Any, logits: Any) -> Any:
        import mlx.core as mx

        step = 0 if self.start is None else int(tokens.size) - self.start
        if self.start is None:
            self.start = int(tokens.size)
        wanted = self.target[min(step, len(self.target) - 1)]
        return mx.where(mx.arange(logits.shape[-1]) == wanted, logits, -1e9)


class TimedProcessor:
    """Wraps a logits processor to time it (forcing its result, so the time is its own)."""

    def __init__(self, inner: Any) -> None:
        self.inner, self.seconds = inner, 0.0

    def __call__(self, tokens: Any, logits: Any) -> Any:
        import mlx.core as mx

        mx.eval(tokens, logits)
        started = time.perf_counter()
        out = self.inner(tokens, logits)
        mx.eval(out)
        self.seconds += time.perf_counter() - started
        return out


def answer(
    model: Any,
    tokenizer: Any,
    prompt: list[int],
    max_tokens: int,
    grammar: Any,
    steer: list[int] | None = None,
) -> dict:
    from mlx_lm import stream_generate
    from mlx_lm.sample_utils import make_sampler

    processor = TimedProcessor(grammar.logits_processor(max_tokens)) if grammar else None
    processors: list[Any] = [processor] if processor else []
    if steer is not None:
        processors.append(Steer(steer, min(tokenizer.eos_token_ids)))
    started = time.perf_counter()
    pieces, last = [], None
    for last in stream_generate(
        model,
        tokenizer,
        prompt,
        max_tokens=max_tokens,
        sampler=make_sampler(temp=0.0),
        logits_processors=processors or None,
    ):
        pieces.append(last.text)
    assert last is not None
    try:
        parse_diagnostic_result("".join(pieces))
        valid = True
    except InvalidModelOutput:
        valid = False
    return {
        "tokens": last.generation_tokens,
        "tps": last.generation_tps,
        "seconds": time.perf_counter() - started,
        "mask_s": processor.seconds if processor else 0.0,
        "valid": valid,
    }


def measure(name: str, model_path: Path, prompts: int, max_tokens: int) -> dict[str, Any]:
    from mlx_lm import load

    model, tokenizer = load(str(model_path))[:2]
    vocab = model_vocab_size(model)
    chats = [
        tokenizer.apply_chat_template(
            [
                {"role": "system", "content": SYSTEM_PROMPT},
                {"role": "user", "content": user_prompt("python", code(n), "a.py")},
            ],
            add_generation_prompt=True,
        )
        for n in range(prompts)
    ]
    answer(model, tokenizer, chats[0], 8, None)  # warm mlx up

    grammar_module._cache.clear()
    started = time.perf_counter()
    grammar = answer_grammar(tokenizer, vocab)
    compile_s = time.perf_counter() - started
    first = answer(model, tokenizer, chats[0], max_tokens, grammar)
    first_unconstrained = answer(model, tokenizer, chats[0], max_tokens, None)

    free = [answer(model, tokenizer, p, max_tokens, None) for p in chats]
    constrained = [answer(model, tokenizer, p, max_tokens, grammar) for p in chats]
    target = tokenizer.encode(json.dumps(LONG_ANSWER, separators=(",", ":")))
    budget = len(target) + 2 * grammar.reserve + 16  # never near enough to close early
    steered_free = [answer(model, tokenizer, p, budget, None, target) for p in chats]
    steered = [answer(model, tokenizer, p, budget, grammar, target) for p in chats]
    assert all(r["valid"] for r in steered + steered_free), "the steered answer must be valid"
    stokens = sum(r["tokens"] for r in steered)
    return {
        "name": name,
        "vocab": vocab,
        "tokenizer": len(tokenizer._tokenizer),
        "steered_tokens": len(target) + 1,
        "free_tps": statistics.median(r["tps"] for r in steered_free),
        "constrained_tps": statistics.median(r["tps"] for r in steered),
        "free_tokens": statistics.median(r["tokens"] for r in free),
        "constrained_tokens": statistics.median(r["tokens"] for r in constrained),
        "mask_ms": 1000 * sum(r["mask_s"] for r in steered) / max(stokens, 1),
        "valid": sum(r["valid"] for r in constrained),
        "free_valid": sum(r["valid"] for r in free),
        "n": len(chats),
        "compile_s": compile_s,
        "reserve": grammar.reserve,
        "first_s": compile_s + first["seconds"],
        "first_unconstrained_s": first_unconstrained["seconds"],
    }


def render(rows: list[dict[str, Any]], argv: str) -> str:
    lines = [
        SECTION,
        "",
        f"`uv run python bench/decode.py {argv}` on {os.cpu_count()} CPU(s), "
        f"{platform.machine()}, Python {platform.python_version()}, "
        f"{time.strftime('%Y-%m-%d')}; `mlx[cpu]`, llguidance; greedy, one process, "
        "same run. No GPU machine was lent to this session: CPU numbers only.",
        "",
        "| model | logits width (tokenizer) | steered answer tokens | unconstrained tok/s "
        "| constrained tok/s | per-token overhead | mask ms/token "
        "| natural tokens/answer (free, constrained) | natural valid answers (free, constrained) "
        "| grammar compile s | first analysis s (unconstrained) |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        overhead = r["free_tps"] / r["constrained_tps"] - 1
        r["overhead"] = overhead
        lines.append(
            f"| {r['name']} | {r['vocab']:,} ({r['tokenizer']:,}) | {r['steered_tokens']} "
            f"| {r['free_tps']:.0f} "
            f"| {r['constrained_tps']:.0f} | {overhead:+.0%} | {r['mask_ms']:.3f} "
            f"| {r['free_tokens']:.0f}, {r['constrained_tokens']:.0f} "
            f"| {r['free_valid']}/{r['n']}, {r['valid']}/{r['n']} | {r['compile_s']:.2f} "
            f"| {r['first_s']:.2f} ({r['first_unconstrained_s']:.2f}) |"
        )
    large = rows[-1]
    met = "met" if large["overhead"] <= 0.10 else "not met"
    lines += [
        "",
        f"- Target (<= 10 % per-token overhead at the {LARGE_VOCAB:,}-wide vocabulary): "
        f"**{met}** ({large['overhead']:+.0%}).",
        "- Per-token overhead is unconstrained tok/s over constrained tok/s, minus one; the mask "
        "column is the logits processor's own time (llguidance's mask into a numpy bitmask, then "
        "the bitmask unpacked and applied in MLX), which also costs mlx-lm's one-step lookahead: "
        "the processor must read the previous token before the next step is queued.",
        "- First analysis: a fresh grammar cache, compile + the first constrained answer; the "
        "model host compiles while it warms up at load, so a user's first analysis after a swap "
        "does not wait for it. The closing reserve (tokens kept to close an answer at maxTokens) "
        + ", ".join(f"{r['name']}: {r['reserve']}" for r in rows)
        + ".",
    ]
    return "\n".join(lines) + "\n"


def write_section(text: str) -> None:
    content = RESULTS.read_text()
    if SECTION in content:
        start = content.index(SECTION)
        end = content.find("\n## ", start + len(SECTION))
        content = content[:start] + text + (content[end + 1 :] if end != -1 else "")
    else:
        content = content.rstrip("\n") + "\n\n" + text
    RESULTS.write_text(content)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--prompts", type=int, default=5)
    parser.add_argument("--max-tokens", type=int, default=256)
    parser.add_argument("--no-write", action="store_true", help="Print, do not edit RESULTS.md.")
    parser.add_argument(
        "--smollm2",
        action="store_true",
        help="instead: the real SmolLM2-135M, --before's code vs now (bench/smollm2_decode.py)",
    )
    parser.add_argument("--before", default="46b81af", help="with --smollm2: the revision")
    parser.add_argument("--repeats", type=int, default=3, help="with --smollm2")
    args = parser.parse_args()
    if args.smollm2:
        sys.path.insert(0, str(Path(__file__).parent))
        import smollm2
        import smollm2_decode

        text = smollm2_decode.decode_rows(args.before, args.repeats, args.max_tokens)
        print(text)
        if not args.no_write:
            smollm2.write_section(RESULTS, smollm2_decode.SECTION, text)
        return
    tiny = ensure_tiny_model()
    word_split = ensure_tiny_model(word_split=True)
    rows = [
        measure("tiny (merged BPE)", tiny, args.prompts, args.max_tokens),
        measure("tiny (word-split BPE)", word_split, args.prompts, args.max_tokens),
        measure("random, 4 layers", large_vocab_model(), args.prompts, args.max_tokens),
    ]
    text = render(rows, f"--prompts {args.prompts} --max-tokens {args.max_tokens}")
    print(text)
    if not args.no_write:
        write_section(text)


if __name__ == "__main__":
    main()
