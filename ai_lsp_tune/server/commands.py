"""Workspace command ids, in one place: the server advertises them, the editors send them."""

from pygls.exceptions import JsonRpcInvalidParams

FINETUNE = "ai-lsp.finetune"
FINETUNE_CANCEL = "ai-lsp.finetune.cancel"
FINETUNE_STATUS = "ai-lsp.finetune.status"
MODEL_LIST = "ai-lsp.model.list"
MODEL_USE = "ai-lsp.model.use"
MODEL_ROLLBACK = "ai-lsp.model.rollback"
DISMISS = "ai-lsp.dismiss"

ALL_COMMANDS = [
    FINETUNE,
    FINETUNE_CANCEL,
    FINETUNE_STATUS,
    MODEL_LIST,
    MODEL_USE,
    MODEL_ROLLBACK,
    DISMISS,
]


class InvalidArguments(JsonRpcInvalidParams):
    """A command's arguments are malformed or name a path it may not use (-32602 Invalid Params)."""
