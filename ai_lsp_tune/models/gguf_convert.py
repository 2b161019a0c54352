"""Turn a GGUF model into an mlx-lm model folder: config.json, model.safetensors, tokenizer.

llama.cpp's converter renames Hugging Face tensors and, for llama-family models, permutes the Q
and K rows so its interleaved RoPE matches; we rename back and apply the inverse permutation, so
the folder is the Hugging Face layout mlx-lm (and our trainer and exporter) expects.
"""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np

from ai_lsp_tune.models.errors import ModelError
from ai_lsp_tune.models.gguf_read import GGUFModel, GGUFTensor, read_gguf
from ai_lsp_tune.models.gguf_tokenizer import end_token_ids, write_tokenizer

SUPPORTED = ("llama", "qwen2", "gemma2")
TOP_NAMES = {
    "token_embd": "model.embed_tokens",
    "output_norm": "model.norm",
    "output": "lm_head",
}
LAYER_NAMES = {
    "attn_norm": "input_layernorm",
    "ffn_norm": "post_attention_layernorm",
    "attn_q": "self_attn.q_proj",
    "attn_k": "self_attn.k_proj",
    "attn_v": "self_attn.v_proj",
    "attn_output": "self_attn.o_proj",
    "ffn_gate": "mlp.gate_proj",
    "ffn_up": "mlp.up_proj",
    "ffn_down": "mlp.down_proj",
}
GEMMA2_LAYER_NAMES = {
    **LAYER_NAMES,
    "post_attention_norm": "post_attention_layernorm",
    "ffn_norm": "pre_feedforward_layernorm",
    "post_ffw_norm": "post_feedforward_layernorm",
}
VISION_OR_EMBEDDING = ("clip", "bert", "nomic-bert", "jina-bert-v2", "t5encoder", "mllama")


def check_architecture(model: GGUFModel, name: str) -> None:
    arch = model.architecture
    if arch in SUPPORTED:
        return
    if arch in VISION_OR_EMBEDDING or "pooling_type" in str(list(model.metadata)):
        what = "a vision projector or embedding model"
        raise ModelError(
            "bad_model",
            f"{name} is {what} ({arch}), not a text generation model; pass the language "
            "model's GGUF.",
        )
    raise ModelError(
        "bad_model",
        f"{name} is a {arch} model; GGUF import supports {', '.join(SUPPORTED)} "
        "(for others pass an MLX model folder or Hugging Face name).",
    )


