"""Language server exit: time (and CPU) from ``exit`` to the end of the process.

Peers in the same run, each a fresh process over stdio, interleaved round by round:
- ours: ``python -m ai_lsp_tune.cli serve`` with the remote backend started (pydantic-ai and
  its OpenAI client loaded, as in a remote session), ending with ``leave_now``;
- the same server ending through the interpreter's teardown of every module (as before).
Nothing is asked of the remote model, so no endpoint is needed. Writes its section of
bench/RESULTS.md.

    uv run python bench/exit.py [--rounds 7]
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.startup import _cpu_s, _frame, _read
from bench.swap import write_section

SECTION = "## exit (time from `exit` to the end of the server process)"
_SERVE = (
    "import runpy, sys; sys.argv = ['ai-lsp', 'serve']; "
    "runpy.run_module('ai_lsp_tune.cli', run_name='__main__')"
)
_TEARDOWN = "import ai_lsp_tune.server.features as f; f.leave_now = lambda code=0: None; " + _SERVE
PROGRAMS = {
    "ours (leave_now)": _SERVE,
    "ours, interpreter teardown (before)": _TEARDOWN,
}
SETTINGS = {"aiLsp": {"backend": "remote", "remoteModel": "openai-chat:teacher"}}


def exit_once(code: str, home: Path, workspace: Path) -> tuple[float, float]:
    """Seconds and CPU seconds from ``exit`` sent to the process gone (backend started)."""
    env = {
        **os.environ,
        "AI_LSP_HOME": str(home),
        "OPENAI_API_KEY": "bench",
        "OPENAI_BASE_URL": "http://127.0.0.1:9/v1",
    }
    process = subprocess.Popen(
        [sys.executable, "-c", code],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        env=env,
    )
    assert process.stdin is not None and process.stdout is not None

    def ask(msg_id: int, method: str, params: object) -> None:
        message = {"jsonrpc": "2.0", "id": msg_id, "method": method, "params": params}
        process.stdin.write(_frame(message))  # type: ignore[union-attr]
        process.stdin.flush()  # type: ignore[union-attr]
        while _read(process.stdout).get("id") != msg_id:
            pass

    init = {"processId": None, "rootUri": workspace.as_uri(), "capabilities": {}}
    ask(1, "initialize", {**init, "initializationOptions": SETTINGS})
    process.stdin.write(_frame({"jsonrpc": "2.0", "method": "initialized", "params": {}}))
    ask(2, "workspace/executeCommand", {"command": "ai-lsp.model.rollback"})  # backend started
    ask(3, "shutdown", None)
    cpu_before = _cpu_s(process.pid)
    started = time.perf_counter()
    process.stdin.write(_frame({"jsonrpc": "2.0", "method": "exit", "params": None}))
    process.stdin.flush()
    _, status, usage = os.wait4(process.pid, 0)
    seconds = time.perf_counter() - started
    process.returncode = os.waitstatus_to_exitcode(status)
    assert process.returncode == 0, process.returncode
    return seconds, usage.ru_utime + usage.ru_stime - cpu_before


def report(rows: dict[str, list[tuple[float, float]]], rounds: int, load: tuple[float, ...]) -> str:
    after = os.getloadavg()
    lines = [
        SECTION,
        "",
        f"`uv run python bench/exit.py --rounds {rounds}` on {os.cpu_count()} CPU(s), "
        f"{platform.machine()}, Python {platform.python_version()}; fresh processes, interleaved "
        "round by round, same machine and same run; medians. Load average (1, 5, 15 min) before: "
        + ", ".join(f"{x:.2f}" for x in load)
        + "; after: "
        + ", ".join(f"{x:.2f}" for x in after)
        + " (a shared machine).",
        "",
        "| server | s from `exit` to gone | CPU s after `exit` |",
        "|---|---|---|",
    ]
    for name, samples in rows.items():
        wall = statistics.median(s for s, _ in samples)
        cpu = statistics.median(c for _, c in samples)
        lines.append(f"| {name} | {wall:.3f} | {cpu:.2f} |")
    lines += [
        "",
        "After its shutdown (model host, training worker and spans closed), the server waits for "
        "threads that are not daemons and runs the atexit functions as the interpreter would, "
        "then ends without tearing down every module and object: an editor gives a server 2 s "
        "after `exit`, and every server a test starts paid the teardown.",
        "",
    ]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--no-write", action="store_true", help="Print, do not edit RESULTS.md.")
    args = parser.parse_args()
    load = os.getloadavg()
    rows: dict[str, list[tuple[float, float]]] = {name: [] for name in PROGRAMS}
    with tempfile.TemporaryDirectory() as tmp:
        workspace = Path(tmp) / "project"
        workspace.mkdir()
        for _ in range(args.rounds):
            for name, code in PROGRAMS.items():
                rows[name].append(exit_once(code, Path(tmp) / "home", workspace))
    text = report(rows, args.rounds, load)
    print(text)
    if not args.no_write:
        write_section(text)


if __name__ == "__main__":
    main()
