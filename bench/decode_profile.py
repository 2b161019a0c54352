"""Where one decode step of the real SmolLM2-135M goes, on a Linux CPU with OpenBLAS (issue 20).

The model as the host serves it (``load_engine``: fp32 on OpenBLAS), a KV cache of 1,500 tokens,
then one decode step evaluated stage by stage (each stage forced, so each row includes MLX's
dispatch of its ops), the same step in one evaluation, the Python time to build its graph, and
the matvec kernels underneath: MLX's ``x @ W.T`` (``cblas_sgemm`` with M=1, what MLX calls for
every fp32 matmul) against OpenBLAS's own ``cblas_sgemv`` on the same weights, each matrix
streamed from memory (copies cycled past the caches); 4-bit and bf16 for the layer shape.
Prints a markdown section (``bench/RESULTS.md`` quotes it).

    uv run python bench/decode_profile.py [--steps 5]
"""

from __future__ import annotations

import argparse
import collections
import ctypes
import os
import random
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import ai_lsp_tune  # noqa: F401  (OpenBLAS before mlx)


def staged_step(model: Any, cache: list[Any], times: dict[str, float]) -> None:
    """One decode step of mlx-lm's llama, forced stage by stage into ``times``."""
    import mlx.core as mx
    from mlx_lm.models.activations import swiglu
    from mlx_lm.models.cache import trim_prompt_cache

    def stage(name: str, *arrays: Any) -> None:
        started = time.perf_counter()
        mx.eval(*arrays)
        times[name] += time.perf_counter() - started

    h = model.model.embed_tokens(mx.array([[5]]))
    stage("embedding", h)
    for layer, c in zip(model.model.layers, cache, strict=True):
        a = layer.self_attn
        n = layer.input_layernorm(h)
        stage("RMS norms", n)
        q, k, v = a.q_proj(n), a.k_proj(n), a.v_proj(n)
        stage("q, k, v projections", q, k, v)
        q = q.reshape(1, 1, a.n_heads, -1).transpose(0, 2, 1, 3)
        k = k.reshape(1, 1, a.n_kv_heads, -1).transpose(0, 2, 1, 3)
        v = v.reshape(1, 1, a.n_kv_heads, -1).transpose(0, 2, 1, 3)
        q, k = a.rope(q, offset=c.offset), a.rope(k, offset=c.offset)
        stage("rope", q, k)
        k, v = c.update_and_fetch(k, v)
        stage("KV cache update", k, v)
        o = mx.fast.scaled_dot_product_attention(q, k, v, scale=a.scale, mask=None)
        stage("attention (sdpa over the cache)", o)
        o = a.o_proj(o.transpose(0, 2, 1, 3).reshape(1, 1, -1))
        stage("o projection", o)
        h = h + o
        n = layer.post_attention_layernorm(h)
        stage("RMS norms", h, n)
        g, u = layer.mlp.gate_proj(n), layer.mlp.up_proj(n)
        stage("gate, up projections (1536x576)", g, u)
        s = swiglu(g, u)
        stage("swiglu", s)
        d = layer.mlp.down_proj(s)
        stage("down projection (576x1536)", d)
        h = h + d
        stage("residual adds", h)
    h = model.model.norm(h)
    stage("RMS norms", h)
    stage("lm_head (tied 49152x576)", model.model.embed_tokens.as_linear(h))
    trim_prompt_cache(cache, 1)


def matvec_rates(library: str) -> list[tuple[str, float, float]]:
    """(shape, MLX x @ W.T GB/s, cblas_sgemv GB/s), weights streamed from memory."""
    import mlx.core as mx
    import numpy as np

    lib = ctypes.CDLL(library)
    pointer = ctypes.c_void_p
    sgemv = lib.cblas_sgemv
    sgemv.argtypes = [ctypes.c_int] * 4 + [ctypes.c_float, pointer, ctypes.c_int, pointer]
    sgemv.argtypes += [ctypes.c_int, ctypes.c_float, pointer, ctypes.c_int]
    rows = []
    shapes = [(576, 576, 60), (1536, 576, 40), (576, 1536, 40), (49152, 576, 1)]
    for rows_out, columns, copies in shapes:
        weights = [np.random.rand(rows_out, columns).astype(np.float32) for _ in range(copies)]
        x, y = np.random.rand(columns).astype(np.float32), np.empty(rows_out, np.float32)
        on_mlx = [mx.array(w) for w in weights]
        x_mlx = mx.array(x)[None]
        mx.eval(on_mlx, x_mlx)
        total = sum(w.nbytes for w in weights)

        best = {"mlx": float("inf"), "sgemv": float("inf")}
        for _ in range(5):
            started = time.perf_counter()
            mx.eval([x_mlx @ w.T for w in on_mlx])
            best["mlx"] = min(best["mlx"], time.perf_counter() - started)
            started = time.perf_counter()
            for w in weights:  # RowMajor (101), NoTrans (111)
                sgemv(101, 111, rows_out, columns, 1.0, w.ctypes.data, columns, x.ctypes.data,
                      1, 0.0, y.ctypes.data, 1)  # fmt: skip
            best["sgemv"] = min(best["sgemv"], time.perf_counter() - started)
        rows.append(
            (f"{rows_out}x{columns}", total / best["mlx"] / 1e9, total / best["sgemv"] / 1e9)
        )
    return rows


