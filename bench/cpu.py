"""Linux CPU: the machine's fp32 matmul peak and memory bandwidth, and a SmolLM2-135M-shaped model
(random weights, 4-bit group 32 like the Q4_1 GGUF) in prefill, decode and a LoRA training step:
as shipped before (4-bit, reference BLAS) vs 4-bit and fp32 on OpenBLAS (ai_lsp_tune.blas).

Each configuration runs in its own process (the BLAS is chosen per process, before mlx loads).
``uv run python bench/cpu.py [--tokens 64] [--no-write]``. Writes its section of RESULTS.md.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

RESULTS = Path(__file__).with_name("RESULTS.md")
SECTION = "## cpu (OpenBLAS, fp32 vs 4-bit, SmolLM2-135M shape)"
SMOLLM2 = {  # HuggingFaceTB/SmolLM2-135M-Instruct's config.json
    "model_type": "llama",
    "hidden_size": 576,
    "num_hidden_layers": 30,
    "intermediate_size": 1536,
    "num_attention_heads": 9,
    "num_key_value_heads": 3,
    "rms_norm_eps": 1e-5,
    "vocab_size": 49152,
    "rope_theta": 100000.0,
    "tie_word_embeddings": True,
    "head_dim": 64,
}
CONFIGS = [  # (label, AI_LSP_BLAS, precision)
    ("as shipped: 4-bit, reference BLAS", "reference", "q4"),
    ("4-bit, OpenBLAS", "auto", "q4"),
    ("fp32, reference BLAS", "reference", "f32"),
    ("fp32, OpenBLAS (the training policy)", "auto", "f32"),
]


def machine(seconds: float = 1.0) -> dict[str, float]:
    """fp32 matmul GFLOP/s (1024^3) and a copy's GB/s (read + write of 256 MiB), in MLX."""
    import mlx.core as mx

    a = mx.random.normal((1024, 1024))
    mx.eval(a @ a)
    n, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        mx.eval(a @ a)
        n += 1
    gflops = 2 * 1024**3 * n / (time.perf_counter() - start) / 1e9
    big = mx.zeros((64 * 2**20,))
    mx.eval(big + 1)
    n, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        mx.eval(big + 1)
        n += 1
    return {"gflops": gflops, "gbps": 2 * big.nbytes * n / (time.perf_counter() - start) / 1e9}


def model(precision: str):  # type: ignore[no-untyped-def]
    import mlx.core as mx
    import mlx.nn as nn
    from mlx_lm.models import llama

    from ai_lsp_tune.training import precision as policy

    mx.random.seed(0)
    built = llama.Model(llama.ModelArgs.from_dict(SMOLLM2))
    nn.quantize(built, group_size=32, bits=4)
    mx.eval(built.parameters())
    if precision == "f32":
        plan, _ = policy.for_training(built)
        if not plan:  # the reference BLAS: the policy would not dequantize; measure it anyway
            os.environ[policy.DEQUANTIZE_ENV] = "1"
            plan = policy.Plan(
                layers={p: {} for p, m in built.named_modules() if hasattr(m, "scales")}
            )
            policy.dequantize(built, plan)
    return built


def worker(precision: str, tokens: int) -> dict[str, float]:
    """One configuration's numbers (runs in a fresh process)."""
    import mlx.core as mx
    import mlx.nn as nn
    import mlx.optimizers as optim
    from mlx_lm.models.cache import make_prompt_cache
    from mlx_lm.tuner.utils import linear_to_lora_layers

    from ai_lsp_tune import blas

    out: dict[str, float] = {**machine()}
    net = model(precision)
    prompt = mx.random.randint(0, SMOLLM2["vocab_size"], (1, tokens))
    mx.eval(net(prompt[:, :8]))
    start = time.perf_counter()
    cache = make_prompt_cache(net)
    mx.eval(net(prompt, cache=cache))
    out["prefill_tok_s"] = tokens / (time.perf_counter() - start)
    token = mx.array([[1]])
    mx.eval(net(token, cache=cache))
    start = time.perf_counter()
    for _ in range(5):
        token = mx.argmax(net(token, cache=cache)[:, -1:], axis=-1)
        mx.eval(token)
    out["decode_tok_s"] = 5 / (time.perf_counter() - start)

    net.freeze()
    linear_to_lora_layers(net, 30, {"rank": 8, "scale": 20.0, "dropout": 0.0})
    optimizer = optim.Adam(learning_rate=1e-5)

    def loss(m, x):  # type: ignore[no-untyped-def]
        logits = m(x[:, :-1])
        return nn.losses.cross_entropy(logits, x[:, 1:]).mean()

    step = nn.value_and_grad(net, loss)
    batch = mx.random.randint(0, SMOLLM2["vocab_size"], (2, tokens + 1))
    for i in range(2):  # the first compiles and allocates
        if i == 1:
            start = time.perf_counter()
        value, grads = step(net, batch)
        optimizer.update(net, grads)
        mx.eval(value, net.parameters(), optimizer.state)
    out["train_tok_s"] = 2 * tokens / (time.perf_counter() - start)
    out["blas"] = blas.status().describe()  # type: ignore[assignment]
    return out


