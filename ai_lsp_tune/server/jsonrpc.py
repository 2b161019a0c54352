"""pygls's protocol, strict at the edge: every malformed request gets the JSON-RPC error it earns.

pygls drops a request it cannot structure (a number as ``method``, a string as ``params``, a body
that is not UTF-8) without an answer, accepts a second ``initialize`` (which would move the
workspace root), and logs a handler's deliberate refusal as an error with a traceback. Here each
gets an error response for its id, and refusals are logged at INFO.
"""

from __future__ import annotations

import json
import logging
from concurrent.futures import Future
from typing import Any

import attrs
from cattrs.errors import ClassValidationError
from lsprotocol import types
from lsprotocol.types import ResponseErrorMessage
from pygls.exceptions import (
    JsonRpcException,
    JsonRpcInvalidParams,
    JsonRpcInvalidRequest,
    JsonRpcParseError,
)
from pygls.protocol import LanguageServerProtocol, lsp_method
from pygls.protocol.json_rpc import (
    JsonRPCNotification,
    JsonRPCRequestMessage,
    JsonRPCResponseMessage,
    MsgId,
)

from ai_lsp_tune.server.settings import in_client_terms
from ai_lsp_tune.shorten import EDITOR_MESSAGE_CHARS, shorten

log = logging.getLogger(__name__)
MAX_NESTING = 200  # LSP messages nest a dozen levels; settings and arguments a few more


@attrs.define
class MessageAction(types.MessageActionItem):
    """A message's action with a stable ``id`` (the command it amounts to) beside its title, as
    LSP's additional properties (``messageActionItem.additionalPropertiesSupport``): an editor
    acts on the id, never on the English title."""

    id: str = ""


def _action_json(item: types.MessageActionItem) -> dict[str, Any]:
    """lsprotocol's converter writes a subclass as its declared class: the id would be lost."""
    return {"title": item.title, **({"id": item.id} if isinstance(item, MessageAction) else {})}


class AiLspProtocol(LanguageServerProtocol):
    """Reads one message body at a time (``receive``), answering what cannot be handled."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._initialize_received = False
        self._converter.register_unstructure_hook(types.MessageActionItem, _action_json)

    def receive(self, body: bytes) -> bool:
        """Handle one frame's body; False when it is not JSON at all (its length probably lied)."""
        try:
            text, utf8 = body.decode("utf-8"), True
        except UnicodeDecodeError:
            text, utf8 = body.decode("utf-8", errors="surrogateescape"), False
        try:
            data = json.loads(text)
        except RecursionError:  # JSON nested deeper than Python's stack: answered, never read
            log.warning("a message nested too deeply to parse; answered with a parse error")
            self.refuse(None, JsonRpcParseError("the message is nested too deeply to parse"))
            return True
        except ValueError as exc:
            log.warning("a message that is not JSON (%s); answered with a parse error", exc)
            self.refuse(None, JsonRpcParseError(f"the message is not JSON: {exc}"))
            return False
        msg_id = _request_id(data)
        if _deeper_than(data, MAX_NESTING):  # no LSP message is; handlers would recurse on it
            log.warning("a message (id %r) nested deeper than %d levels", msg_id, MAX_NESTING)
            if not _expects_no_answer(data):
                self.refuse(msg_id, JsonRpcInvalidRequest(f"nested deeper than {MAX_NESTING}"))
            return True
        if not utf8:
            log.warning("a message (id %r) that is not valid UTF-8", msg_id)
            if not _expects_no_answer(data):
                self.refuse(msg_id, JsonRpcParseError("the message is not valid UTF-8"))
            return True
        try:
            message = self._structure(data)
        except JsonRpcException as exc:
            if _expects_no_answer(data):  # a notification, or a response to one of ours
                log.warning("ignored a malformed message: %s", exc.message)
            else:
                log.info("answered a malformed request (id %r): %s", msg_id, exc.message)
                self.refuse(msg_id, exc)
            return True
        self.handle_message(message)
        return True

    def refuse(self, msg_id: MsgId | None, error: JsonRpcException) -> None:
        """Send ``error`` as the answer to ``msg_id`` (None: JSON-RPC's "id unknown"); a long
        message is cut for the editor's popup (the log has it whole)."""
        answer = error.to_response_error()
        answer.message = in_client_terms(answer.message, self._client_name())
        if len(answer.message) > EDITOR_MESSAGE_CHARS:
            log.info("refused %r in full: %s", msg_id, answer.message)
            answer.message = shorten(answer.message) + " (more in the server log)"
        self._send_data(ResponseErrorMessage(id=msg_id, error=answer))

    def _structure(self, data: Any) -> Any:
        """The typed message for ``data``; what JSON-RPC calls an invalid request is refused."""
        problem = _invalid_request(data)
        if problem:
            raise JsonRpcInvalidRequest(problem)
        try:
            if "method" in data:
                default = JsonRPCRequestMessage if "id" in data else JsonRPCNotification
                return self._converter.structure(
                    data, self.get_message_type(data["method"]) or default
                )
            if "error" in data:
                return self._converter.structure(data, ResponseErrorMessage)
            response_type = self._result_types.pop(data["id"], None) or JsonRPCResponseMessage
            return self._converter.structure(data, response_type)
        except (ClassValidationError, TypeError, ValueError) as exc:
            raise JsonRpcInvalidParams(f"{data.get('method', 'response')}: {_reason(exc)}") from exc

    def _client_name(self) -> str | None:
        return getattr(getattr(self._server, "state", None), "client_name", None)

    def _send_handler_result(self, future: Future[Any], *, msg_id: MsgId) -> None:
        """A handler's deliberate refusal (a JSON-RPC error) is answered and logged at INFO; a
        command's ``message`` names settings as the client writes them."""
        error = None if future.cancelled() else future.exception()
        if error is None and not future.cancelled():
            result = future.result()
            if isinstance(result, dict) and isinstance(result.get("message"), str):
                result["message"] = in_client_terms(result["message"], self._client_name())
        if not isinstance(error, JsonRpcException):
            super()._send_handler_result(future, msg_id=msg_id)
            return
        self._request_futures.pop(msg_id, None)
        log.info("refused request %r: %s", msg_id, error.message)
        self.refuse(msg_id, error)

    @lsp_method(types.INITIALIZE)
    def lsp_initialize(self, params: types.InitializeParams) -> Any:
        """Only the first ``initialize`` counts (LSP); a later one is refused, changing nothing."""
        if self._initialize_received:
            raise JsonRpcInvalidRequest(
                "ai-lsp: the server is already initialized; initialize may be sent only once. "
                "Restart the server to open another workspace."
            )
        self._initialize_received = True
        return (yield from super().lsp_initialize(params))


