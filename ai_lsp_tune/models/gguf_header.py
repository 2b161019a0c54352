"""Parse a GGUF file's header: metadata and where each tensor's bytes lie.

Our own parser (the ``gguf`` package's reader takes ~20 s on a 49k-token vocabulary because it
builds a numpy view per string); tensor bytes stay memory-mapped.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

SCALARS = {0: "<B", 1: "<b", 2: "<H", 3: "<h", 4: "<I", 5: "<i", 6: "<f", 7: "<?", 10: "<Q"}
SCALARS |= {11: "<q", 12: "<d"}
NUMPY = {0: "<u1", 1: "<i1", 2: "<u2", 3: "<i2", 4: "<u4", 5: "<i4", 6: "<f4", 7: "?"}
NUMPY |= {10: "<u8", 11: "<i8", 12: "<f8"}
STRING, ARRAY = 8, 9


class HeaderError(ValueError):
    """The bytes are not a complete GGUF header."""


@dataclass
class TensorInfo:
    name: str
    shape: tuple[int, ...]  # numpy order (rows first), the reverse of GGUF's
    type_id: int
    data: np.ndarray  # raw bytes, uint8


class _Cursor:
    def __init__(self, buffer: Any) -> None:
        self.buffer = buffer
        self.at = 0

    def scalar(self, fmt: str) -> Any:
        size = struct.calcsize(fmt)
        if self.at + size > len(self.buffer):
            raise HeaderError("the header ends early")
        (value,) = struct.unpack_from(fmt, self.buffer, self.at)
        self.at += size
        return value

    def string(self) -> str:
        length = self.scalar("<Q")
        if self.at + length > len(self.buffer):
            raise HeaderError("the header ends early")
        text = bytes(self.buffer[self.at : self.at + length]).decode("utf-8", errors="replace")
        self.at += length
        return text

    def value(self, type_id: int) -> Any:
        if type_id == STRING:
            return self.string()
        if type_id == ARRAY:
            item_type, count = self.scalar("<I"), self.scalar("<Q")
            if item_type in NUMPY:
                dtype = np.dtype(NUMPY[item_type])
                end = self.at + count * dtype.itemsize
                if end > len(self.buffer):
                    raise HeaderError("the header ends early")
                items = np.frombuffer(self.buffer, dtype, count, self.at).tolist()
                self.at = end
                return items
            return [self.value(item_type) for _ in range(count)]
        if type_id not in SCALARS:
            raise HeaderError(f"unknown metadata type {type_id}")
        return self.scalar(SCALARS[type_id])


def parse_gguf(path: Path) -> tuple[dict[str, Any], list[TensorInfo]]:
    """(metadata, tensors) of ``path``; HeaderError when it is cut short or malformed."""
    import gguf

    data = np.memmap(path, dtype=np.uint8, mode="r")
    cursor = _Cursor(data)
    if bytes(data[:4]) != b"GGUF":
        raise HeaderError("it does not start with 'GGUF'")
    cursor.at = 4
    version = cursor.scalar("<I")
    if version < 2:
        raise HeaderError(f"GGUF version {version} is too old (re-convert it with llama.cpp)")
    tensor_count, kv_count = cursor.scalar("<Q"), cursor.scalar("<Q")
    metadata: dict[str, Any] = {}
    for _ in range(kv_count):
        key = cursor.string()
        metadata[key] = cursor.value(cursor.scalar("<I"))
    layouts = []
    for _ in range(tensor_count):
        name = cursor.string()
        dims = [cursor.scalar("<Q") for _ in range(cursor.scalar("<I"))]
        layouts.append((name, tuple(reversed(dims)), cursor.scalar("<I"), cursor.scalar("<Q")))
    alignment = int(metadata.get("general.alignment", 32))
    start = -(-cursor.at // alignment) * alignment
    tensors = []
    for name, shape, type_id, offset in layouts:
        try:
            block, block_bytes = gguf.GGML_QUANT_SIZES[gguf.GGMLQuantizationType(type_id)]
        except (ValueError, KeyError) as exc:
            raise HeaderError(f"tensor {name} has unknown type {type_id}") from exc
        size = int(np.prod(shape, dtype=np.int64)) // block * block_bytes
        begin = start + offset
        if begin + size > len(data):
            raise HeaderError(f"tensor {name} runs past the end of the file")
        tensors.append(TensorInfo(name, shape, type_id, data[begin : begin + size]))
    return metadata, tensors
