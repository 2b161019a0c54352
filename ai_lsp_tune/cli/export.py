"""``ai-lsp finetune export``: a fine-tune (or any model folder) as a GGUF plus an Ollama
Modelfile, for llama.cpp, Ollama and LM Studio."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

GGUF_TYPES = ("F16", "Q8_0", "F32")


def model_folder(source: Path) -> Path:
    """The fused model folder of a run (its output dir), or ``source`` when it is a model."""
    if (source / "run.json").is_file():
        if (source / "model" / "config.json").is_file():
            return source / "model"
        raise ValueError(
            f"Run {source} kept only its adapter (trained with --no-fuse); train it again "
            "without --no-fuse to export a model."
        )
    if (source / "config.json").is_file():
        return source
    raise ValueError(f"{source} is neither a run's output folder (run.json) nor a model folder.")


def export_command(
    source: Annotated[Path, typer.Argument(help="A run's output folder or an MLX model folder.")],
    gguf: Annotated[Path, typer.Option("--gguf", help="The GGUF file to write.")],
    out_type: Annotated[
        str,
        typer.Option(
            "--type",
            help="Tensor type: F16 (default; a quantized model is dequantized, as MLX's groups "
            "have no exact GGUF type), Q8_0 (half the size, near-lossless) or F32.",
        ),
    ] = "F16",
) -> None:
    """Write a fine-tuned model as a GGUF file with an Ollama Modelfile beside it."""
    from ai_lsp_tune.models.errors import ModelError
    from ai_lsp_tune.models.gguf_write import write_gguf
    from ai_lsp_tune.models.modelfile import write_modelfile

    if out_type not in GGUF_TYPES:
        typer.echo(f"error: --type {out_type} is not one of {', '.join(GGUF_TYPES)}", err=True)
        raise typer.Exit(2)
    try:
        folder = model_folder(source.expanduser())
        gguf.parent.mkdir(parents=True, exist_ok=True)
        write_gguf(folder, gguf, out_type)
        modelfile = write_modelfile(gguf, folder)
    except (ValueError, ModelError, OSError) as exc:
        message = exc.message if isinstance(exc, ModelError) else str(exc)
        typer.echo(f"error: {message}", err=True)
        raise typer.Exit(1) from exc
    config = json.loads((folder / "config.json").read_text())
    note = " (dequantized from MLX 4/8-bit)" if "quantization" in config else ""
    typer.echo(f"Wrote {gguf} ({out_type}{note}, {gguf.stat().st_size / 2**20:.0f} MiB)")
    typer.echo(f"Wrote {modelfile}; to serve it: ollama create NAME -f {modelfile}")
