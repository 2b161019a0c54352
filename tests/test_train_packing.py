"""Packing short examples into rows (and splitting a step over ``--max-batch-tokens``) trains
what padded batches train: the same losses and the same adapter, on fewer rows and less
padding; a model that would mix packed examples trains padded."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from ai_lsp_tune.training.data import LengthGroupedBatches, TokenizedSplit
from ai_lsp_tune.training.request import TrainRequest

pytestmark = pytest.mark.training
BATCH = 4
# Sorted, the groups of 4 are skewed: [10 12 14 16] and [20 100 110 120]; the shorter fit two
# to a row of the group's longest.
LENGTHS = [110, 12, 20, 16, 100, 10, 120, 14]


def skewed_split(vocab: int) -> TokenizedSplit:
    import numpy as np

    rng = np.random.default_rng(3)
    items = [(rng.integers(3, vocab, n).tolist(), n // 2) for n in LENGTHS]
    return TokenizedSplit(items=items)


def lora_model(tiny_model: Path) -> Any:
    import mlx.core as mx
    from mlx_lm import load

    from ai_lsp_tune.training.loop import _prepare

    mx.random.seed(0)
    model, _ = load(str(tiny_model))
    _prepare(model, TrainRequest(dataset=Path("d"), model_name=str(tiny_model), lora_rank=4))
    return model


class Losses:
    """mlx-lm's training callback: the loss of every optimizer step."""

    def __init__(self) -> None:
        self.train: list[float] = []

    def on_train_loss_report(self, info: dict[str, Any]) -> None:
        self.train.append(info["train_loss"])

    def on_val_loss_report(self, info: dict[str, Any]) -> None:
        pass


def trained(
    tiny_model: Path, tmp_path: Path, *, pack: bool, max_batch_tokens: int | None = None
) -> tuple[dict, list[float], LengthGroupedBatches]:
    """Two epochs as ``train_lora`` runs them: mlx-lm's compiled step over our batches."""
    import mlx.optimizers as optim
    from mlx.utils import tree_flatten
    from mlx_lm.tuner.trainer import TrainingArgs, train

    from ai_lsp_tune.training.data import make_loss

    model = lora_model(tiny_model)
    split = skewed_split(model.args.vocab_size)
    batches = LengthGroupedBatches(seed=1, pack=pack, max_batch_tokens=max_batch_tokens)
    per_update = batches.steps_per_update(split, BATCH)
    steps = 2 * len(split) // BATCH
    args = TrainingArgs(
        batch_size=BATCH,
        iters=steps * per_update,
        steps_per_report=per_update,
        steps_per_eval=1 << 30,
        steps_per_save=1 << 30,
        grad_accumulation_steps=per_update,
        adapter_file=str(tmp_path / f"adapters-{pack}-{max_batch_tokens}.safetensors"),
    )
    losses = Losses()
    optimizer = optim.Adam(learning_rate=1e-3)
    train(model, optimizer, split, None, args, make_loss(model), batches, losses)  # type: ignore[arg-type]
    assert len(losses.train) == steps
    return dict(tree_flatten(model.trainable_parameters())), losses.train, batches


@pytest.mark.parametrize(
    "max_batch_tokens", [None, 128], ids=["one-batch-a-step", "steps-split-to-128-tokens"]
)
def test_packed_training_makes_the_updates_of_padded_training(
    tiny_model: Path, tmp_path: Path, max_batch_tokens: int | None
) -> None:
    import mlx.core as mx

    padded, padded_losses, _ = trained(tiny_model, tmp_path, pack=False)
    packed, packed_losses, batches = trained(
        tiny_model, tmp_path, pack=True, max_batch_tokens=max_batch_tokens
    )
    split = skewed_split(1024)
    if max_batch_tokens:  # the long group's 3 rows of 128 columns: one row per micro-batch
        assert batches.steps_per_update(split, BATCH) == 3
    assert packed_losses == pytest.approx(padded_losses, rel=1e-4)
    assert packed.keys() == padded.keys()
    for name, value in packed.items():
        if name.endswith("lora_b"):
            assert mx.abs(value).max().item() > 0, name  # it trained
        assert mx.allclose(value, padded[name], rtol=1e-3, atol=1e-5).item(), name


def test_packing_trains_the_same_answer_tokens_on_fewer_rows_and_less_padding() -> None:
    split = skewed_split(1024)
    seen = {}
    for pack in (False, True):
        batches = LengthGroupedBatches(pack=pack)
        answers = 0
        for _, (_, _, mask, segments, _, _) in zip(
            range(2), batches(split, BATCH, 1 << 20, loop=True), strict=False
        ):
            answers += int(mask.sum().item())
            assert (segments is not None) is pack  # both groups pack two examples into a row
        seen[pack] = (answers, batches.rows, batches.padded_tokens)
    assert seen[False] == (sum(n - n // 2 for n in LENGTHS), 8, 4 * 32 + 4 * 128)
    # [16+14] [12+10] in 32 columns; [120] [110] [100+20] in 128
    assert seen[True] == (seen[False][0], 5, 2 * 32 + 3 * 128)


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


def test_a_model_that_would_mix_packed_examples_trains_padded() -> None:
    """Learned absolute positions: a packed example sees other positions than alone."""
    from ai_lsp_tune.training.data import packs
    from ai_lsp_tune.training.packing import packing_fault

    model = absolute_positions_model()
    assert "positions do not restart" in (packing_fault(model) or "")
    assert not packs(model)


def test_the_tiny_llama_keeps_packed_examples_apart(tiny_model: Path) -> None:
    from mlx_lm import load

    from ai_lsp_tune.training.packing import packing_fault

    model, _ = load(str(tiny_model))
    assert packing_fault(model) is None


def test_a_step_over_max_batch_tokens_is_split_and_still_one_step(
    tiny_model: Path, tmp_path: Path
) -> None:
    """``finetune train --max-batch-tokens``: the run counts optimizer steps of --batch-size
    examples, each trained in several passes, and it learns."""
    import json

    from typer.testing import CliRunner

    from ai_lsp_tune.cli.app import app
    from tests.test_train import write_splits

    dataset = write_splits(tmp_path / "data", 16, 4, 2)
    result = CliRunner().invoke(
        app,
        [
            "finetune", "train", str(dataset), "--model-name", str(tiny_model),
            "--output-dir", str(tmp_path / "out"), "--num-epochs", "2", "--batch-size", "4",
            "--learning-rate", "5e-4", "--num-layers", "-1", "--max-seq-length", "512",
            "--max-batch-tokens", "512",
        ],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    run = json.loads((tmp_path / "out" / "run.json").read_text())
    assert run["hyperparameters"]["max_batch_tokens"] == 512
    assert run["batching"]["micro_batches_per_step"] > 1
    assert run["iterations"] == 8  # 16 examples x 2 epochs / 4 a step
    steps = [step for step, _ in run["train_loss_history"]]
    assert steps == list(range(1, 9))
    assert run["train_loss_history"][-1][1] < run["train_loss_history"][0][1]
