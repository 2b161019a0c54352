"""Write an mlx-lm model folder (a base or a fused fine-tune) as one GGUF file llama.cpp and
Ollama load: weights renamed and, for llama, Q/K rows permuted for llama.cpp's RoPE; the
byte-level BPE tokenizer, its special tokens and the chat template in the metadata.

A quantized folder is dequantized first and written as F16 (or Q8_0 when asked): MLX's
4-bit groups of 64 have no exact GGUF type, so re-quantizing would lose precision twice.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import numpy as np

from ai_lsp_tune.models.errors import ModelError
from ai_lsp_tune.models.gguf_convert import GEMMA2_LAYER_NAMES, LAYER_NAMES, SUPPORTED, TOP_NAMES
from ai_lsp_tune.models.gguf_tokenizer import BYTE_LEVEL_PRE, LLAMA3_SPLIT, QWEN2_SPLIT

CONTROL, USER_DEFINED, NORMAL = 3, 4, 1
OUT_TYPES = ("F32", "F16", "Q8_0", "Q4_0", "Q4_1")


def permute_rows(rows: np.ndarray, n_head: int) -> np.ndarray:
    """llama.cpp's Q/K row permutation for its interleaved RoPE (as its converter does)."""
    shape = rows.shape
    grouped = rows.reshape(n_head, 2, shape[0] // n_head // 2, *shape[1:])
    return grouped.swapaxes(1, 2).reshape(shape)


def _float_weights(folder: Path, config: dict[str, Any]) -> dict[str, np.ndarray]:
    import mlx.core as mx

    arrays: dict[str, Any] = {}
    for file in sorted(folder.glob("model*.safetensors")):
        loaded = mx.load(str(file))
        assert isinstance(loaded, dict)
        arrays.update(loaded)
    quantization = config.get("quantization") or {}
    for key in [k for k in arrays if k.endswith(".scales")]:
        module = key[: -len(".scales")]
        spec = quantization.get(module) or quantization
        arrays[f"{module}.weight"] = mx.dequantize(
            arrays[f"{module}.weight"],
            arrays.pop(key),
            arrays.pop(f"{module}.biases"),
            group_size=int(spec.get("group_size", 64)),
            bits=int(spec.get("bits", 4)),
        )
    return {name: np.array(array.astype(mx.float32)) for name, array in arrays.items()}


def _gguf_name(name: str, arch: str) -> str:
    stem, _, suffix = name.rpartition(".")
    for gguf_name, mlx_name in TOP_NAMES.items():
        if stem == mlx_name:
            return f"{gguf_name}.{suffix}"
    names = GEMMA2_LAYER_NAMES if arch == "gemma2" else LAYER_NAMES
    parts = stem.split(".", 3)
    if len(parts) == 4 and parts[:2] == ["model", "layers"]:
        for gguf_name, mlx_name in names.items():
            if parts[3] == mlx_name:
                return f"blk.{parts[2]}.{gguf_name}.{suffix}"
    raise ModelError("bad_model", f"Weight {name} has no GGUF name for a {arch} model.")


def _pre_tokenizer(tokenizer: dict[str, Any]) -> str:
    """The ``tokenizer.ggml.pre`` name of a tokenizer.json's pre-tokenizer."""
    pre = tokenizer.get("pre_tokenizer") or {}
    steps = pre.get("pretokenizers", [pre])
    types = [step.get("type") for step in steps]
    if types == ["ByteLevel"] and steps[0].get("use_regex", True):
        return "gpt2"
    if types == ["Digits", "ByteLevel"]:
        return "smollm"
    if types == ["Split", "ByteLevel"]:
        pattern = steps[0].get("pattern", {}).get("Regex")
        if pattern == QWEN2_SPLIT:
            return "qwen2"
        if pattern == LLAMA3_SPLIT:
            return "llama-bpe"
    raise ModelError(
        "bad_model",
        f"The model's tokenizer ({'+'.join(map(str, types))} pre-tokenizer) has no GGUF "
        f"equivalent this exporter writes ({', '.join(BYTE_LEVEL_PRE)}).",
    )


def _tokenizer_metadata(writer: Any, folder: Path, config: dict[str, Any], vocab: int) -> None:
    tokenizer = json.loads((folder / "tokenizer.json").read_text())
    model = tokenizer.get("model", {})
    if model.get("type") != "BPE" or model.get("byte_fallback"):
        raise ModelError(
            "bad_model",
            "Export to GGUF writes byte-level BPE tokenizers only; this model's tokenizer "
            f"is {model.get('type')} (SentencePiece-style).",
        )
    tokens = dict(model["vocab"])
    kinds = dict.fromkeys(tokens.values(), NORMAL)
    for added in tokenizer.get("added_tokens", []):
        tokens[added["content"]] = added["id"]
        kinds[added["id"]] = CONTROL if added.get("special") else USER_DEFINED
    by_id = {index: token for token, index in tokens.items()}
    listed = [by_id.get(i, f"[PAD{i}]") for i in range(max(vocab, len(by_id)))]
    writer.add_tokenizer_model("gpt2")
    writer.add_tokenizer_pre(_pre_tokenizer(tokenizer))
    writer.add_token_list(listed)
    writer.add_token_types([kinds.get(i, USER_DEFINED) for i in range(len(listed))])
    merges = [m if isinstance(m, str) else " ".join(m) for m in model.get("merges", [])]
    writer.add_token_merges(merges)
    settings = json.loads((folder / "tokenizer_config.json").read_text())
    ids = {token: index for index, token in enumerate(listed)}
    setters = {"bos_token": writer.add_bos_token_id, "pad_token": writer.add_pad_token_id}
    for key, add in setters.items():
        value = settings.get(key)
        value = value.get("content") if isinstance(value, dict) else value
        if value in ids:
            add(ids[value])
    eos = config.get("eos_token_id")
    eos_ids = eos if isinstance(eos, list) else [eos] if eos is not None else []
    eos_token = settings.get("eos_token")
    eos_token = eos_token.get("content") if isinstance(eos_token, dict) else eos_token
    eos_ids = eos_ids or ([ids[eos_token]] if eos_token in ids else [])
    if eos_ids:
        writer.add_eos_token_id(int(eos_ids[0]))
        if len(eos_ids) > 1:
            writer.add_eot_token_id(int(eos_ids[1]))
    writer.add_add_bos_token(bool(settings.get("add_bos_token", False)))
    template = folder / "chat_template.jinja"
    chat = template.read_text() if template.is_file() else settings.get("chat_template")
    if isinstance(chat, str):
        writer.add_chat_template(chat)


def _architecture_metadata(writer: Any, config: dict[str, Any]) -> None:
    arch = config["model_type"]
    heads = int(config["num_attention_heads"])
    writer.add_block_count(int(config["num_hidden_layers"]))
    writer.add_context_length(int(config.get("max_position_embeddings", 4096)))
    writer.add_embedding_length(int(config["hidden_size"]))
    writer.add_feed_forward_length(int(config["intermediate_size"]))
    writer.add_head_count(heads)
    writer.add_head_count_kv(int(config.get("num_key_value_heads", heads)))
    writer.add_layer_norm_rms_eps(float(config.get("rms_norm_eps", 1e-6)))
    writer.add_rope_freq_base(float(config.get("rope_theta", 10000.0)))
    head_dim = int(config.get("head_dim") or config["hidden_size"] // heads)
    writer.add_rope_dimension_count(head_dim)
    if "head_dim" in config or arch == "gemma2":
        writer.add_key_length(head_dim)
        writer.add_value_length(head_dim)
    if arch == "gemma2":
        writer.add_attn_logit_softcapping(float(config.get("attn_logit_softcapping", 50.0)))
        writer.add_final_logit_softcapping(float(config.get("final_logit_softcapping", 30.0)))


def write_gguf(folder: Path, out: Path, out_type: str = "F16", *, permute: bool = True) -> None:
    """Write the mlx-lm model in ``folder`` to ``out`` (temp file + rename)."""
    import gguf
    from gguf.quants import quantize

    config = json.loads((folder / "config.json").read_text())
    arch = config.get("model_type")
    if arch not in SUPPORTED:
        raise ModelError(
            "bad_model", f"Export to GGUF supports {', '.join(SUPPORTED)} models, not {arch}."
        )
    weights = _float_weights(folder, config)
    heads = int(config["num_attention_heads"])
    kv_heads = int(config.get("num_key_value_heads", heads))
    writer = gguf.GGUFWriter(path=None, arch=arch)
    writer.add_name(folder.name)
    _architecture_metadata(writer, config)
    vocab = weights["model.embed_tokens.weight"].shape[0]
    _tokenizer_metadata(writer, folder, config, vocab)
    kind = gguf.GGMLQuantizationType
    wanted = kind[out_type]
    for name, array in sorted(weights.items()):
        gguf_name = _gguf_name(name, arch)
        if permute and arch == "llama" and ".attn_q." in gguf_name:
            array = permute_rows(array, heads)
        elif permute and arch == "llama" and ".attn_k." in gguf_name:
            array = permute_rows(array, kv_heads)
        if arch == "gemma2" and gguf_name.endswith("norm.weight"):
            array = array + 1.0
        qtype = kind.F32 if array.ndim == 1 else wanted
        if qtype not in (kind.F32, kind.F16) and array.shape[-1] % 32:
            qtype = kind.F16
        if qtype in (kind.F32, kind.F16):
            dtype = np.float16 if qtype == kind.F16 else np.float32
            writer.add_tensor(gguf_name, np.ascontiguousarray(array, dtype=dtype))
        else:
            writer.add_tensor(gguf_name, quantize(array, qtype), raw_dtype=qtype)
    writer.add_file_type({"F32": 0, "F16": 1, "Q4_0": 2, "Q4_1": 3, "Q8_0": 7}.get(out_type, 1))
    temp = out.with_name(f".{out.name}.{os.getpid()}.tmp")
    try:
        writer.write_header_to_file(temp)
        writer.write_kv_data_to_file()
        writer.write_tensors_to_file()
        writer.close()
        os.replace(temp, out)
    finally:
        temp.unlink(missing_ok=True)
