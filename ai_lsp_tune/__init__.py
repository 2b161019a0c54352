"""ai-lsp-tune: an AI language server that learns from its own traces."""

__version__ = "0.1.0"