def run(label: str, setting: str, precision: str, tokens: int) -> dict[str, object]:
    env = {**os.environ, "AI_LSP_BLAS": setting}
    code = (
        "import ai_lsp_tune, json, sys; sys.path.insert(0, 'bench'); import cpu; "
        f"print(json.dumps(cpu.worker({precision!r}, {tokens})))"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=env, check=True
    )
    return {"label": label, **json.loads(done.stdout.splitlines()[-1])}


def flops_per_token() -> float:
    """Multiply-adds x 2 of one token's forward through the linear layers and the vocabulary."""
    h, i, layers, kv = 576, 1536, 30, 3 * 64
    per_layer = h * h * 2 + h * kv * 2 + 3 * h * i
    return 2 * (layers * per_layer + h * SMOLLM2["vocab_size"])


def report(rows: list[dict[str, object]], tokens: int, load: tuple[float, ...]) -> str:
    after = os.getloadavg()
    lines = [
        SECTION,
        "",
        f"`uv run python bench/cpu.py --tokens {tokens}` on {os.cpu_count()} CPU(s), "
        f"{platform.machine()}, Python {platform.python_version()}, {time.strftime('%Y-%m-%d')}; "
        "random weights of SmolLM2-135M-Instruct's shape (llama, 30 layers, hidden 576, vocab "
        "49152, tied), 4-bit group 32; prefill of one prompt, 5 greedy tokens after it, one LoRA "
        f"(rank 8, all 30 layers) step on 2 x {tokens} tokens; one process per row, same run. "
        f"Load average (1, 5, 15 min) before: {', '.join(f'{x:.2f}' for x in load)}; after: "
        f"{', '.join(f'{x:.2f}' for x in after)} (a machine shared with other jobs: on 2 cores "
        "a load of N leaves this run about 2/N of them, so every column moves together).",
        "",
        "| configuration | matmul GFLOP/s | copy GB/s | prefill tok/s | decode tok/s | "
        "train tok/s | BLAS |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r['label']} | {r['gflops']:.1f} | {r['gbps']:.1f} | {r['prefill_tok_s']:.1f} | "
            f"{r['decode_tok_s']:.2f} | {r['train_tok_s']:.1f} | {str(r['blas']).split(' (')[0]} |"
        )
    shipped, best = rows[0], rows[-1]
    peak = float(best["gflops"])  # type: ignore[arg-type]
    # A training step is ~3 forwards (forward, and the backward's two matmuls per weight).
    used = 3 * flops_per_token() * float(best["train_tok_s"]) / 1e9  # type: ignore[arg-type]
    lines += [
        "",
        f"- Training: fp32 on OpenBLAS is **{best['train_tok_s'] / shipped['train_tok_s']:.1f}x** "  # type: ignore[operator]
        f"the shipped 4-bit path's tokens/s, {used:.1f} GFLOP/s = {100 * used / peak:.0f}% of the "
        "same process's matmul peak (3 forwards' FLOPs per trained token).",
        f"- Prefill: **{best['prefill_tok_s'] / shipped['prefill_tok_s']:.1f}x** the shipped "  # type: ignore[operator]
        f"path. Decode: 4-bit {shipped['decode_tok_s']:.2f} tok/s, fp32 "
        f"{best['decode_tok_s']:.2f} tok/s; the bandwidth bound (4-bit weights, ~70 MB a token, "
        f"at the copy's {float(best['gbps']):.1f} GB/s) is "  # type: ignore[arg-type]
        f"{float(best['gbps']) * 1e9 / 70e6:.0f} tok/s.",  # type: ignore[arg-type]
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
    parser.add_argument("--tokens", type=int, default=64)
    parser.add_argument("--only", help="Comma-separated row numbers (1-4) to run.")
    parser.add_argument("--no-write", action="store_true", help="Print, do not edit RESULTS.md.")
    args = parser.parse_args()
    load = os.getloadavg()
    chosen = [CONFIGS[int(i) - 1] for i in args.only.split(",")] if args.only else CONFIGS
    rows = []
    for label, setting, precision in chosen:
        rows.append(run(label, setting, precision, args.tokens))
        print(json.dumps(rows[-1]), flush=True)
    text = report(rows, args.tokens, load)
    print(text)
    if not args.no_write and not args.only:
        write_section(text)


if __name__ == "__main__":
    main()
