"""A LoRA adapter served on top of its base (``finetune.fuse`` false): no fused copy on disk.

An adapter folder (``adapters.safetensors`` + ``adapter_config.json``, as mlx-lm writes it) names
the base it was trained from in its config, so a path in the model list is enough to serve it.
The host applies it as mlx-lm's LoRA layers over the loaded base (quantized layers included) and
never fuses it there: the base's weights stay intact, so a rollback only removes the layers.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

ADAPTER_CONFIG = "adapter_config.json"
ADAPTER_WEIGHTS = "adapters.safetensors"


def adapter_base(path: str | None) -> str | None:
    """The base model an adapter folder was trained from; None when ``path`` is no adapter."""
    if not path:
        return None
    folder = Path(path).expanduser()
    try:
        if not (folder / ADAPTER_CONFIG).is_file() or (folder / "config.json").exists():
            return None
        base = json.loads((folder / ADAPTER_CONFIG).read_text(encoding="utf-8")).get("model")
    except (OSError, ValueError):
        return None
    return base if isinstance(base, str) and base else None


class Adapter:
    """An adapter folder read into memory, checked before the model is touched."""

    def __init__(self, folder: Path) -> None:
        import mlx.core as mx

        config = json.loads((folder / ADAPTER_CONFIG).read_text(encoding="utf-8"))
        if config.get("fine_tune_type", "lora") != "lora":
            raise ValueError(f"{folder} is a {config['fine_tune_type']} adapter, not LoRA")
        self.folder = folder
        self.num_layers: int = int(config["num_layers"])
        self.lora_parameters: dict[str, Any] = config["lora_parameters"]
        weights = mx.load(str(folder / ADAPTER_WEIGHTS))
        assert isinstance(weights, dict)
        mx.eval(weights)  # read now: a damaged file fails here, before anything changed
        self.weights: dict[str, Any] = weights

    def apply(self, model: Any) -> None:
        """Wrap the model's last ``num_layers`` layers in LoRA layers holding these weights."""
        from mlx.utils import tree_flatten
        from mlx_lm.tuner.utils import linear_to_lora_layers

        layers = len(model.layers)
        num_layers = layers if self.num_layers < 0 else min(self.num_layers, layers)
        linear_to_lora_layers(model, num_layers, self.lora_parameters)
        params = dict(tree_flatten(model.parameters()))
        shapes = {k: v.shape for k, v in params.items()}
        wrong = [k for k, w in self.weights.items() if shapes.get(k) != w.shape]
        if wrong:
            remove(model)
            raise ValueError(
                f"{self.folder} does not fit this model ({len(wrong)} tensors, e.g. {wrong[0]}); "
                "was it trained from another base?"
            )
        model.load_weights(list(self.weights.items()), strict=False)
        model.eval()


def remove(model: Any) -> None:
    """Take the LoRA layers off: the base's own layers serve again, unchanged."""
    from mlx_lm.tuner.utils import remove_lora_layers

    remove_lora_layers(model)
