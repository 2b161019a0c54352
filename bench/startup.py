"""Language server start-up: time (and CPU) until the first ``initialize`` is answered.

Peers in the same run, each a fresh process over stdio, interleaved round by round:
- ``python -c pass``-like floor: a plain pygls server (pygls + lsprotocol, nothing else);
- ours: ``python -m ai_lsp_tune.cli serve`` (local backend, telemetry on, as an editor starts it);
- ours with protobuf imported at start, as before the exporter imported it lazily (the same
  server, with ``google.protobuf.json_format`` and the OTLP encoder imported first).
The backend starts after ``initialize`` (the model host is another process), so no model is needed.
Writes its section of bench/RESULTS.md.

    uv run python bench/startup.py [--rounds 7]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

RESULTS = Path(__file__).with_name("RESULTS.md")
SECTION = "## startup (time to the first `initialize` answer)"
_SERVE = (
    "import runpy, sys; sys.argv = ['ai-lsp', 'serve']; "
    "runpy.run_module('ai_lsp_tune.cli', run_name='__main__')"
)
_EAGER = (
    "import google.protobuf.json_format, "
    "opentelemetry.exporter.otlp.proto.common.trace_encoder; " + _SERVE
)
_PLAIN_PYGLS = "from pygls.lsp.server import LanguageServer; LanguageServer('peer', '0').start_io()"
PROGRAMS = {
    "plain pygls server": _PLAIN_PYGLS,
    "ours (ai-lsp serve)": _SERVE,
    "ours, protobuf at start (before)": _EAGER,
}
TICKS = os.sysconf("SC_CLK_TCK")


def _frame(message: dict[str, object]) -> bytes:
    body = json.dumps(message).encode()
    return f"Content-Length: {len(body)}\r\n\r\n".encode() + body


def _read(stream: object) -> dict[str, object]:
    length = 0
    while (line := stream.readline()) not in (b"\r\n", b""):  # type: ignore[attr-defined]
        if line.lower().startswith(b"content-length"):
            length = int(line.split(b":")[1])
    return json.loads(stream.read(length))  # type: ignore[attr-defined]


def _cpu_s(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICKS  # utime + stime


def start_once(code: str, home: Path, workspace: Path) -> tuple[float, float]:
    """Seconds and CPU seconds from the process start to the ``initialize`` answer."""
    env = {**os.environ, "AI_LSP_HOME": str(home), "AI_LSP_MODEL": str(home / "no-model")}
    started = time.perf_counter()
    process = subprocess.Popen(
        [sys.executable, "-c", code],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        env=env,
    )
    assert process.stdin is not None and process.stdout is not None
    params = {"processId": None, "rootUri": workspace.as_uri(), "capabilities": {}}
    process.stdin.write(
        _frame({"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": params})
    )
    process.stdin.flush()
    while _read(process.stdout).get("id") != 1:
        pass
    seconds = time.perf_counter() - started
    cpu = _cpu_s(process.pid)
    process.kill()
    process.wait()
    return seconds, cpu


def report(rows: dict[str, list[tuple[float, float]]], rounds: int, load: tuple[float, ...]) -> str:
    after = os.getloadavg()
    lines = [
        SECTION,
        "",
        f"`uv run python bench/startup.py --rounds {rounds}` on {os.cpu_count()} CPU(s), "
        f"{platform.machine()}, Python {platform.python_version()}; fresh processes, interleaved "
        "round by round, same machine and same run; medians. Load average (1, 5, 15 min) before: "
        + ", ".join(f"{x:.2f}" for x in load)
        + "; after: "
        + ", ".join(f"{x:.2f}" for x in after)
        + " (a shared machine: +-30% between runs).",
        "",
        "| server | s to `initialize` answered | CPU s | x plain pygls (CPU) |",
        "|---|---|---|---|",
    ]
    peer_cpu = statistics.median(c for _, c in rows["plain pygls server"])
    for name, samples in rows.items():
        wall = statistics.median(s for s, _ in samples)
        cpu = statistics.median(c for _, c in samples)
        lines.append(f"| {name} | {wall:.2f} | {cpu:.2f} | {cpu / peer_cpu:.1f}x |")
    lines += [
        "",
        "The plain pygls server is the floor every pygls server pays (lsprotocol's types and "
        "converters). Ours adds pydantic (settings, wire messages), OpenTelemetry's SDK and its "
        "own modules; it imports neither MLX (the model host computes) nor pydantic-ai and its "
        "provider SDKs (built in a thread only when `aiLsp.backend` is `remote`), which "
        "`tests/test_server_startup.py` checks.",
        "",
    ]
    return "\n".join(lines)


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
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--no-write", action="store_true", help="Print, do not edit RESULTS.md.")
    args = parser.parse_args()
    load = os.getloadavg()
    rows: dict[str, list[tuple[float, float]]] = {name: [] for name in PROGRAMS}
    with tempfile.TemporaryDirectory() as tmp:
        home, workspace = Path(tmp) / "home", Path(tmp) / "ws"
        workspace.mkdir()
        for _ in range(args.rounds):
            for name, code in PROGRAMS.items():
                rows[name].append(start_once(code, home, workspace))
                print(name, rows[name][-1], flush=True)
    text = report(rows, args.rounds, load)
    print(text)
    if not args.no_write:
        write_section(text)


if __name__ == "__main__":
    main()
