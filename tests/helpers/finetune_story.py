"""Shared steps of the fine-tune stories: a teacher session that records traces, a student
session on the tiny local model, and the client side of progress and message requests."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
from pathlib import Path
from typing import Any

from lsprotocol import types

from ai_lsp_tune import paths
from ai_lsp_tune.server import commands
from ai_lsp_tune.traces import genai
from ai_lsp_tune.traces.telemetry import TRACE_FILE_NAME
from tests.helpers.lsp_session import Session, start_session, stop_session
from tests.helpers.scripted_openai import Answer, ChatRequest, scripted_endpoint

FLAW = "eval(data)"
# The message shares no word with the snippet: with "eval runs any code." the tiny model had to
# tell the snippet's `eval` from the message's by position alone, and in some runs (seeds, or
# another CPU's rounding) wrote "eval run code." or ":" for a file it had not seen.
MESSAGE = "Runs any code it is given."
TEACHER_ANSWER = json.dumps(
    {"issues": [{"issue_snippet": FLAW, "severity": "error", "message": MESSAGE}]}
)
# Tiny training: the tiny model learns the teacher's fixed answer within a few dozen steps.
TINY_FINETUNE = {
    "numEpochs": 6,
    "batchSize": 4,
    "learningRate": 2e-3,
    "loraRank": 8,
    "numLayers": -1,
    "maxSeqLength": 1024,
}
# Enough training for the tiny model to learn the teacher's answer (flags FLAW) for a file it
# has not seen, in ~30 s. Measured over training seeds on one editor story's traces (answers to
# 8 unseen files each): at 1e-3 one seed in four garbled every answer; at 5e-4, 62 of 64 right
# and the story's after-swap file right for all 8 seeds.
# Its 16 teacher files leave 2 test examples: too few for the default gate (minTestExamples 5),
# so the story lowers it to see the swap; tests of the gate itself raise it again.
LEARN = {
    "numEpochs": 12,
    "batchSize": 1,
    "learningRate": 5e-4,
    "loraRank": 16,
    "minTestExamples": 1,
}


def source_file(n: int) -> str:
    """Varied code that always holds the flaw the teacher flags."""
    names = ["load", "parse", "read", "fetch", "decode", "apply", "merge", "scan"]
    name = names[n % len(names)]
    return f"def {name}_{n}(data):\n    value = {FLAW}\n    return value + {n}\n"


def teacher_script(request: ChatRequest) -> Answer:
    return Answer(TEACHER_ANSWER)


async def record_teacher_traces(workspace: Path, home: Path, files: int) -> Path:
    """A session with a (scripted) remote teacher: its analyses land in the trace export."""
    with scripted_endpoint(teacher_script) as endpoint:
        env = {
            "OPENAI_BASE_URL": endpoint.base_url,
            "OPENAI_API_KEY": "test-key",
            "AI_LSP_HOME": str(home),
        }
        init = {"backend": "remote", "remoteModel": "openai-chat:teacher", "debounceMs": 0}
        session = await start_session(workspace, env=env, init_options=init)
        try:
            for n in range(files):
                uri = session.open(f"mod_{n}.py", source_file(n))
                # The first waits for the remote backend: importing pydantic-ai took 19 s at load 9
                await session.wait_for_diagnostics(uri, timeout_s=90 if n == 0 else 20)
        finally:
            await stop_session(session)  # shutdown flushes the span processor
    recorded = list(home.glob(f"data/workspaces/*/traces/{TRACE_FILE_NAME}"))
    assert len(recorded) == 1, f"the teacher session recorded no traces under {home}"
    return recorded[0]


def place_traces(recorded: Path, workspace: Path) -> Path:
    """Put recorded traces where this workspace's server exports its own."""
    target = paths.workspace_dir(workspace) / "traces" / TRACE_FILE_NAME
    target.parent.mkdir(parents=True, exist_ok=True)
    shutil.copy(recorded, target)
    return target