def other_precisions() -> list[tuple[str, float]]:
    """ms of one 1536x576 matvec (in cache) in fp32, 4-bit (group 32) and bf16."""
    import mlx.core as mx

    w = mx.random.normal((1536, 576))
    x = mx.random.normal((1, 576))
    q, scales, biases = mx.quantize(w, group_size=32, bits=4)
    wb, xb = w.astype(mx.bfloat16), x.astype(mx.bfloat16)
    mx.eval(w, x, q, scales, biases, wb, xb)
    cases = {
        "fp32 (OpenBLAS sgemm)": lambda: x @ w.T,
        "4-bit (MLX's CPU kernel)": lambda: mx.quantized_matmul(
            x, q, scales, biases, transpose=True, group_size=32, bits=4
        ),
        "bf16 (MLX's CPU kernel)": lambda: xb @ wb.T,
    }
    out = []
    for name, f in cases.items():
        mx.eval(f())
        best = float("inf")
        for _ in range(20):
            started = time.perf_counter()
            mx.eval(f())
            best = min(best, time.perf_counter() - started)
        out.append((name, best * 1e3))
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--cache-tokens", type=int, default=1500)
    args = parser.parse_args()
    import mlx.core as mx
    from mlx_lm.models.cache import make_prompt_cache, trim_prompt_cache

    sys.path.insert(0, str(Path(__file__).parent))
    import smollm2_decode

    from ai_lsp_tune import blas
    from ai_lsp_tune.models.bundled import smollm2_gguf
    from ai_lsp_tune.serving.engine import load_engine

    load = os.getloadavg()
    engine = load_engine(str(smollm2_gguf()))
    model = engine.model
    cache = make_prompt_cache(model)
    rng = random.Random(0)
    prompt = [rng.randrange(3, model.args.vocab_size) for _ in range(args.cache_tokens)]
    for i in range(0, len(prompt), 256):
        model(mx.array(prompt[i : i + 256])[None], cache=cache)
        mx.eval([c.state for c in cache])
    times: dict[str, float] = collections.defaultdict(float)
    staged_step(model, cache, times)
    times.clear()
    started = time.perf_counter()
    for _ in range(args.steps):
        staged_step(model, cache, times)
    staged = (time.perf_counter() - started) / args.steps
    token = mx.array([[5]])
    one_eval, build = float("inf"), float("inf")
    for _ in range(args.steps):
        started = time.perf_counter()
        logits = model(token, cache=cache)
        build = min(build, time.perf_counter() - started)
        mx.eval(logits)
        one_eval = min(one_eval, time.perf_counter() - started)
        trim_prompt_cache(cache, 1)
    copy = smollm2_decode.memory_bandwidth()
    print(f"## decode step profile (blas: {blas.status().describe()}; load {load})\n")
    print("| stage (30 layers summed) | ms per token | share |\n|---|---|---|")
    for name, seconds in sorted(times.items(), key=lambda item: -item[1]):
        share = seconds / args.steps / staged
        print(f"| {name} | {seconds / args.steps * 1e3:.1f} | {share:.0%} |")
    print(f"\nstaged step {staged * 1e3:.0f} ms; one evaluation (min) {one_eval * 1e3:.0f} ms, of")
    print(f"which building the graph in Python {build * 1e3:.1f} ms; copy {copy:.1f} GB/s;")
    print(f"load after {os.getloadavg()}\n\n| weights | MLX x @ W.T GB/s | cblas_sgemv GB/s |")
    print("|---|---|---|")
    for shape, on_mlx, on_blas in matvec_rates(str(blas.status().library)):
        print(f"| {shape} | {on_mlx:.1f} | {on_blas:.1f} |")
    print("\n| 1536x576 matvec, in cache | ms |\n|---|---|")
    for name, ms in other_precisions():
        print(f"| {name} | {ms:.3f} |")


if __name__ == "__main__":
    main()
