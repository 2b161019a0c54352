"""What following a worker through ``supervisor.Child`` costs per message (issue 25).

The three parents read their child's versioned JSON lines through ``Child.messages``, a layer
over ``LineReader.aread`` (the protocol check and the stop on a mismatch). This feeds the same
lines (dataset preparation's progress messages) to both from an asyncio stream, alternately,
and prints the best of ``--rounds`` per message.

    uv run python bench/supervisor_messages.py [--messages 50000] [--rounds 5]
"""

import argparse
import asyncio
import time
import types

from ai_lsp_tune.dataset.protocol import PREPARE_MESSAGES, PrepareProgress
from ai_lsp_tune.supervisor import Child
from ai_lsp_tune.wire import encode_line


def _stream(data: bytes) -> asyncio.StreamReader:
    stream = asyncio.StreamReader(limit=1 << 24)
    stream.feed_data(data)
    stream.feed_eof()
    return stream


async def _main(messages: int, rounds: int) -> None:
    data = b"".join(encode_line(PrepareProgress(done=i, total=messages)) for i in range(messages))
    best = {"LineReader.aread": float("inf"), "Child.messages": float("inf")}
    for _ in range(rounds):
        started = time.perf_counter()
        async for _message in PREPARE_MESSAGES.aread(_stream(data)):
            pass
        best["LineReader.aread"] = min(best["LineReader.aread"], time.perf_counter() - started)
        process = types.SimpleNamespace(stdout=_stream(data), returncode=None, pid=0)
        child = Child(process, PREPARE_MESSAGES, grace_s=1.0)  # type: ignore[arg-type]
        started = time.perf_counter()
        async for _message in child.messages():
            pass
        best["Child.messages"] = min(best["Child.messages"], time.perf_counter() - started)
    print(f"| reader | us per message (best of {rounds}, {messages} messages) |")
    print("|---|---|")
    for name, seconds in best.items():
        print(f"| `{name}` | {seconds / messages * 1e6:.2f} |")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--messages", type=int, default=50_000)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    asyncio.run(_main(args.messages, args.rounds))
