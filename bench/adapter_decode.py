"""Serving a fine-tune fused vs as base + LoRA adapter (``finetune.fuse`` false): decode speed.

A random llama (``--hidden``, ``--layers``; bf16 and 4-bit as mlx-community's models are), a
random LoRA adapter on every layer (rank 8, as ``finetune.loraRank``), and the fused copy a run
writes (``training/publish.py``: ``fuse(dequantize=False)``, so a 4-bit base is requantized).
Each is served by a real model host (``HostClient``): greedy answers to the same prompts,
unconstrained, ``--max-tokens`` each. Reports generated tokens/s and whether the fused and the
adapter hosts answer alike. Writes its section of bench/RESULTS.md.

    uv run python bench/adapter_decode.py [--hidden 512] [--layers 8] [--prompts 6]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from ai_lsp_tune.cli.tiny_model import build_tiny_model
from ai_lsp_tune.serving.runner import HostClient
from bench.swap import write_section
from tests.test_serving import chat, same_shape_model

SECTION = "## adapter_decode (serving fused vs base + LoRA adapter)"
WHICH = (
    "Which in-place method serves a fine-tune: by default (`finetune.fuse` true) the worker "
    "writes the fused model and the running host loads its weights in place (`bench/swap.py`: "
    "the swap and the time to the first new answer are in its section): no cost per token "
    "afterwards, and the fused model is what the gate evaluated. With `finetune.fuse` false "
    "nothing but the adapter is written, so the host cannot load fused weights: it puts the "
    "adapter's LoRA layers over the base it holds, unfused (`bench/swap.py --no-fuse`). Fusing "
    "them in the host instead would change the base's weights (a rollback would then reload "
    "them from disk) and, on a 4-bit base, requantize the sum (`fuse(dequantize=False)`), which "
    "answers unlike the adapter the gate evaluated (the column above); unfused layers keep the "
    "base intact (rollback = take them off) and serve exactly what was evaluated, for the "
    "decode cost in the table."
)


def make_adapter(base: Path, folder: Path, *, rank: int = 8) -> Path:
    """A LoRA adapter on every layer of ``base``, of the size training leaves (B ~ 0.02)."""
    import mlx.core as mx
    from mlx.utils import tree_flatten
    from mlx_lm import load
    from mlx_lm.tuner.utils import linear_to_lora_layers

    model = load(str(base))[0]
    params = {"rank": rank, "scale": 20.0, "dropout": 0.0}
    linear_to_lora_layers(model, len(model.layers), params)
    mx.random.seed(7)
    weights = {
        name: mx.random.normal(value.shape) * (0.02 if name.endswith("lora_b") else 0.1)
        for name, value in tree_flatten(model.trainable_parameters())
        if name.rsplit(".", 1)[-1] in ("lora_a", "lora_b")
    }
    folder.mkdir(parents=True)
    mx.save_safetensors(str(folder / "adapters.safetensors"), weights)
    config = {"fine_tune_type": "lora", "model": str(base), "num_layers": len(model.layers),
              "lora_parameters": params}  # fmt: skip
    (folder / "adapter_config.json").write_text(json.dumps(config))
    return folder


def fused_copy(base: Path, adapter: Path, folder: Path) -> Path:
    """What a run with ``finetune.fuse`` true writes for this adapter."""
    from mlx_lm import load
    from mlx_lm.utils import load_config

    from ai_lsp_tune.training import publish

    model, tokenizer = load(str(base), adapter_path=str(adapter))[:2]
    publish.fuse(model)
    publish.save_model(folder, base, model, tokenizer, load_config(base))
    return folder


async def serve(model: Path, adapter: Path | None, codes: list[str], max_tokens: int) -> dict:
    host = await HostClient.start(str(model), adapter=str(adapter) if adapter else None)
    try:
        await host.generate(chat("warm = 0\n"), max_tokens, constrained=False)
        answers, tokens, seconds = [], 0, 0.0
        for code in codes:
            g = await host.generate(chat(code), max_tokens, constrained=False)
            answers.append(g.text)
            tokens += g.output_tokens
            seconds += g.seconds
        return {"answers": answers, "tok_s": tokens / seconds, "tokens": tokens}
    finally:
        await host.close()


async def run(args: argparse.Namespace) -> list[str]:
    root = Path(tempfile.mkdtemp(prefix="ai-lsp-bench-adapter-"))
    shape = {"hidden_size": args.hidden, "intermediate_size": args.hidden * 3,
             "num_hidden_layers": args.layers, "num_attention_heads": 8,
             "num_key_value_heads": 4}  # fmt: skip
    source = root / "source"
    source.mkdir()
    build_tiny_model(source, config=shape)
    codes = [f"def f_{n}(data):\n    value = eval(data)\n    return value + {n}\n"
             for n in range(args.prompts)]  # fmt: skip
    rows = []
    for bits in (None, 4):
        label = "bf16" if bits is None else f"{bits}-bit"
        base = same_shape_model(source, root / f"base-{label}", seed=0, bits=bits)
        adapter = make_adapter(base, root / f"adapter-{label}")
        fused = fused_copy(base, adapter, root / f"fused-{label}")
        plain = await serve(base, None, codes, args.max_tokens)
        on_top = await serve(base, adapter, codes, args.max_tokens)
        merged = await serve(fused, None, codes, args.max_tokens)
        same = sum(a == b for a, b in zip(on_top["answers"], merged["answers"], strict=True))
        changed = sum(a != b for a, b in zip(plain["answers"], on_top["answers"], strict=True))
        rows.append(
            f"| {label} | {plain['tok_s']:,.0f} | {merged['tok_s']:,.0f} | {on_top['tok_s']:,.0f}"
            f" | {on_top['tok_s'] / merged['tok_s']:.2f}x | {same}/{len(codes)} | "
            f"{changed}/{len(codes)} |"
        )
    load = " / ".join(f"{x:.2f}" for x in os.getloadavg())
    return [
        SECTION,
        "",
        f"`uv run python bench/adapter_decode.py --hidden {args.hidden} --layers {args.layers} "
        f"--prompts {args.prompts} --max-tokens {args.max_tokens}` on {os.cpu_count()} CPU(s), "
        f"{platform.machine()}, Python {platform.python_version()}, "
        f"{time.strftime('%Y-%m-%d %H:%M')}; load average after: {load}. A random llama of "
        f"hidden size {args.hidden}, {args.layers} layers; a random rank-8 LoRA adapter on every "
        "layer; each way served by a real model host, greedy, unconstrained, one run each.",
        "",
        "| base | base alone tok/s | fused tok/s | base + adapter tok/s | adapter / fused | "
        "fused answers = adapter answers | adapter changed the answer |",
        "|---|---|---|---|---|---|---|",
        *rows,
        "",
        WHICH,
        "",
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--hidden", type=int, default=512)
    parser.add_argument("--layers", type=int, default=8)
    parser.add_argument("--prompts", type=int, default=6)
    parser.add_argument("--max-tokens", type=int, default=48)
    parser.add_argument("--no-write", action="store_true", help="Print, do not edit RESULTS.md.")
    args = parser.parse_args()
    text = "\n".join(asyncio.run(run(args)))
    print(text)
    if not args.no_write:
        write_section(text)


if __name__ == "__main__":
    main()
