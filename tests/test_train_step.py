"""The training step as ``finetune train`` runs it (mlx-lm's compiled step, with our loss) makes
the same updates as a plain, uncompiled step, with or without ``--grad-checkpoint``."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.helpers.models import lora_model
from tests.helpers.training import step_args

pytestmark = pytest.mark.training
STEPS = 4


def batches(vocab: int) -> list[tuple[Any, Any, Any]]:
    """(tokens, answer positions, answer mask) as LengthGroupedBatches yields them."""
    import mlx.core as mx

    mx.random.seed(1)
    made = []
    for _ in range(STEPS):
        tokens = mx.random.randint(0, vocab, (2, 40))
        positions = mx.broadcast_to(mx.arange(20, 39)[None], (2, 19))
        mask = mx.concatenate([mx.ones((2, 15)), mx.array([[1, 1, 1, 1], [1, 0, 0, 0]])], axis=1)
        made.append((tokens, positions, mask))
    return made


def trained_with_mlx_lm(tiny_model: Path, tmp_path: Path, grad_checkpoint: bool) -> dict:
    import mlx.optimizers as optim
    from mlx.utils import tree_flatten
    from mlx_lm.tuner.trainer import train

    from ai_lsp_tune.training.data import make_loss
    from ai_lsp_tune.training.loop import checkpointed_layers

    model = lora_model(tiny_model)
    fixed = batches(model.args.vocab_size)

    def iterate(**_: Any) -> Iterator[tuple[Any, Any, Any]]:
        yield from fixed

    args = step_args(
        tmp_path / f"adapters-{grad_checkpoint}.safetensors",
        STEPS,
        batch_size=2,
        steps_per_report=STEPS,
    )
    layer_call = type(model.layers[0]).__call__
    with checkpointed_layers(model, grad_checkpoint):
        assert (type(model.layers[0]).__call__ is layer_call) is not grad_checkpoint
        train(model, optim.Adam(learning_rate=1e-3), [], None, args, make_loss(model), iterate)
    assert type(model.layers[0]).__call__ is layer_call  # put back for evaluation
    return dict(tree_flatten(model.trainable_parameters()))


def trained_plainly(tiny_model: Path) -> dict:
    import mlx.core as mx
    import mlx.nn as nn
    import mlx.optimizers as optim
    from mlx.utils import tree_flatten

    from ai_lsp_tune.training.data import make_loss

    model = lora_model(tiny_model)
    model.train()
    optimizer = optim.Adam(learning_rate=1e-3)
    step = nn.value_and_grad(model, make_loss(model))
    for batch in batches(model.args.vocab_size):
        _, grads = step(model, *batch)
        optimizer.update(model, grads)
        mx.eval(model.parameters(), optimizer.state)
    return dict(tree_flatten(model.trainable_parameters()))


@pytest.mark.parametrize("grad_checkpoint", [False, True], ids=["plain", "grad-checkpoint"])
def test_the_compiled_step_trains_as_the_uncompiled_one(
    tiny_model: Path, tmp_path: Path, grad_checkpoint: bool
) -> None:
    import mlx.core as mx

    expected = trained_plainly(tiny_model)
    got = trained_with_mlx_lm(tiny_model, tmp_path, grad_checkpoint)
    assert got.keys() == expected.keys() and len(got) >= 4
    for name, value in got.items():
        if name.endswith("lora_b"):
            assert mx.abs(value).max().item() > 0, name  # it trained (LoRA's B starts at zero)
        assert mx.allclose(value, expected[name], rtol=1e-4, atol=1e-5).item(), name
