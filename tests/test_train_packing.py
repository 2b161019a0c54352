"""Packing short examples into rows (and splitting a step over ``--max-batch-tokens``) trains
what padded batches train: the same losses and the same adapter, on fewer rows and less
padding; a model that would mix packed examples trains padded."""

from __future__ import annotations

from pathlib import Path

import pytest

from ai_lsp_tune.training.data import LengthGroupedBatches
from tests.helpers.models import absolute_positions_model, lora_model
from tests.helpers.training import BATCH, LENGTHS, Losses, skewed_split, step_args

pytestmark = pytest.mark.training


def trained(
    tiny_model: Path, tmp_path: Path, *, pack: bool, max_batch_tokens: int | None = None
) -> tuple[dict, list[float], LengthGroupedBatches]:
    """Two epochs as ``train_lora`` runs them: mlx-lm's compiled step over our batches."""
    import mlx.optimizers as optim
    from mlx.utils import tree_flatten
    from mlx_lm.tuner.trainer import train

    from ai_lsp_tune.training.data import make_loss

    model = lora_model(tiny_model)
    split = skewed_split(model.args.vocab_size)
    batches = LengthGroupedBatches(seed=1, pack=pack, max_batch_tokens=max_batch_tokens)
    per_update = batches.steps_per_update(split, BATCH)
    steps = 2 * len(split) // BATCH
    args = step_args(
        tmp_path / f"adapters-{pack}-{max_batch_tokens}.safetensors", steps, per_update=per_update
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
    from tests.helpers.training import write_splits

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