def unpermute_rows(rows: np.ndarray, n_head: int) -> np.ndarray:
    """Inverse of llama.cpp's (and mlx-lm's gguf export) Q/K row permutation for RoPE."""
    shape = rows.shape
    grouped = rows.reshape(n_head, shape[0] // n_head // 2, 2, *shape[1:])
    return grouped.swapaxes(1, 2).reshape(shape)


def _mlx_name(gguf_name: str, arch: str) -> str:
    stem, _, suffix = gguf_name.rpartition(".")
    if stem in TOP_NAMES:
        return f"{TOP_NAMES[stem]}.{suffix}"
    parts = stem.split(".")
    names = GEMMA2_LAYER_NAMES if arch == "gemma2" else LAYER_NAMES
    if len(parts) == 3 and parts[0] == "blk" and parts[2] in names:
        return f"model.layers.{parts[1]}.{names[parts[2]]}.{suffix}"
    raise ModelError(
        "bad_model",
        f"GGUF tensor {gguf_name} has no counterpart in mlx-lm's {arch} model "
        "(a variant this importer does not support); pass an MLX model folder instead.",
    )


def _permuted(tensor: GGUFTensor, n_head: int) -> GGUFTensor:
    return GGUFTensor(
        unpermute_rows(tensor.array, n_head),
        None if tensor.scales is None else unpermute_rows(tensor.scales, n_head),
        None if tensor.biases is None else unpermute_rows(tensor.biases, n_head),
        tensor.bits,
        tensor.bfloat16,
    )


def config_for(model: GGUFModel, vocab_size: int) -> dict[str, Any]:
    """The Hugging Face style config.json mlx-lm builds the model from."""
    arch = model.architecture
    heads = int(model.arch("attention.head_count"))
    hidden = int(model.arch("embedding_length"))
    config: dict[str, Any] = {
        "model_type": arch,
        "hidden_size": hidden,
        "num_hidden_layers": int(model.arch("block_count")),
        "intermediate_size": int(model.arch("feed_forward_length")),
        "num_attention_heads": heads,
        "num_key_value_heads": int(model.arch("attention.head_count_kv", heads)),
        "rms_norm_eps": float(model.arch("attention.layer_norm_rms_epsilon", 1e-6)),
        "vocab_size": vocab_size,
        "rope_theta": float(model.arch("rope.freq_base", 10000.0)),
        "max_position_embeddings": int(model.arch("context_length", 4096)),
        "tie_word_embeddings": "output.weight" not in model.tensors,
    }
    head_dim = model.arch("attention.key_length")
    if head_dim is not None:
        config["head_dim"] = int(head_dim)
    if model.arch("rope.scaling.type") == "linear":
        factor = float(model.arch("rope.scaling.factor", 1.0))
        config["rope_scaling"] = {"type": "linear", "factor": factor}
    if arch == "gemma2":
        config["head_dim"] = int(head_dim or hidden // heads)
        config["attn_logit_softcapping"] = float(model.arch("attn_logit_softcapping", 50.0))
        config["final_logit_softcapping"] = float(model.arch("final_logit_softcapping", 30.0))
        # llama.cpp scales queries by 1/sqrt(head_dim); Gemma 2 27B (46 layers) by hidden/heads
        scalar = hidden // heads if config["num_hidden_layers"] == 46 else config["head_dim"]
        config["query_pre_attn_scalar"] = float(scalar)
    return config


def mlx_weights(model: GGUFModel) -> tuple[dict[str, Any], dict[str, Any] | None]:
    """(MLX arrays by mlx-lm name, the config's ``quantization`` entry or None)."""
    import mlx.core as mx

    arch = model.architecture
    if "rope_freqs.weight" in model.tensors:
        raise ModelError(
            "bad_model",
            "This GGUF scales RoPE frequencies per dimension (Llama 3.1-style rope_freqs), "
            "which the GGUF importer does not support yet; pass the MLX model folder instead.",
        )
    heads = int(model.arch("attention.head_count"))
    kv_heads = int(model.arch("attention.head_count_kv", heads))
    weights: dict[str, Any] = {}
    bits_by_module: dict[str, int] = {}
    for gguf_name, tensor in model.tensors.items():
        name = _mlx_name(gguf_name, arch)
        if arch == "llama" and ".attn_q." in gguf_name:
            tensor = _permuted(tensor, heads)
        elif arch == "llama" and ".attn_k." in gguf_name:
            tensor = _permuted(tensor, kv_heads)
        array = tensor.array
        if arch == "gemma2" and gguf_name.endswith("norm.weight"):
            array = array - 1.0  # llama.cpp stores Gemma's (1 + w) norm scale; mlx-lm adds the 1
        weights[name] = mx.array(array).astype(mx.bfloat16) if tensor.bfloat16 else mx.array(array)
        if tensor.bits is not None and tensor.scales is not None and tensor.biases is not None:
            module = name.rpartition(".")[0]
            weights[f"{module}.scales"] = mx.array(tensor.scales)
            weights[f"{module}.biases"] = mx.array(tensor.biases)
            bits_by_module[module] = tensor.bits
    if not bits_by_module:
        return weights, None
    bits = Counter(bits_by_module.values()).most_common(1)[0][0]
    quantization: dict[str, Any] = {"group_size": 32, "bits": bits}
    for module, module_bits in bits_by_module.items():
        if module_bits != bits:
            quantization[module] = {"group_size": 32, "bits": module_bits}
    return weights, quantization


def dequantized_note(model: GGUFModel) -> str | None:
    """One line on what dequantizing K-quant (or other) tensors costs in memory, if any."""
    if not model.dequantized:
        return None
    extra = sum(model.tensors[name].array.nbytes for name in model.dequantized)
    kinds = ", ".join(sorted(set(model.dequantized.values())))
    return (
        f"{len(model.dequantized)} tensors in {kinds} were dequantized to float16 "
        f"({extra / 2**20:.0f} MiB in memory); a Q8_0 or Q4_0 file stays quantized."
    )


def convert_gguf(source: Path, folder: Path) -> str | None:
    """Write the mlx-lm folder for ``source`` into ``folder``; returns a note for the user."""
    import mlx.core as mx

    model = read_gguf(source)
    check_architecture(model, source.name)
    weights, quantization = mlx_weights(model)
    write_tokenizer(model, folder)
    config = config_for(model, int(model.tensors["token_embd.weight"].array.shape[0]))
    config["eos_token_id"] = end_token_ids(model.metadata)
    if model.metadata.get("tokenizer.ggml.bos_token_id") is not None:
        config["bos_token_id"] = int(model.metadata["tokenizer.ggml.bos_token_id"])
    if quantization is not None:
        config["quantization"] = config["quantization_config"] = quantization
    mx.save_safetensors(str(folder / "model.safetensors"), weights, metadata={"format": "mlx"})
    (folder / "config.json").write_text(json.dumps(config, indent=2))
    return dequantized_note(model)
