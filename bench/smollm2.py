"""A random model of SmolLM2-135M-Instruct's shape, 4-bit like its Q4 GGUF, for bench/ rows.

Until the GGUF import lands (issue 21) the benchmarks measure the real model's shape with random
weights: llama, 30 layers, hidden 576, 9 query and 3 key/value heads of 64, MLP 1536, tied
embeddings, vocabulary 49,152 (a byte-level BPE trained here on the Python standard library's
sources, as bench/decode.py's wide vocabulary is), quantized with group size 32 and 4 bits.
Built once into the cache folder.
"""

from __future__ import annotations

import os
import sys
import sysconfig
from collections.abc import Iterator
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from ai_lsp_tune import paths
from ai_lsp_tune.cli.tiny_model import build_tiny_model

VOCAB = 49_152
SHAPE = {  # HuggingFaceTB/SmolLM2-135M-Instruct's config.json
    "hidden_size": 576,
    "num_hidden_layers": 30,
    "intermediate_size": 1536,
    "num_attention_heads": 9,
    "num_key_value_heads": 3,
    "head_dim": 64,
    "rms_norm_eps": 1e-5,
    "rope_theta": 100000.0,
    "max_position_embeddings": 8192,
    "tie_word_embeddings": True,
}


def _stdlib_sources() -> Iterator[str]:
    for path in sorted(Path(sysconfig.get_paths()["stdlib"]).rglob("*.py")):
        yield path.read_text(encoding="utf-8", errors="ignore")


def smollm2_shaped(bits: int = 4) -> Path:
    """The model folder (built on first use: a minute or two)."""
    from mlx_lm.utils import load, quantize_model, save_config, save_model

    target = paths.cache_dir() / f"bench-smollm2-135m-shape-q{bits}"
    if (target / "model.safetensors").exists():
        return target
    staging = target.with_name(target.name + ".partial")
    staging.mkdir(parents=True, exist_ok=True)
    build_tiny_model(
        staging,
        word_split=True,
        vocab_size=VOCAB,
        model_vocab_size=VOCAB,
        corpus=_stdlib_sources(),
        config=SHAPE,
    )
    model, _, config = load(str(staging), return_config=True)  # type: ignore[misc]
    model, config = quantize_model(model, config, group_size=32, bits=bits)
    for old in staging.glob("model*.safetensors"):
        old.unlink()
    save_model(staging, model)
    save_config(config, staging / "config.json")
    os.rename(staging, target)
    return target


def flops_per_token(model: Path) -> float:
    """2 x multiply-adds of one token's forward through the linear layers and the vocabulary
    (attention scores left out)."""
    import json

    c = json.loads((model / "config.json").read_text())
    h, i, d = c["hidden_size"], c["intermediate_size"], c["head_dim"]
    q, kv = c["num_attention_heads"] * d, c["num_key_value_heads"] * d
    layer = 2 * h * q + 2 * h * kv + 3 * h * i
    return 2 * (c["num_hidden_layers"] * layer + h * c["vocab_size"])


if __name__ == "__main__":
    print(smollm2_shaped())


DECODE_SECTION = "## decode, SmolLM2-135M shape (4-bit vs fp32 on OpenBLAS)"
DECODE_ROWS = [  # (label, AI_LSP_BLAS, AI_LSP_SERVE_DEQUANTIZE)
    ("4-bit, reference BLAS (as shipped before; `mlx_lm` as installed)", "reference", "0"),
    ("4-bit, OpenBLAS", "auto", "0"),
    ("fp32 dequantized, OpenBLAS (as served now)", "auto", "1"),
]


def decode_worker(model: str, prompt_tokens: int, max_tokens: int) -> dict[str, object]:
    """One row, in a fresh process: the model as the host loads it, one greedy answer."""
    import random
    import time

    import mlx.core as mx
    from mlx_lm import stream_generate
    from mlx_lm.sample_utils import make_sampler

    sys.path.insert(0, str(Path(__file__).parent))
    import cpu

    from ai_lsp_tune import blas
    from ai_lsp_tune.serving.engine import load_engine

    engine = load_engine(model)
    out: dict[str, object] = {**cpu.machine(0.5)}
    rng = random.Random(0)
    prompt = [rng.randrange(3, VOCAB) for _ in range(prompt_tokens)]
    tokens: list[int] = []
    started = time.perf_counter()
    for response in stream_generate(
        engine.model, engine.tokenizer, prompt, max_tokens=max_tokens, sampler=make_sampler(0.0)
    ):
        tokens.append(response.token)
        out["prefill_tok_s"], out["decode_tok_s"] = response.prompt_tps, response.generation_tps
    out["seconds"] = time.perf_counter() - started
    out["tokens"] = tokens
    out["weights_mb"] = sum(v.nbytes for _, v in _leaves(engine.model.parameters())) / 1e6
    out["blas"] = blas.status().describe().split(" (")[0]
    mx.clear_cache()
    return out


