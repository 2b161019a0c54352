"""Tiny GGUF files the tests write themselves: the tiny model, a qwen2 of its shape, bad files."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from ai_lsp_tune.models.gguf_write import write_gguf


def qwen2_model(tiny_model: Path, out_dir: Path) -> Path:
    """A random qwen2 (q/k/v biases, no RoPE permutation in GGUF) with the tiny tokenizer."""
    import mlx.core as mx
    from mlx_lm.models import qwen2
    from mlx_lm.utils import save_config, save_model

    out_dir.mkdir(parents=True, exist_ok=True)
    for name in ("tokenizer.json", "tokenizer_config.json"):
        shutil.copy(tiny_model / name, out_dir / name)
    config = json.loads((tiny_model / "config.json").read_text())
    config["model_type"] = "qwen2"
    mx.random.seed(1)
    model = qwen2.Model(qwen2.ModelArgs.from_dict(config))
    # random biases, so a bias lost or misnamed changes the logits
    model.update({"model": {"layers": [
        {"self_attn": {p: {"bias": mx.random.normal(getattr(layer.self_attn, p).bias.shape)}
                       for p in ("q_proj", "k_proj", "v_proj")}}
        for layer in model.model.layers
    ]}})  # fmt: skip
    mx.eval(model.parameters())
    save_model(out_dir, model)
    save_config(config, out_dir / "config.json")
    return out_dir


def gguf_of(folder: Path, out: Path, out_type: str = "F32") -> Path:
    write_gguf(folder, out, out_type)
    return out