class Student:
    """A session serving the tiny local model, with the client's view of progress/messages."""

    def __init__(self, session: Session) -> None:
        self.session = session
        self.client = session.client
        self.requests: list[types.ShowMessageRequestParams] = []
        self.answer: str | None = None  # the action title the "user" picks

    def replace_feature(self, method: str, handler: Any) -> None:
        """Swap one of pytest-lsp's default client handlers for the test's own."""
        self.client.protocol.fm.features.pop(method, None)
        self.client.feature(method)(handler)

    async def command(self, command: str, *args: Any) -> Any:
        return await self.client.workspace_execute_command_async(
            types.ExecuteCommandParams(command=command, arguments=list(args))
        )

    async def status(self) -> dict[str, Any]:
        return dict(await self.command(commands.FINETUNE_STATUS))

    def progress(self, token: str) -> list[Any]:
        return list(self.client.progress_reports.get(token, []))

    def messages(self, token: str) -> list[str]:
        """The messages of ``token``'s progress so far (a report may have none)."""
        return [getattr(r, "message", None) or "" for r in self.progress(token)]

    async def wait_status(self, predicate: Any, *, timeout_s: float, what: str) -> dict[str, Any]:
        deadline = asyncio.get_running_loop().time() + timeout_s
        while True:
            status = await self.status()
            if predicate(status):
                return status
            if asyncio.get_running_loop().time() > deadline:
                raise AssertionError(f"timed out waiting for {what}; last status: {status}")
            await asyncio.sleep(0.1)

    async def wait_ended(self, token: str, timeout_s: float) -> list[Any]:
        def ended() -> bool:
            reports = self.progress(token)
            return bool(reports) and isinstance(reports[-1], types.WorkDoneProgressEnd)

        await self.session.wait_for(ended, timeout_s=timeout_s, what=f"progress {token} to end")
        return self.progress(token)


def student_env(home: Path) -> dict[str, str]:
    return {"AI_LSP_HOME": str(home), "HF_HUB_OFFLINE": "1"}


def student_settings(tiny_model: Path, **finetune: Any) -> dict[str, Any]:
    return {
        "backend": "local",
        "model": str(tiny_model),
        "debounceMs": 0,
        "maxTokens": 96,
        "finetune": {**TINY_FINETUNE, **finetune},
    }


async def start_student(
    workspace: Path,
    home: Path,
    tiny_model: Path,
    *,
    capabilities: types.ClientCapabilities | None = None,
    **finetune: Any,
) -> Student:
    """Start the server on the tiny model; the client answers message requests as told."""
    session = await start_session(
        workspace,
        env=student_env(home),
        init_options=student_settings(tiny_model, **finetune),
        capabilities=capabilities,
    )
    student = Student(session)

    @session.client.feature(types.WINDOW_SHOW_MESSAGE_REQUEST)
    def message_request(params: types.ShowMessageRequestParams) -> types.MessageActionItem | None:
        student.requests.append(params)
        return types.MessageActionItem(title=student.answer) if student.answer else None

    return student


def worker_pids(server_pid: int) -> list[int]:
    """Training worker processes started by the server (children running the worker module)."""
    return child_pids(server_pid, b"ai_lsp_tune.training.worker")


def child_pids(server_pid: int, module: bytes) -> list[int]:
    """The server's child processes whose command line runs ``module``."""
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
            cmdline = Path(f"/proc/{entry}/cmdline").read_bytes().replace(b"\0", b" ")
        except OSError:
            continue
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        if ppid == server_pid and module in cmdline:
            found.append(int(entry))
    return found


QUICK = {"numEpochs": 1, "batchSize": 4, "learningRate": 5e-4, "loraRank": 4}


def analysis_models(workspace: Path) -> list[str]:
    """The model of every analysis span in the workspace's trace export, in order; an analysis
    cancelled before its answer (the next edit, a change of model, shutdown) names none."""
    trace_file = paths.workspace_dir(workspace) / "traces" / TRACE_FILE_NAME
    models = []
    for line in trace_file.read_text().splitlines():
        for resource in json.loads(line)["resourceSpans"]:
            for scope in resource["scopeSpans"]:
                for span in scope["spans"]:
                    attrs = {a["key"]: a["value"] for a in span.get("attributes", [])}
                    if span["name"] == genai.ANALYSIS_SPAN_NAME and genai.REQUEST_MODEL in attrs:
                        models.append(attrs[genai.REQUEST_MODEL]["stringValue"])
    return models


def host_pids(server_pid: int) -> list[int]:
    """Model host processes started by the server (children running the host module)."""
    return child_pids(server_pid, b"ai_lsp_tune.serving.worker")


async def serving(student: Student) -> tuple[str, list[int]]:
    status = await student.wait_status(
        lambda s: s["servedModel"] is not None, timeout_s=60, what="the model host to start"
    )
    return status["servedModel"], host_pids(student.client._server.pid)  # type: ignore[union-attr]