def _request_id(data: Any) -> MsgId | None:
    """The id to answer, when the message has a usable one."""
    if not isinstance(data, dict):
        return None
    msg_id = data.get("id")
    return msg_id if isinstance(msg_id, str) or _is_int(msg_id) else None


def _expects_no_answer(data: Any) -> bool:
    """Notifications and responses are never answered, not even when malformed (no loops)."""
    if not isinstance(data, dict):
        return False
    if "method" in data:
        return "id" not in data
    return "result" in data or "error" in data


def _deeper_than(data: Any, limit: int) -> bool:
    """Whether JSON ``data`` nests more than ``limit`` levels (walked without recursion)."""
    level = [data] if isinstance(data, dict | list) else []
    for _ in range(limit):
        level = [
            child
            for node in level
            for child in (node.values() if isinstance(node, dict) else node)
            if isinstance(child, dict | list)
        ]
        if not level:
            return False
    return True


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _invalid_request(data: Any) -> str | None:
    """Why ``data`` is not a JSON-RPC 2.0 request, notification or response (None if it is)."""
    if not isinstance(data, dict):
        return "a message must be a JSON object (LSP has no batches)"
    if data.get("jsonrpc") != "2.0":
        return '"jsonrpc" must be "2.0"'
    if "method" in data:
        if "id" in data and not (isinstance(data["id"], str) or _is_int(data["id"])):
            return f'"id" must be a string or an integer, got {type(data["id"]).__name__}'
        if not isinstance(data["method"], str):
            return f'"method" must be a string, got {type(data["method"]).__name__}'
        if data.get("params") is not None and not isinstance(data["params"], dict | list):
            return f'"params" must be an object or an array, got {type(data["params"]).__name__}'
    elif "id" not in data or not ("result" in data or "error" in data):
        return "a message needs a method (request) or an id with a result or error (response)"
    return None


def _reason(exc: Exception) -> str:
    """The first concrete complaint inside a (nested) cattrs validation error."""
    while isinstance(exc, ClassValidationError) and exc.exceptions:
        exc = exc.exceptions[0]
    return str(exc) or type(exc).__name__


__all__ = ["AiLspProtocol"]
