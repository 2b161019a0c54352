"""A random model of SmolLM2-135M-Instruct's shape, 4-bit like its Q4 GGUF, for bench/ rows.

Until the GGUF import lands (issue 21) the benchmarks measure the real model's shape with random
weights: llama, 30 layers, hidden 576, 9 query and 3 key/value heads of 64, MLP 1536, tied
embeddings, vocabulary 49,152 (a byte-level BPE trained here on the Python standard library's
sources, as bench/decode.py's wide vocabulary is), quantized with group size 32 and 4 bits.
Built once into the cache folder.
"""

from __future__ import annotations

import os
import sys
import sysconfig
from collections.abc import Iterator
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from ai_lsp_tune import paths
from ai_lsp_tune.cli.tiny_model import build_tiny_model

VOCAB = 49_152
SHAPE = {  # HuggingFaceTB/SmolLM2-135M-Instruct's config.json
    "hidden_size": 576,
    "num_hidden_layers": 30,
    "intermediate_size": 1536,
    "num_attention_heads": 9,
    "num_key_value_heads": 3,
    "head_dim": 64,
    "rms_norm_eps": 1e-5,
    "rope_theta": 100000.0,
    "max_position_embeddings": 8192,
    "tie_word_embeddings": True,
}


def _stdlib_sources() -> Iterator[str]:
    for path in sorted(Path(sysconfig.get_paths()["stdlib"]).rglob("*.py")):
        yield path.read_text(encoding="utf-8", errors="ignore")


def smollm2_shaped(bits: int = 4) -> Path:
    """The model folder (built on first use: a minute or two)."""
    from mlx_lm.utils import load, quantize_model, save_config, save_model

    target = paths.cache_dir() / f"bench-smollm2-135m-shape-q{bits}"
    if (target / "model.safetensors").exists():
        return target
    staging = target.with_name(target.name + ".partial")
    staging.mkdir(parents=True, exist_ok=True)
    build_tiny_model(
        staging,
        word_split=True,
        vocab_size=VOCAB,
        model_vocab_size=VOCAB,
        corpus=_stdlib_sources(),
        config=SHAPE,
    )
    model, _, config = load(str(staging), return_config=True)  # type: ignore[misc]
    model, config = quantize_model(model, config, group_size=32, bits=bits)
    for old in staging.glob("model*.safetensors"):
        old.unlink()
    save_model(staging, model)
    save_config(config, staging / "config.json")
    os.rename(staging, target)
    return target


def flops_per_token(model: Path) -> float:
    """2 x multiply-adds of one token's forward through the linear layers and the vocabulary
    (attention scores left out)."""
    import json

    c = json.loads((model / "config.json").read_text())
    h, i, d = c["hidden_size"], c["intermediate_size"], c["head_dim"]
    q, kv = c["num_attention_heads"] * d, c["num_key_value_heads"] * d
    layer = 2 * h * q + 2 * h * kv + 3 * h * i
    return 2 * (c["num_hidden_layers"] * layer + h * c["vocab_size"])


if __name__ == "__main__":
    print(smollm2_shaped())


def write_section(results: Path, section: str, text: str) -> None:
    content = results.read_text()
    if section in content:
        start = content.index(section)
        end = content.find("\n## ", start + len(section))
        content = content[:start] + text + (content[end + 1 :] if end != -1 else "")
    else:
        content = content.rstrip("\n") + "\n\n" + text
    results.write_text(content)
