"""``ai-lsp.model.export``: the served fine-tune (or a listed model) as a GGUF with an Ollama
Modelfile beside it, from the editor ("Export model for Ollama / llama.cpp").

The export (about 15 s for SmolLM2) runs in a child process, ``ai-lsp finetune export``, so the
event loop never waits and MLX stays out of the language server; the child writes a temp file
and renames it. Progress goes out as ``$/progress``; the answer is one line naming the file and
the ``ollama create`` command.
"""

from __future__ import annotations

import asyncio
import sys
import uuid
from pathlib import Path
from typing import Any

from ai_lsp_tune.models.resolve import is_gguf
from ai_lsp_tune.server import commands
from ai_lsp_tune.server.commands import ModelExportArguments, parse_arguments
from ai_lsp_tune.server.finetune.handlers import (
    CommandRefused,
    _allowed,
    _model_rows,
)
from ai_lsp_tune.server.finetune.model_list import find_listed
from ai_lsp_tune.server.finetune.progress import ProgressChannel
from ai_lsp_tune.server.language_server import AiLspServer
from ai_lsp_tune.serving.adapters import adapter_base

EXPORT_USAGE = (
    'no argument (the served model) or one object {"modelPath": a path from '
    f'{commands.MODEL_LIST}, "out": "file.gguf", "type": "F16" | "Q8_0" | "F32"}}'
)
TITLE = "Export model for Ollama / llama.cpp"


async def export_model(ls: AiLspServer, *args: Any) -> dict[str, Any]:
    wanted = parse_arguments(commands.MODEL_EXPORT, ModelExportArguments, args, EXPORT_USAGE)
    source = _source(ls, wanted.model_path)
    name = source.parent.name if source.name == "model" else source.name
    if wanted.out is not None:
        out = _allowed(ls, wanted.out)
        if out.suffix.lower() != ".gguf":
            raise CommandRefused(f'{commands.MODEL_EXPORT}: "out" must end in .gguf, not {out}')
    else:
        out = ls.state.workspace_dir / "exports" / name / f"{name}.gguf"
    progress = ProgressChannel(ls, f"ai-lsp-export-{uuid.uuid4().hex[:8]}", TITLE)
    await progress.begin(f"writing {out.name} ({wanted.type})")
    child = await asyncio.create_subprocess_exec(
        *[sys.executable, "-m", "ai_lsp_tune.cli", "finetune", "export", str(source)],
        *["--gguf", str(out), "--type", wanted.type],
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    _, err = await child.communicate()
    if child.returncode != 0:
        lines = [line for line in err.decode(errors="replace").splitlines() if line.strip()]
        errors = [line.removeprefix("error: ") for line in lines if line.startswith("error: ")]
        reason = errors[-1] if errors else (lines[-1] if lines else f"exit {child.returncode}")
        progress.end(f"failed: {reason}")
        raise CommandRefused(f"Export of {name} failed: {reason}")
    modelfile = out.parent / "Modelfile"
    size = out.stat().st_size / 2**20
    message = (
        f"Wrote {out} ({wanted.type}, {size:.0f} MiB) and {modelfile.name}; to serve it: "
        f"cd {out.parent} && ollama create {name} -f Modelfile"
    )
    progress.end(message)
    return {"gguf": str(out), "modelfile": str(modelfile), "message": message}


def _source(ls: AiLspServer, raw: str | None) -> Path:
    """The model to export: the one named (listed, or a folder in the workspace or data dir)
    or the served one; a hub name or a GGUF is refused with what to do instead."""
    if raw is None:
        served = ls.state.served_model
        listed = served.current_path if served is not None else None
        if not listed:
            raise CommandRefused(
                f"No model is being served; name one: {commands.MODEL_EXPORT} "
                f'[{{"modelPath": a path from {commands.MODEL_LIST}}}]'
            )
    else:
        listed = find_listed(_model_rows(ls), raw) or str(_allowed(ls, raw))
    path = Path(listed)
    if path.is_file() and is_gguf(path):
        raise CommandRefused(f"{path} is already a GGUF file: Ollama and llama.cpp load it as is")
    if not path.is_absolute() or not path.exists():
        raise CommandRefused(
            f"{listed} is not a local model folder: export a fine-tune (a run from "
            f"{commands.MODEL_LIST}) or an MLX model folder"
        )
    fused = (path / "config.json").is_file() or (path / "model" / "config.json").is_file()
    if not fused and (adapter_base(listed) or (path / "run.json").is_file()):
        raise CommandRefused(
            f"{path} kept only its LoRA adapter (aiLsp.finetune.fuse false); set "
            "aiLsp.finetune.fuse true and fine-tune again to export a model"
        )
    return path
