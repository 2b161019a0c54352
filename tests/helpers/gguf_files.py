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


def gemma2_model(tiny_model: Path, out_dir: Path) -> Path:
    """A random gemma2 (four norms per layer, soft-capping) with the tiny tokenizer."""
    import mlx.core as mx
    from mlx_lm.models import gemma2
    from mlx_lm.utils import save_config, save_model

    out_dir.mkdir(parents=True, exist_ok=True)
    for name in ("tokenizer.json", "tokenizer_config.json"):
        shutil.copy(tiny_model / name, out_dir / name)
    config = json.loads((tiny_model / "config.json").read_text())
    config |= {"model_type": "gemma2", "head_dim": 32, "query_pre_attn_scalar": 32}
    mx.random.seed(2)
    model = gemma2.Model(gemma2.ModelArgs.from_dict(config))
    # norms away from their zero init, so a lost "+1" changes the logits
    norms = [(k, mx.random.normal(v.shape) * 0.5) for k, v in _flat(model) if "norm" in k]
    model.load_weights(norms, strict=False)
    mx.eval(model.parameters())
    save_model(out_dir, model)
    save_config(config, out_dir / "config.json")
    return out_dir


def _flat(model: object) -> list[tuple[str, object]]:
    from mlx.utils import tree_flatten

    return tree_flatten(model.parameters())  # type: ignore[attr-defined]


def gguf_of(folder: Path, out: Path, out_type: str = "F32") -> Path:
    write_gguf(folder, out, out_type)
    return out
