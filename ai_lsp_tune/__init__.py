"""ai-lsp-tune: an AI language server that learns from its own traces."""

from ai_lsp_tune import blas

__version__ = "0.1.0"

# Before anything imports mlx: MLX's Linux CPU wheel would otherwise bind the reference BLAS.
blas.load()
