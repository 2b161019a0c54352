"""``python -m ai_lsp_tune.cli``: the same as the ``ai-lsp`` command."""

from ai_lsp_tune.cli.app import app

app()
