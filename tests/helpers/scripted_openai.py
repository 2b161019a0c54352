"""A scripted OpenAI-compatible chat endpoint on 127.0.0.1: the fake remote LLM provider.

The server under test talks to it through pydantic-ai's real OpenAI client over HTTP. A test
gives it a ``script``: a function from the request (model name, messages) to the answer text
(and an optional delay), so answers are deterministic and every request is recorded.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any


@dataclass
class ChatRequest:
    model: str
    messages: list[dict[str, Any]]

    @property
    def user_texts(self) -> list[str]:
        return [_text(m) for m in self.messages if m.get("role") == "user"]

    @property
    def system_text(self) -> str:
        return "".join(_text(m) for m in self.messages if m.get("role") in ("system", "developer"))


@dataclass
class Answer:
    text: str
    delay_s: float = 0.0
    finish_reason: str = "stop"  # "length": the provider stopped at max_tokens


Script = Callable[[ChatRequest], Answer]


@dataclass
class ScriptedEndpoint:
    script: Script
    requests: list[ChatRequest] = field(default_factory=list)
    base_url: str = ""


def _text(message: dict[str, Any]) -> str:
    content = message.get("content")
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "".join(p.get("text", "") for p in content if isinstance(p, dict))
    return ""


@contextmanager
def scripted_endpoint(script: Script) -> Iterator[ScriptedEndpoint]:
    """Serve ``/v1/chat/completions`` from ``script`` on a free loopback port."""
    endpoint = ScriptedEndpoint(script)

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            length = int(self.headers.get("content-length", 0))
            body = json.loads(self.rfile.read(length) or b"{}")
            request = ChatRequest(model=body.get("model", ""), messages=body.get("messages", []))
            endpoint.requests.append(request)
            answer = endpoint.script(request)
            time.sleep(answer.delay_s)
            payload = {
                "id": f"chatcmpl-{len(endpoint.requests)}",
                "object": "chat.completion",
                "created": int(time.time()),
                "model": request.model,
                "choices": [
                    {
                        "index": 0,
                        "message": {"role": "assistant", "content": answer.text},
                        "finish_reason": answer.finish_reason,
                    }
                ],
                "usage": {
                    "prompt_tokens": sum(len(_text(m).split()) for m in request.messages),
                    "completion_tokens": len(answer.text.split()),
                    "total_tokens": 0,
                },
            }
            data = json.dumps(payload).encode()
            try:
                self.send_response(200)
                self.send_header("content-type", "application/json")
                self.send_header("content-length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)
            except (BrokenPipeError, ConnectionResetError):
                pass  # the client gave up on this request (a cancelled analysis)

        def log_message(self, format: str, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    endpoint.base_url = f"http://127.0.0.1:{server.server_address[1]}/v1"
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield endpoint
    finally:
        server.shutdown()
        server.server_close()


EMPTY = '{"issues": []}'


def answers(table: dict[str, list[str] | str], delays: dict[str, float] | None = None):
    """A script answering by a marker found in the analysed code (the last one wins)."""
    calls: dict[str, int] = {}

    def script(request: ChatRequest) -> Answer:
        code = request.user_texts[0]
        for marker, replies in table.items():
            if marker in code:
                n = calls[marker] = calls.get(marker, 0) + 1
                reply = replies if isinstance(replies, str) else replies[min(n, len(replies)) - 1]
                return Answer(reply, (delays or {}).get(marker, 0.0))
        return Answer(EMPTY)

    return script


def remote_env(endpoint: ScriptedEndpoint, home: Path) -> dict[str, str]:
    return {
        "OPENAI_BASE_URL": endpoint.base_url,
        "OPENAI_API_KEY": "test-key",
        "AI_LSP_HOME": str(home),
    }
