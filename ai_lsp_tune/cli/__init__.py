"""The ``ai-lsp`` command line (``app``) and its terminal views: prepare, train view, demo."""
