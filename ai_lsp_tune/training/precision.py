"""A quantized base computes in fp32 on a Linux CPU with OpenBLAS, and is saved quantized.

MLX's CPU quantized matmul does not use BLAS: a 4-bit SmolLM2-135M trained at ~6 tok/s, the same
weights dequantized to fp32 on OpenBLAS at ~100 (issue 20), and decoded 1.5-2x faster in fp32
than in 4-bit (``bench/decode.py --smollm2``). The rule: when MLX computes on the CPU with an
optimized BLAS and the fp32 weights take at most a quarter of the memory available, training,
evaluation and the model host run on the dequantized weights (so the gate evaluates what users
are served); the fused model is quantized again with the base's own group size, bits and dtype,
so what is saved is as small as the base. ``AI_LSP_TRAIN_DEQUANTIZE=0`` (training and
evaluation) and ``AI_LSP_SERVE_DEQUANTIZE=0`` (the model host) keep the quantized weights.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any

import mlx.core as mx
import mlx.nn as nn
from mlx.utils import tree_unflatten

from ai_lsp_tune import blas

DEQUANTIZE_ENV = "AI_LSP_TRAIN_DEQUANTIZE"
SERVE_DEQUANTIZE_ENV = "AI_LSP_SERVE_DEQUANTIZE"
MEMORY_SHARE = 0.25  # of MemAvailable: room left for activations, the optimizer and the OS


@dataclass
class Plan:
    """The quantized layers a run dequantized: path -> to_quantized()'s arguments, and dtype."""

    layers: dict[str, dict[str, Any]] = field(default_factory=dict)
    dtypes: dict[str, mx.Dtype] = field(default_factory=dict)

    def __bool__(self) -> bool:
        return bool(self.layers)


def for_training(model: nn.Module) -> tuple[Plan, str]:
    """Dequantize ``model`` in place when the rule above says so; (plan, what was decided)."""
    plan, note = _decide(model, DEQUANTIZE_ENV)
    if not plan:
        return plan, note
    bits = sorted({str(q["bits"]) for q in plan.layers.values()})
    return plan, (
        f"Trained and evaluated on the {'/'.join(bits)}-bit base dequantized to fp32 "
        f"({blas.status().name}); the fused model is saved quantized as the base"
    )


def for_serving(model: nn.Module) -> tuple[Plan, str]:
    """The model host's side of the rule: decode on the dequantized weights when it says so."""
    plan, note = _decide(model, SERVE_DEQUANTIZE_ENV)
    if not plan:
        return plan, note
    return plan, f"serving the quantized model dequantized to fp32 ({blas.status().name})"


def dequantized_weights(weights: dict[str, mx.array], plan: Plan) -> dict[str, mx.array]:
    """A model folder's weights for a model dequantized by ``plan``: its quantized layers'
    packed weights, scales and biases become the fp32 weights they stand for."""
    out = dict(weights)
    for path, quantization in plan.layers.items():
        scales = out.pop(f"{path}.scales", None)
        biases = out.pop(f"{path}.biases", None)
        key = f"{path}.weight"
        if key not in out:
            continue
        if scales is not None:
            out[key] = mx.dequantize(out[key], scales, biases, **quantization)
        out[key] = out[key].astype(mx.float32)
        if f"{path}.bias" in out:
            out[f"{path}.bias"] = out[f"{path}.bias"].astype(mx.float32)
    return out


def _decide(model: nn.Module, setting: str) -> tuple[Plan, str]:
    """Dequantize ``model`` in place when the rule says so and ``setting`` is not "0"."""
    quantized = _quantized(model)
    if not quantized or os.environ.get(setting, "1") == "0":
        return Plan(), ""
    if mx.default_device() != mx.cpu or not blas.status().name.startswith("OpenBLAS"):
        return Plan(), ""
    needed = sum(4 * _shape(m)[0] * _shape(m)[1] for m in quantized.values())
    available = _available_memory()
    if available is not None and needed > MEMORY_SHARE * available:
        return Plan(), (
            f"Kept the quantized weights: in fp32 they would take {needed / 2**30:.1f} GiB, "
            f"more than a quarter of the {available / 2**30:.1f} GiB available"
        )
    plan = Plan(
        layers={path: _quantization(m) for path, m in quantized.items()},
        dtypes={path: m.scales.dtype for path, m in quantized.items()},
    )
    dequantize(model, plan)
    return plan, ""


def dequantize(model: nn.Module, plan: Plan) -> None:
    """Replace the plan's quantized layers with fp32 ones holding the same (dequantized) weights."""
    floats = []
    for path, module in model.named_modules():
        if path not in plan.layers or not isinstance(
            module, nn.QuantizedLinear | nn.QuantizedEmbedding
        ):
            continue
        weight = _dequantized(module).astype(mx.float32)
        if isinstance(module, nn.QuantizedEmbedding):
            layer: nn.Module = nn.Embedding(*weight.shape)
        else:
            layer = nn.Linear(weight.shape[1], weight.shape[0], bias="bias" in module)
            if "bias" in module:
                layer.bias = module.bias.astype(mx.float32)
        layer.weight = weight
        floats.append((path, layer))
    if floats:
        model.update_modules(tree_unflatten(floats))
        mx.eval(model.parameters())


def requantize(model: nn.Module, plan: Plan) -> None:
    """Quantize the plan's layers again as the base had them (after fusing, before saving)."""
    if not plan:
        return
    for path, module in model.named_modules():
        if path in plan.dtypes and isinstance(module, nn.Linear | nn.Embedding):
            module.weight = module.weight.astype(plan.dtypes[path])
            if "bias" in module:
                module.bias = module.bias.astype(plan.dtypes[path])
    nn.quantize(
        model,
        class_predicate=lambda path, module: (
            plan.layers.get(path, False) if isinstance(module, nn.Linear | nn.Embedding) else False
        ),
    )
    mx.eval(model.parameters())


def _quantized(model: nn.Module) -> dict[str, Any]:
    return {
        path: module
        for path, module in model.named_modules()
        if isinstance(module, nn.QuantizedLinear | nn.QuantizedEmbedding)
    }


def _quantization(module: Any) -> dict[str, Any]:
    return {"group_size": module.group_size, "bits": module.bits, "mode": module.mode}


def _dequantized(module: Any) -> mx.array:
    return mx.dequantize(
        module.weight,
        module.scales,
        module.get("biases"),
        group_size=module.group_size,
        bits=module.bits,
        mode=module.mode,
    )


def _shape(module: Any) -> tuple[int, int]:
    """(rows, columns) of a quantized layer's full weight."""
    rows, packed = module.weight.shape
    return rows, packed * 32 // module.bits


def _available_memory() -> int | None:
    try:
        with open("/proc/meminfo") as meminfo:
            for line in meminfo:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return None
