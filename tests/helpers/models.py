"""Small MLX models the tests build: the tiny model with LoRA, others of its shape, a toy."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

from ai_lsp_tune.training.protocol import TrainRequest


def lora_model(tiny_model: Path, **request: Any) -> Any:
    """The tiny model with rank-4 LoRA layers as a run puts them on (on the layers ``request``
    names, e.g. ``num_layers=1``: the last one only), the same init every time."""
    import mlx.core as mx
    from mlx_lm import load

    from ai_lsp_tune.training.loop import _prepare

    mx.random.seed(0)
    model, _ = load(str(tiny_model))
    options = {"lora_rank": 4, **request}
    _prepare(model, TrainRequest(dataset=Path("d"), model_name=str(tiny_model), **options))
    return model


def three_layer_model(folder: Path) -> Path:
    """The tiny model with a third layer: another architecture, to the model host."""
    from ai_lsp_tune.cli.tiny_model import build_tiny_model

    folder.mkdir(parents=True)
    build_tiny_model(folder, config={"num_hidden_layers": 3})
    return folder


def absolute_positions_model() -> Any:
    """Learned absolute positions that restart at 0 every call (no RoPE, cache ignored)."""
    import mlx.core as mx
    import mlx.nn as nn

    class AbsolutePositions(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.embed = nn.Embedding(64, 16)
            self.positions = nn.Embedding(64, 16)
            self.layers = [nn.Linear(16, 16)]
            self.out = nn.Linear(16, 64)

        def __call__(self, inputs: mx.array, cache: Any = None) -> mx.array:
            h = self.embed(inputs) + self.positions(mx.arange(inputs.shape[1]))
            return self.out(self.layers[0](h))

    return AbsolutePositions()


def same_shape_model(source: Path, folder: Path, *, seed: int, bits: int | None = None) -> Path:
    """``source``'s architecture and tokenizer with other random weights (a fine-tune, to the
    model host), quantized like mlx-community's models when ``bits`` is given."""
    import mlx.core as mx
    from mlx.utils import tree_map
    from mlx_lm.models import llama
    from mlx_lm.utils import load_config, quantize_model, save_config, save_model

    shutil.copytree(source, folder)
    config = load_config(source)
    mx.random.seed(seed)
    model = llama.Model(llama.ModelArgs.from_dict(config))
    # Larger than the default init, so that the greedy answers differ from model to model.
    model.update(tree_map(lambda a: mx.random.normal(a.shape) * 0.5, model.parameters()))
    if bits is not None:
        model, config = quantize_model(model, config, group_size=32, bits=bits)
    mx.eval(model.parameters())
    for old in folder.glob("model*.safetensors"):
        old.unlink()
    save_model(folder, model)
    save_config(config, folder / "config.json")
    return folder
