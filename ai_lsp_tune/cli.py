"""The ``ai-lsp`` command line: ``finetune prepare-dataset|train|pipeline``, ``demo``, ``serve``.

Each command parses its options here and delegates to the module that owns the work.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

app = typer.Typer(
    name="ai-lsp",
    help="An AI language server that learns from its own traces (MLX LoRA fine-tuning).",
    no_args_is_help=True,
    rich_markup_mode="rich",
)
finetune_app = typer.Typer(
    help="Turn OpenTelemetry traces into a training set and fine-tune a local MLX model.",
    no_args_is_help=True,
)
app.add_typer(finetune_app, name="finetune")


# --- finetune prepare-dataset (owner: dataset) --------------------------------------------
@finetune_app.command("prepare-dataset")
def prepare_dataset(
    traces: Annotated[list[Path], typer.Argument(help="Trace files (.jsonl, .gz) or folders.")],
) -> None:
    """Extract training examples from OTLP JSON-lines trace files."""
    raise NotImplementedError


# --- finetune train / pipeline, demo (owner: training) -------------------------------------
@finetune_app.command("train")
def train(
    dataset: Annotated[Path, typer.Argument(help="dataset.json or a prepared split folder.")],
) -> None:
    """Fine-tune a model with LoRA on a prepared dataset."""
    raise NotImplementedError


@finetune_app.command("pipeline")
def pipeline(
    traces: Annotated[list[Path], typer.Argument(help="Trace files (.jsonl, .gz) or folders.")],
) -> None:
    """prepare-dataset + train in one go."""
    raise NotImplementedError


@app.command("demo")
def demo() -> None:
    """Offline smoke test: the whole pipeline on sample traces with a tiny local model."""
    raise NotImplementedError


# --- serve (owner: server) ------------------------------------------------------------------
@app.command("serve")
def serve() -> None:
    """Run the language server (stdio by default)."""
    raise NotImplementedError


if __name__ == "__main__":
    app()
