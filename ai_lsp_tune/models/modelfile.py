"""An Ollama ``Modelfile`` beside an exported GGUF: the chat template in Ollama's Go template
language, the stop tokens and the parameters the language server decodes with."""

from __future__ import annotations

import json
import os
from pathlib import Path

from ai_lsp_tune.prompts import LOCAL_SYSTEM_PROMPT

CHATML_TEMPLATE = """{{- range .Messages }}<|im_start|>{{ .Role }}
{{ .Content }}<|im_end|>
{{ end }}<|im_start|>assistant
"""
GEMMA_TEMPLATE = """{{- range $i, $_ := .Messages }}
{{- $last := eq (len (slice $.Messages $i)) 1 }}
{{- if or (eq .Role "user") (eq .Role "system") }}<start_of_turn>user
{{ .Content }}<end_of_turn>
{{ if $last }}<start_of_turn>model
{{ end }}
{{- else if eq .Role "assistant" }}<start_of_turn>model
{{ .Content }}{{ if not $last }}<end_of_turn>
{{ end }}
{{- end }}
{{- end }}"""


def ollama_template(chat_template: str | None) -> str | None:
    """Ollama's template for a Jinja chat template we recognise; None: Ollama reads the GGUF's."""
    if not chat_template:
        return None
    if "<|im_start|>" in chat_template:
        return CHATML_TEMPLATE
    if "<start_of_turn>" in chat_template:
        return GEMMA_TEMPLATE
    return None


def modelfile_text(gguf_name: str, folder: Path) -> str:
    """The Modelfile for ``gguf_name`` (beside it) exported from the mlx-lm ``folder``."""
    settings = json.loads((folder / "tokenizer_config.json").read_text())
    template_file = folder / "chat_template.jinja"
    chat = template_file.read_text() if template_file.is_file() else settings.get("chat_template")
    lines = [f"FROM ./{gguf_name}", ""]
    template = ollama_template(chat if isinstance(chat, str) else None)
    if template is not None:
        lines += [f'TEMPLATE """{template}"""', ""]
    lines += [f'SYSTEM """{LOCAL_SYSTEM_PROMPT}"""', ""]  # what it was trained on
    stops = ["<|im_end|>"] if template == CHATML_TEMPLATE else []
    stops += ["<end_of_turn>"] if template == GEMMA_TEMPLATE else []
    eos = settings.get("eos_token")
    eos = eos.get("content") if isinstance(eos, dict) else eos
    if isinstance(eos, str) and eos not in stops:
        stops.append(eos)
    lines += [f"PARAMETER stop {json.dumps(stop)}" for stop in stops]
    lines += ["PARAMETER temperature 0", ""]  # the language server decodes greedily
    return "\n".join(lines)


def write_modelfile(gguf_path: Path, folder: Path) -> Path:
    """Write ``Modelfile`` beside ``gguf_path`` (temp file + rename)."""
    target = gguf_path.parent / "Modelfile"
    temp = target.with_name(f".Modelfile.{os.getpid()}.tmp")
    temp.write_text(modelfile_text(gguf_path.name, folder))
    os.replace(temp, target)
    return target
