"""Whether a model folder's weights fit the model a host has loaded, and whether its tokenizer
is the loaded one: what decides between a switch in place and a second host."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

# Keys of config.json that do not change the network (save_config drops or copies them).
CONFIG_NOISE = {"_name_or_path", "transformers_version", "vision_config", "quantization_config"}
TOKENIZER_FILES = ("tokenizer.json", "tokenizer.model", "vocab.json", "merges.txt")
SPECIAL_TOKENS = ("bos_token", "eos_token", "pad_token", "unk_token", "add_bos_token",
                  "add_eos_token", "added_tokens_decoder")  # fmt: skip


def _comparable_config(path: Path) -> dict[str, Any]:
    from mlx_lm.utils import load_config

    config = {k: v for k, v in load_config(path).items() if k not in CONFIG_NOISE}
    return config


def architecture_difference(loaded: Path, other: Path) -> str | None:
    """Why ``other``'s weights cannot be loaded into the model built from ``loaded``, or None."""
    mine, theirs = _comparable_config(loaded), _comparable_config(other)
    if mine.get("model_type") != theirs.get("model_type"):
        return f"model_type {theirs.get('model_type')!r}, not {mine.get('model_type')!r}"
    differing = sorted(k for k in mine.keys() | theirs.keys() if mine.get(k) != theirs.get(k))
    return f"config.json differs in {', '.join(differing[:3])}" if differing else None


def tokenizer_identity(folder: Path) -> dict[str, Any]:
    """What decides how a folder's tokenizer reads and writes tokens, in a form that survives
    ``save_pretrained`` (a fused model's tokenizer files are rewritten, not copied)."""
    identity: dict[str, Any] = {
        name: (folder / name).read_bytes() for name in TOKENIZER_FILES if (folder / name).is_file()
    }
    settings: dict[str, Any] = {}
    for name in ("special_tokens_map.json", "tokenizer_config.json"):
        if (folder / name).is_file():
            settings.update(json.loads((folder / name).read_text()))
    for key in SPECIAL_TOKENS:
        value = settings.get(key)
        identity[key] = value.get("content") if isinstance(value, dict) else value
    template = folder / "chat_template.jinja"
    chat = template.read_text() if template.is_file() else settings.get("chat_template")
    identity["chat_template"] = chat.strip() if isinstance(chat, str) else chat
    return identity
