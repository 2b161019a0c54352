"""The model host process: one MLX model in its own process, answering typed JSON-lines requests.

``python -m ai_lsp_tune.serving.worker --model PATH_OR_HUB_NAME``. Requests arrive on stdin; events
leave on the process's original stdout, which is kept for that alone (fd 1 is pointed at stderr,
so a stray print from a library cannot corrupt the channel). Decoding is greedy; the fixed system
prompt is prefilled once into a KV cache that every request starts from (``engine.py``).

A ``switch`` request is answered in the queue's order: requests queued before it finish on the
old weights, the ones after it run on the new.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import os
import queue
import sys
import threading
import time

from ai_lsp_tune.serving.engine import load_engine
from ai_lsp_tune.serving.loading import describe_load_error
from ai_lsp_tune.serving.protocol import (
    HOST_REQUESTS,
    Cancelled,
    CancelRequest,
    GenerateFailed,
    GenerateRequest,
    Ready,
    ShutdownRequest,
    SwitchRequest,
)
from ai_lsp_tune.shorten import NAME_CHARS, shorten
from ai_lsp_tune.wire import LineWriter, ProtocolMismatch

log = logging.getLogger("ai_lsp_tune.host")
EXIT_PROTOCOL_MISMATCH = 2  # the server speaks another protocol version: see the log


def claim_stdout() -> LineWriter:
    """Keep the real stdout for events and send everything else written to fd 1 to stderr."""
    events = os.dup(1)
    os.dup2(2, 1)
    sys.stdout = sys.stderr
    return LineWriter.to_fd(events)


Work = GenerateRequest | SwitchRequest | ProtocolMismatch | None


def _read_requests(work: queue.Queue[Work], cancelled: set[int]) -> None:
    """Reader thread: queue generations, note cancellations at once; EOF means shut down."""
    try:
        for request in HOST_REQUESTS.read(sys.stdin.buffer):
            if isinstance(request, CancelRequest):
                cancelled.add(request.id)
            elif isinstance(request, ShutdownRequest):
                break
            else:
                work.put(request)
    except ProtocolMismatch as exc:  # nothing it sends can be trusted: stop after the queue
        work.put(exc)
    work.put(None)


def serve(model_name: str, channel: LineWriter, adapter: str | None = None) -> int:
    """Load, warm, announce readiness, then answer requests one at a time until shut down."""
    started = time.perf_counter()
    try:
        engine = load_engine(model_name, adapter)
        cached = engine.warm()
        engine.prepare_grammar()
    except Exception as exc:
        log.error("could not load %s: %s", adapter or model_name, exc)
        channel.send(describe_load_error(adapter or model_name, exc))
        return 1
    channel.send(
        Ready(model=engine.name, load_s=time.perf_counter() - started, prompt_cache_tokens=cached)
    )
    work: queue.Queue[Work] = queue.Queue()
    cancelled: set[int] = set()
    threading.Thread(target=_read_requests, args=(work, cancelled), daemon=True).start()
    while (request := work.get()) is not None:
        if isinstance(request, ProtocolMismatch):
            log.error("%s", request)
            return EXIT_PROTOCOL_MISMATCH
        if isinstance(request, SwitchRequest):
            # In the queue's order: what was sent before finishes on the old weights.
            switched = engine.switch(request)
            log.info("switch to %s: %s", shorten(switched.model, NAME_CHARS), switched.type)
            channel.send(switched)
            continue
        if request.id in cancelled:
            cancelled.discard(request.id)
            channel.send(Cancelled(id=request.id))
            continue
        try:
            channel.send(engine.generate(request, cancelled))
        except Exception as exc:
            log.exception("generation %d failed", request.id)
            channel.send(GenerateFailed(id=request.id, message=f"{type(exc).__name__}: {exc}"))
        cancelled.discard(request.id)
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--model", required=True, help="MLX model folder or hub name.")
    parser.add_argument("--adapter", help="LoRA adapter folder to serve on top of --model.")
    args = parser.parse_args(argv)
    channel = claim_stdout()
    # Generation is background work: the editor-facing language server must win the CPU.
    with contextlib.suppress(OSError, ValueError):
        os.nice(int(os.environ.get("AI_LSP_HOST_NICE", "10")))
    logging.basicConfig(
        level=os.environ.get("AI_LSP_HOST_LOG_LEVEL", "INFO"),
        stream=sys.stderr,
        format="%(asctime)s host[%(process)d] %(levelname)s %(message)s",
    )
    return serve(args.model, channel, args.adapter)


if __name__ == "__main__":
    sys.exit(main())
