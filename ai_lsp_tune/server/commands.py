"""Workspace command ids and their arguments, in one place: the server advertises them and
checks what the editors send."""

import re
from typing import Annotated, Any, ClassVar, Literal, TypeVar

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, ValidationError
from pydantic.alias_generators import to_camel
from pygls.exceptions import JsonRpcInvalidParams

from ai_lsp_tune.shorten import shorten

FINETUNE = "ai-lsp.finetune"
FINETUNE_CANCEL = "ai-lsp.finetune.cancel"
FINETUNE_STATUS = "ai-lsp.finetune.status"
MODEL_LIST = "ai-lsp.model.list"
MODEL_USE = "ai-lsp.model.use"
MODEL_ROLLBACK = "ai-lsp.model.rollback"
MODEL_EXPORT = "ai-lsp.model.export"
DISMISS = "ai-lsp.dismiss"

ALL_COMMANDS = [
    FINETUNE,
    FINETUNE_CANCEL,
    FINETUNE_STATUS,
    MODEL_LIST,
    MODEL_USE,
    MODEL_ROLLBACK,
    MODEL_EXPORT,
    DISMISS,
]


class InvalidArguments(JsonRpcInvalidParams):
    """A command's arguments are malformed or name a path it may not use (-32602 Invalid Params)."""


def _no_lone_surrogates(text: str) -> str:
    if _SURROGATE.search(text):
        raise ValueError("contains a lone UTF-16 surrogate (\\ud800-\\udfff), which no text can")
    return text


_SURROGATE = re.compile("[\ud800-\udfff]")
Text = Annotated[str, AfterValidator(_no_lone_surrogates)]


class Arguments(BaseModel):
    """A command's arguments, checked strictly: ``"false"`` is not a boolean, 1 is not a path."""

    model_config = ConfigDict(strict=True, extra="forbid", frozen=True, alias_generator=to_camel)
    OBJECT_SHAPED: ClassVar[bool] = False  # one object argument rather than positional ones


class FinetuneArguments(Arguments):
    """``ai-lsp.finetune``: ``[]`` or ``[{"traces": [...], "resume": true, ...}]``."""

    OBJECT_SHAPED: ClassVar[bool] = True
    traces: list[Text] = Field(default_factory=list)
    resume: bool = True
    force: bool | None = None
    continue_from_served: bool = False


class ModelUseArguments(Arguments):
    """``ai-lsp.model.use``: ``[modelPath]`` (a path from ``ai-lsp.model.list``)."""

    model_path: Text


class ModelExportArguments(Arguments):
    """``ai-lsp.model.export``: ``[]`` (the served fine-tune) or
    ``[{"modelPath": ..., "out": "x.gguf", "type": "F16"}]``."""

    OBJECT_SHAPED: ClassVar[bool] = True
    model_path: Text | None = None
    out: Text | None = None
    type: Literal["F16", "Q8_0", "F32"] = "F16"


class DismissArguments(Arguments):
    """``ai-lsp.dismiss``: ``[documentUri, diagnosticId]`` (a code action sends them)."""

    document_uri: Text
    diagnostic_id: Text


class NoArguments(Arguments):
    """Cancel, status, list, rollback: nothing to pass."""


A = TypeVar("A", bound=Arguments)


def parse_arguments(command: str, model: type[A], args: tuple[Any, ...], usage: str) -> A:
    """``args`` as ``model`` (positional, or one object for an object-shaped command), or
    InvalidArguments naming the command, the argument at fault and the expected shape."""
    names = [field.alias or name for name, field in model.model_fields.items()]
    shaped = model.OBJECT_SHAPED
    if shaped and len(args) <= 1:
        raw: Any = args[0] if args else {}
    elif not shaped and len(args) == len(names):
        raw = dict(zip(names, args, strict=True))
    else:
        raise InvalidArguments(f"{command} takes {usage}, got {len(args)} argument(s)")
    try:
        return model.model_validate(raw)
    except ValidationError as exc:
        error = exc.errors()[0]
        where = ".".join(str(part) for part in error["loc"]) or "the argument"
        if error["type"] == "extra_forbidden":
            raise InvalidArguments(
                f"{command}: unknown argument {shorten(where, 60)!r} (it takes {usage})"[:300]
            ) from None
        raise InvalidArguments(
            f"{command}: {where}: {error['msg']} (it takes {usage})"[:300]
        ) from None
