"""A raw-bytes client for ``ai-lsp serve``: frames are written by hand, so tests can break them."""

from __future__ import annotations

import contextlib
import json
import os
import queue
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

SERVER_COMMAND = [sys.executable, "-m", "ai_lsp_tune.cli", "serve", "--log-level", "INFO"]


def frame(message: dict[str, Any] | bytes, *, length: int | None = None) -> bytes:
    """One LSP frame; ``length`` overrides the true Content-Length (to lie about it)."""
    body = message if isinstance(message, bytes) else json.dumps(message).encode()
    size = len(body) if length is None else length
    return f"Content-Length: {size}\r\n\r\n".encode() + body


# A frame broken each way a client (or a line on the wire) can break one.
BROKEN_FRAMES: dict[str, Callable[[bytes], bytes]] = {
    "no Content-Length": lambda body: b"Content-Type: application/json\r\n\r\n" + body,
    "Content-Length: abc": lambda body: b"Content-Length: abc\r\n\r\n" + body,
    "Content-Length: -5": lambda body: b"Content-Length: -5\r\n\r\n" + body,
    "20 bytes short": lambda body: frame(body, length=len(body) - 20),
    "40 bytes long": lambda body: frame(body, length=len(body) + 40),
    "LF-only headers": lambda body: f"Content-Length: {len(body)}\n\n".encode() + body,
    "a terabyte": lambda body: b"Content-Length: 1000000000000\r\n\r\n" + body,
}


class RawServer:
    """The real server process; a thread splits its stdout into messages."""

    def __init__(
        self,
        env: dict[str, str],
        log_file: Path,
        command: list[str] = SERVER_COMMAND,
        *,
        first_id: int = 0,
    ) -> None:
        self.log_file = log_file
        self._log = log_file.open("wb")
        self.process = subprocess.Popen(
            command,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=self._log,
            env={**os.environ, **env},
        )
        self.inbox: queue.Queue[dict[str, Any]] = queue.Queue()
        self.notifications: list[dict[str, Any]] = []
        self.responses: dict[Any, dict[str, Any]] = {}
        self._next_id = first_id  # the ids of its requests count on from here
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        stdout = self.process.stdout
        assert stdout is not None
        while True:
            length = None
            while True:
                line = stdout.readline()
                if not line:
                    return
                if not line.strip():
                    break
                name, _, value = line.decode().partition(":")
                if name.lower() == "content-length":
                    length = int(value)
            assert length is not None
            self.inbox.put(json.loads(stdout.read(length)))

    def send_bytes(self, data: bytes) -> None:
        assert self.process.stdin is not None
        self.process.stdin.write(data)
        self.process.stdin.flush()

    def send(self, message: dict[str, Any]) -> None:
        self.send_bytes(frame(message))

    def request_message(self, method: str, params: Any = None) -> dict[str, Any]:
        self._next_id += 1
        message: dict[str, Any] = {"jsonrpc": "2.0", "id": self._next_id, "method": method}
        if params is not None:
            message["params"] = params
        return message

    def request(self, method: str, params: Any = None, *, timeout_s: float = 20) -> dict[str, Any]:
        message = self.request_message(method, params)
        self.send(message)
        return self.response(message["id"], timeout_s=timeout_s)

    def notify(self, method: str, params: Any) -> None:
        self.send({"jsonrpc": "2.0", "method": method, "params": params})

    def command(self, command: str, *arguments: Any) -> dict[str, Any]:
        return self.request(
            "workspace/executeCommand", {"command": command, "arguments": list(arguments)}
        )

    def _pump(self, timeout_s: float) -> None:
        message = self.inbox.get(timeout=timeout_s)
        if "method" in message and "id" in message:  # a request from the server: say yes
            self.send({"jsonrpc": "2.0", "id": message["id"], "result": None})
        elif "method" in message:
            self.notifications.append(message)
        else:
            self.responses[message.get("id")] = message

    def response(self, msg_id: Any, *, timeout_s: float = 20) -> dict[str, Any]:
        return self.wait_for(lambda: self.responses.get(msg_id), timeout_s, f"response {msg_id}")

    def wait_for(self, predicate: Any, timeout_s: float = 20, what: str = "message") -> Any:
        deadline = time.monotonic() + timeout_s
        while not (value := predicate()):
            left = deadline - time.monotonic()
            if left <= 0:
                raise AssertionError(f"no {what} within {timeout_s} s")
            with contextlib.suppress(queue.Empty):
                self._pump(left)
        return value

    def drain(self, seconds: float) -> None:
        """Read what the server sends for ``seconds`` (to check that something is NOT sent)."""
        deadline = time.monotonic() + seconds
        while (left := deadline - time.monotonic()) > 0:
            with contextlib.suppress(queue.Empty):
                self._pump(left)

    def shown(self, level: int | None = None) -> list[str]:
        return [
            n["params"]["message"]
            for n in self.notifications
            if n["method"] == "window/showMessage"
            and (level is None or n["params"]["type"] == level)
        ]

    def initialize(self, root: Path | str, init_options: dict[str, Any]) -> dict[str, Any]:
        root_uri = root if isinstance(root, str) else root.as_uri()
        answer = self.request(
            "initialize",
            {
                "processId": None,
                "rootUri": root_uri,
                "capabilities": {"window": {"workDoneProgress": True}},
                "initializationOptions": init_options,
            },
        )
        self.notify("initialized", {})
        return answer

    def wait_until_ready(self, timeout_s: float = 60) -> None:
        """Wait until the backend has started (a rollback waits for it, then answers)."""
        self.request(
            "workspace/executeCommand", {"command": "ai-lsp.model.rollback"}, timeout_s=timeout_s
        )

    def close_stdin_and_wait(self, timeout_s: float = 30) -> int:
        """Close stdin as a vanished client does; the server must exit by itself."""
        assert self.process.stdin is not None
        with contextlib.suppress(BrokenPipeError):
            self.process.stdin.close()
        try:
            return self.process.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired as exc:
            message = f"the server did not exit {timeout_s} s after stdin closed"
            raise AssertionError(message) from exc

    def kill(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait()
        self._log.close()

    def log_text(self) -> str:
        self._log.flush()
        return self.log_file.read_text(errors="replace")


SETTINGS = {"aiLsp": {"backend": "remote", "remoteModel": "openai-chat:teacher", "debounceMs": 50}}
PARSE_ERROR, INVALID_REQUEST, INVALID_PARAMS = -32700, -32600, -32602


def error_code(answer: dict[str, Any]) -> int | None:
    return answer.get("error", {}).get("code")


def error_message(answer: dict[str, Any]) -> str:
    assert "error" in answer, f"expected a refusal, got {answer}"
    return str(answer["error"]["message"])


def open_document(server: RawServer, uri: str, text: str) -> None:
    item = {"uri": uri, "languageId": "python", "version": 1, "text": text}
    server.notify("textDocument/didOpen", {"textDocument": item})


def published(server: RawServer, uri: str) -> list[dict[str, Any]]:
    return [
        n
        for n in server.notifications
        if n["method"] == "textDocument/publishDiagnostics" and n["params"]["uri"] == uri
    ]