def _leaves(tree: object) -> Iterator[tuple[str, object]]:
    from mlx.utils import tree_flatten

    yield from tree_flatten(tree)


def decode_rows(prompt_tokens: int, max_tokens: int) -> str:
    """Run the rows one process each and return the RESULTS.md section."""
    import json
    import platform
    import subprocess
    import time

    model = smollm2_shaped()
    load = os.getloadavg()
    rows = []
    for label, setting, dequantize in DECODE_ROWS:
        env = {**os.environ, "AI_LSP_BLAS": setting, "AI_LSP_SERVE_DEQUANTIZE": dequantize}
        code = (
            "import ai_lsp_tune, json, sys; sys.path.insert(0, 'bench'); import smollm2; "
            f"print(json.dumps(smollm2.decode_worker({str(model)!r}, {prompt_tokens}, "
            f"{max_tokens})))"
        )
        done = subprocess.run(
            [sys.executable, "-c", code], capture_output=True, text=True, env=env, check=True
        )
        rows.append({"label": label, **json.loads(done.stdout.splitlines()[-1])})
        print(label, {k: v for k, v in rows[-1].items() if k != "tokens"}, flush=True)
    after = os.getloadavg()
    lines = [
        DECODE_SECTION,
        "",
        f"`uv run python bench/decode.py --smollm2 --prompt-tokens {prompt_tokens} "
        f"--max-tokens {max_tokens}` on {os.cpu_count()} CPU(s), {platform.machine()}, "
        f"{time.strftime('%Y-%m-%d %H:%M')}; random weights of SmolLM2-135M-Instruct's shape "
        "(bench/smollm2.py), saved 4-bit (group 32); each row a fresh process that loads the "
        "model as the model host does (`serving.engine.load_engine`, so the serving policy of "
        "`training/precision.py` applies), prefills one prompt of random token ids and decodes "
        "greedily (mlx-lm's `stream_generate`, its prompt and generation tok/s). Load average "
        f"(1, 5, 15 min) before: {', '.join(f'{x:.2f}' for x in load)}; after: "
        f"{', '.join(f'{x:.2f}' for x in after)}: a machine shared with other engineers' jobs; "
        "with a load of N on 2 cores this run had about 2/N of them, so every column (the "
        "machine's matmul and copy included) moves together, and the ratios within the run are "
        "what to read.",
        "",
        "| configuration | weights MB | matmul GFLOP/s | copy GB/s | prefill tok/s | decode tok/s "
        "| decode bound (copy GB/s / weights) | BLAS |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        bound = float(r["gbps"]) * 1e3 / float(r["weights_mb"])  # type: ignore[arg-type]
        lines.append(
            f"| {r['label']} | {r['weights_mb']:.0f} | {r['gflops']:.1f} | {r['gbps']:.1f} "
            f"| {r['prefill_tok_s']:.1f} | {r['decode_tok_s']:.1f} | {bound:.0f} | {r['blas']} |"
        )
    shipped, q4, served = rows
    dec = [float(r["decode_tok_s"]) for r in rows]  # type: ignore[arg-type]
    pre = [float(r["prefill_tok_s"]) for r in rows]  # type: ignore[arg-type]
    same = shipped["tokens"] == q4["tokens"]
    kept = served["tokens"] == q4["tokens"]
    lines += [
        "",
        f"- Decode: fp32 on OpenBLAS is **{dec[2] / dec[1]:.2f}x**"
        f" the 4-bit tok/s in the same run and "
        f"**{dec[2] / dec[0]:.2f}x** the shipped path's; "
        f"prefill **{pre[2] / pre[0]:.1f}x** the shipped "
        "path's.",
        f"- Greedy tokens: 4-bit on the reference BLAS vs OpenBLAS (same precision): "
        f"{'identical' if same else 'DIFFERENT'}; fp32 dequantized vs 4-bit (same weights, "
        f"fp32 accumulation): {'identical' if kept else 'different'} over "
        f"{len(q4['tokens'])} tokens.",  # type: ignore[arg-type]
    ]
    return "\n".join(lines) + "\n"


def write_section(results: Path, section: str, text: str) -> None:
    content = results.read_text()
    if section in content:
        start = content.index(section)
        end = content.find("\n## ", start + len(section))
        content = content[:start] + text + (content[end + 1 :] if end != -1 else "")
    else:
        content = content.rstrip("\n") + "\n\n" + text
    results.write_text(content)
