"""Read a GGUF file's metadata and tensors, checking it is one whole file of a model we can load.

Q4_0, Q4_1 and Q8_0 stay quantized (repacked into MLX's affine group-32 layout, bit for bit the
same values); F32, F16 and BF16 stay as they are; other types (K-quants, IQ-quants) are
dequantized to float16 with llama.cpp's own ``gguf`` reader.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ai_lsp_tune.models.errors import ModelError
from ai_lsp_tune.models.gguf_header import HeaderError, TensorInfo, parse_gguf

GROUP_SIZE = 32
SPLIT_NAME = re.compile(r"-\d{5}-of-(\d{5})\.gguf$")


@dataclass
class GGUFTensor:
    """One tensor in MLX's terms: a plain array, or (packed weight, scales, biases, bits)."""

    array: np.ndarray
    scales: np.ndarray | None = None
    biases: np.ndarray | None = None
    bits: int | None = None
    bfloat16: bool = False  # stored as float32 here (numpy has no bfloat16), bfloat16 in MLX


@dataclass
class GGUFModel:
    metadata: dict[str, Any]
    tensors: dict[str, GGUFTensor]
    dequantized: dict[str, str] = field(default_factory=dict)  # tensor name -> original type

    @property
    def architecture(self) -> str:
        return str(self.metadata.get("general.architecture", "unknown"))

    def arch(self, key: str, default: Any = None) -> Any:
        """A metadata value under the architecture's prefix (``llama.block_count``)."""
        return self.metadata.get(f"{self.architecture}.{key}", default)


def _parse(path: Path) -> tuple[dict[str, Any], list[TensorInfo]]:
    match = SPLIT_NAME.search(path.name)
    if match and match.group(1) != "00001":
        raise ModelError(
            "bad_model",
            f"{path.name} is one part of a split GGUF; merge the parts first "
            f"(`llama-gguf-split --merge {path.name} merged.gguf`) and pass the merged file.",
        )
    try:
        return parse_gguf(path)
    except OSError as exc:
        raise ModelError("model_not_found", f"Cannot read {path} ({exc.strerror}).") from exc
    except HeaderError as exc:
        raise ModelError(
            "bad_model", f"{path} is not a complete GGUF model file ({exc}); download it again."
        ) from exc


def _repack_q4(codes: np.ndarray) -> np.ndarray:
    """GGUF Q4 nibbles (block's 16 bytes: low = elements 0-15, high = 16-31) to MLX 4-bit words."""
    values = np.concatenate([codes & 0x0F, codes >> 4], axis=-1)  # (..., blocks, 32)
    packed = (values[..., 0::2] | (values[..., 1::2] << 4)).astype(np.uint8)
    return packed.reshape(*packed.shape[:-2], -1).view(np.uint32)


def _quantized(data: np.ndarray, qtype: Any, rows: tuple[int, ...]) -> GGUFTensor:
    import gguf

    kind = gguf.GGMLQuantizationType
    block_bytes = gguf.GGML_QUANT_SIZES[qtype][1]
    blocks = np.ascontiguousarray(data).reshape(*rows, -1, block_bytes)
    scale = blocks[..., 0:2].copy().view(np.float16)[..., 0].astype(np.float32)
    if qtype == kind.Q8_0:
        codes = blocks[..., 2:].view(np.int8).astype(np.int16) + 128
        packed = codes.astype(np.uint8).reshape(*rows, -1).view(np.uint32)
        return GGUFTensor(packed, scale.astype(np.float16), (-128 * scale).astype(np.float16), 8)
    if qtype == kind.Q4_0:
        bias = -8 * scale
        codes = blocks[..., 2:]
    else:  # Q4_1: d, m, then the nibbles; x = d * q + m
        bias = blocks[..., 2:4].copy().view(np.float16)[..., 0].astype(np.float32)
        codes = blocks[..., 4:]
    return GGUFTensor(_repack_q4(codes), scale.astype(np.float16), bias.astype(np.float16), 4)


def read_gguf(path: Path) -> GGUFModel:
    """Every tensor of ``path`` in MLX's layout, with its metadata."""
    import gguf

    metadata, infos = _parse(path)
    split_count = metadata.get("split.count")
    if split_count and int(split_count) > 1:
        raise ModelError(
            "bad_model",
            f"{path.name} is part 1 of a {split_count}-part split GGUF; merge the parts first "
            f"(`llama-gguf-split --merge {path.name} merged.gguf`) and pass the merged file.",
        )
    kind = gguf.GGMLQuantizationType
    tensors: dict[str, GGUFTensor] = {}
    dequantized: dict[str, str] = {}
    for tensor in infos:
        qtype = kind(tensor.type_id)
        shape = tensor.shape
        if qtype in (kind.F32, kind.F16):
            dtype = np.float32 if qtype == kind.F32 else np.float16
            tensors[tensor.name] = GGUFTensor(tensor.data.view(dtype).reshape(shape))
        elif qtype == kind.BF16:
            bits = tensor.data.view(np.uint16).astype(np.uint32) << 16
            tensors[tensor.name] = GGUFTensor(bits.view(np.float32).reshape(shape), bfloat16=True)
        elif qtype in (kind.Q4_0, kind.Q4_1, kind.Q8_0) and shape[-1] % GROUP_SIZE == 0:
            tensors[tensor.name] = _quantized(tensor.data, qtype, shape[:-1])
        else:
            try:
                values = gguf.quants.dequantize(tensor.data.reshape(*shape[:-1], -1), qtype)
            except Exception as exc:
                raise ModelError(
                    "bad_model",
                    f"{path.name}: tensor {tensor.name} has type {qtype.name}, which cannot be "
                    "read exactly; use a Q4_0, Q4_1, Q8_0, K-quant, F16 or F32 file.",
                ) from exc
            tensors[tensor.name] = GGUFTensor(values.astype(np.float16).reshape(shape))
            dequantized[tensor.name] = qtype.name
    return GGUFModel(metadata, tensors, dequantized)
