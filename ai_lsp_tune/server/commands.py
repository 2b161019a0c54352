"""Workspace command ids, in one place: the server advertises them, the editors send them."""

FINETUNE = "ai-lsp.finetune"
FINETUNE_CANCEL = "ai-lsp.finetune.cancel"
FINETUNE_STATUS = "ai-lsp.finetune.status"
MODEL_USE = "ai-lsp.model.use"
MODEL_ROLLBACK = "ai-lsp.model.rollback"
DISMISS = "ai-lsp.dismiss"

ALL_COMMANDS = [FINETUNE, FINETUNE_CANCEL, FINETUNE_STATUS, MODEL_USE, MODEL_ROLLBACK, DISMISS]
