"""Latency of a cheap LSP request (textDocument/codeAction) idle vs while the model generates.

Starts the real ``ai-lsp serve`` over stdio with the tiny local MLX model, measures N sequential
codeAction round trips with no analysis running (idle), then again while the model host is
generating a long answer. Targets: p99 < 20 ms while generating and < 2x idle p99.
Writes its section of bench/RESULTS.md.

    uv run python bench/lsp.py [--requests 500]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

from lsprotocol import types
from pygls.lsp.client import LanguageClient

from ai_lsp_tune.cli.tiny_model import ensure_tiny_model

RESULTS = Path(__file__).with_name("RESULTS.md")
SECTION = "## lsp (request latency idle vs while generating)"
CODE = "def total(order):\n    return order.price * order.qty\n" * 20


def percentile(samples: list[float], q: float) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, round(q / 100 * (len(ordered) - 1)))]


async def measure(client: LanguageClient, uri: str, n: int) -> list[float]:
    params = types.CodeActionParams(
        text_document=types.TextDocumentIdentifier(uri=uri),
        range=types.Range(start=types.Position(0, 0), end=types.Position(0, 3)),
        context=types.CodeActionContext(diagnostics=[]),
    )
    latencies = []
    for _ in range(n):
        started = time.perf_counter()
        await client.text_document_code_action_async(params)
        latencies.append((time.perf_counter() - started) * 1000)
    return latencies


async def run(n: int, host_nice: int) -> dict[str, object]:
    home = Path(tempfile.mkdtemp(prefix="ai-lsp-bench-"))
    model = ensure_tiny_model()
    published: list[float] = []
    client = LanguageClient("bench", "1")

    @client.feature(types.TEXT_DOCUMENT_PUBLISH_DIAGNOSTICS)
    def on_diagnostics(params: types.PublishDiagnosticsParams) -> None:
        published.append(time.perf_counter())

    @client.feature(types.WINDOW_LOG_MESSAGE)
    def on_log(params: types.LogMessageParams) -> None:
        pass

    env = {
        **os.environ,
        "AI_LSP_HOME": str(home),
        "HF_HUB_OFFLINE": "1",
        "AI_LSP_HOST_NICE": str(host_nice),
    }
    await client.start_io(
        sys.executable, "-m", "ai_lsp_tune.cli", "serve", "--log-level", "WARNING", env=env
    )
    workspace = home / "ws"
    workspace.mkdir()
    await client.initialize_async(
        types.InitializeParams(
            capabilities=types.ClientCapabilities(),
            root_uri=workspace.as_uri(),
            initialization_options={
                "model": str(model),
                "debounceMs": 0,
                "maxTokens": 100_000,
                "languages": ["nothing-yet"],  # idle phase: no analysis runs
            },
        )
    )
    client.initialized(types.InitializedParams())
    uri = (workspace / "orders.py").as_uri()
    client.text_document_did_open(
        types.DidOpenTextDocumentParams(
            text_document=types.TextDocumentItem(
                uri=uri, language_id="python", version=1, text=CODE
            )
        )
    )
    await asyncio.sleep(5)  # the model host loads and warms in the background
    await measure(client, uri, 50)  # warm-up
    idle = await measure(client, uri, n)

    client.workspace_did_change_configuration(
        types.DidChangeConfigurationParams(settings={"aiLsp": {"languages": []}})
    )
    client.text_document_did_change(
        types.DidChangeTextDocumentParams(
            text_document=types.VersionedTextDocumentIdentifier(uri=uri, version=2),
            content_changes=[types.TextDocumentContentChangeWholeDocument(text=CODE + "\n")],
        )
    )
    await asyncio.sleep(1.0)  # prompt prefill done; the host is decoding
    started = time.perf_counter()
    busy = await measure(client, uri, n)
    still_generating = not published or published[-1] > time.perf_counter()
    await client.shutdown_async(None)
    client.exit(None)
    await client.stop()
    return {
        "idle": idle,
        "busy": busy,
        "still_generating": still_generating and not published,
        "window_s": time.perf_counter() - started,
    }


def write_results(results: dict[int, dict[str, object]], n: int) -> str:
    rows = []
    verdicts = []
    for nice, result in results.items():
        idle, busy = result["idle"], result["busy"]
        assert isinstance(idle, list) and isinstance(busy, list)
        for name, samples in (("idle", idle), ("while generating", busy)):
            rows.append(
                f"| {nice} | {name} | {n} | {statistics.median(samples):.2f} "
                f"| {percentile(samples, 99):.2f} | {max(samples):.2f} |"
            )
        ratio = percentile(busy, 99) / percentile(idle, 99)
        met = percentile(busy, 99) < 20 and ratio < 2
        verdicts.append(
            f"- model host at nice {nice}: p99 while generating / p99 idle = **{ratio:.2f}x**, "
            f"target (p99 < 20 ms and < 2x idle) **{'met' if met else 'NOT met'}**; host still "
            f"generating at the end: {'yes' if result['still_generating'] else 'no'}."
        )
    body = "\n".join(
        [
            f"Machine: {platform.platform()}, {os.cpu_count()} CPUs, Python "
            f"{platform.python_version()}; tiny local MLX model (CPU); "
            f"`uv run python bench/lsp.py --requests {n}` ({time.strftime('%Y-%m-%d')}).",
            "",
            "`textDocument/codeAction` round trips, sequential, client to server over stdio. "
            "The shipped default runs the model host at nice 10 (`AI_LSP_HOST_NICE`); nice 0 is "
            "the peer, measured in the same run.",
            "",
            "| host nice | server state | requests | p50 ms | p99 ms | max ms |",
            "|---|---|---|---|---|---|",
            *rows,
            "",
            *verdicts,
        ]
    )
    text = RESULTS.read_text() if RESULTS.exists() else f"# Benchmark results\n\n{SECTION}\n"
    if SECTION not in text:
        text += f"\n{SECTION}\n"
    head, _, rest = text.partition(SECTION)
    _, sep, tail = rest.partition("\n## ")
    RESULTS.write_text(f"{head}{SECTION}\n\n{body}\n" + (f"\n## {tail}" if sep else ""))
    return body


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--requests", type=int, default=500, help="Requests per phase.")
    args = parser.parse_args()
    results = {nice: asyncio.run(run(args.requests, nice)) for nice in (0, 10)}
    print(write_results(results, args.requests))


if __name__ == "__main__":
    main()
