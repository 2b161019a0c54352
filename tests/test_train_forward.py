"""A step's shared prompt prefix runs once and rows run in query chunks (``forward.py``): the
same outputs, losses and adapter as whole rows, on fewer computed tokens; a model where they
would differ runs rows whole."""

from __future__ import annotations

from pathlib import Path

import pytest

from ai_lsp_tune.training.data import LengthGroupedBatches
from tests.helpers.models import absolute_positions_model, lora_model
from tests.helpers.training import BATCH, Losses, prompted_split, step_args

pytestmark = pytest.mark.training


def trained(
    tiny_model: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, *, chunk: int
) -> tuple[dict, list[float], LengthGroupedBatches]:
    """Two epochs through mlx-lm's compiled step: whole rows (``chunk`` 0) or a shared prefix
    and query chunks of ``chunk`` tokens."""
    import mlx.optimizers as optim
    from mlx.utils import tree_flatten
    from mlx_lm.tuner.trainer import train

    from ai_lsp_tune.training.data import make_loss

    monkeypatch.setenv("AI_LSP_TRAIN_CHUNK", str(chunk))
    model = lora_model(tiny_model)
    split = prompted_split(model.args.vocab_size)
    batches = LengthGroupedBatches(seed=2, pack=True, share=bool(chunk))
    steps = 2 * len(split) // BATCH
    args = step_args(tmp_path / f"adapters-{chunk}.safetensors", steps)
    losses = Losses()
    optimizer = optim.Adam(learning_rate=1e-3)
    loss = make_loss(model, chunked=bool(chunk))
    train(model, optimizer, split, None, args, loss, batches, losses)  # type: ignore[arg-type]
    assert len(losses.train) == steps
    return dict(tree_flatten(model.trainable_parameters())), losses.train, batches


def test_a_shared_prefix_and_query_chunks_make_the_updates_of_whole_rows(
    tiny_model: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import mlx.core as mx

    whole, whole_losses, whole_batches = trained(tiny_model, tmp_path, monkeypatch, chunk=0)
    mine, my_losses, my_batches = trained(tiny_model, tmp_path, monkeypatch, chunk=32)
    assert my_losses == pytest.approx(whole_losses, rel=1e-4)
    for name, value in mine.items():
        if name.endswith("lora_b"):
            assert mx.abs(value).max().item() > 0, name  # it trained
        assert mx.allclose(value, whole[name], rtol=1e-3, atol=1e-5).item(), name
    # The 32 shared tokens (37 rounded down to 8s) ran once a step instead of once a row.
    assert my_batches.trained_tokens == whole_batches.trained_tokens
    assert my_batches.padded_tokens < whole_batches.padded_tokens


def test_the_shared_prefix_stops_before_the_first_answer_and_is_one_row() -> None:
    from ai_lsp_tune.training.packing import collate_rows, layout, shared_prefix

    same = list(range(1, 46))
    items = [([*same, 60, 61, 62], 46), ([*same, 70, 71], 45), ([*same, 80, 81, 82, 83], 43)]
    assert shared_prefix(items) == 40  # the 42 before the earliest answer, rounded down to 8s
    assert shared_prefix(items[:1]) == 0
    rows, prefix = layout(items, pack=False, share=True)
    assert prefix == 40 and all(len(row) == 1 for row in rows)
    tokens, positions, mask, segments, shared, *_ = collate_rows(rows, prefix)
    assert shared is not None and shared.tolist() == [same[:40]]
    assert segments is None and tokens.shape[0] == 3
    # Every answer token is still a target, counted from after the prefix.
    import numpy as np

    rows_, at, keep = np.array(tokens), np.array(positions), np.array(mask)
    targets = [rows_[r, at[r][keep[r]] + 1].tolist() for r in range(3)]
    assert sorted(targets) == sorted(tokens_[offset:] for tokens_, offset in items)
    # Too short to be worth it: three 1-token tails padded to 32 columns each.
    assert layout([([*same[:12], 9], 12)] * 3, pack=False, share=True)[1] == 0


def test_rows_run_whole_for_a_model_that_ignores_the_cache_offset() -> None:
    """Learned absolute positions that restart at 0 every call: a chunk would be misplaced."""
    from ai_lsp_tune.training.data import chunks
    from ai_lsp_tune.training.forward import forward_fault

    model = absolute_positions_model()
    assert "differ from the plain pass" in (forward_fault(model) or "")
    assert not chunks(model)


def test_the_tiny_llama_keeps_its_outputs_over_a_prefix_in_chunks(tiny_model: Path) -> None:
    from mlx_lm import load

    from ai_lsp_tune.training.forward import forward_fault

    model, _ = load(str(tiny_model))
    assert forward_fault(model) is None


def test_rows_are_chunked_on_the_cpu_unless_turned_off(monkeypatch: pytest.MonkeyPatch) -> None:
    from ai_lsp_tune.training.forward import chunk_size

    monkeypatch.delenv("AI_LSP_TRAIN_CHUNK", raising=False)
    assert chunk_size(160) == 64 and chunk_size(4096) == 128 and chunk_size(40) == 64
    monkeypatch.setenv("AI_LSP_TRAIN_CHUNK", "0")
    assert chunk_size(4096) == 4096


def test_grad_checkpoint_on_packed_rows_gives_the_plain_gradients(tiny_model: Path) -> None:
    """``--grad-checkpoint`` recomputes every layer in the backward pass: the stand-in cache of
    a packed batch must hand that second pass the same keys (a crash before, on packed rows)."""
    import mlx.core as mx
    import mlx.nn as nn
    from mlx.utils import tree_flatten

    from ai_lsp_tune.training.data import make_loss
    from ai_lsp_tune.training.loop import checkpointed_layers
    from tests.helpers.training import skewed_split

    model = lora_model(tiny_model)
    split = skewed_split(model.args.vocab_size)
    batches = LengthGroupedBatches(seed=1, pack=True)
    batch = next(iter(batches(split, BATCH, 1 << 20, loop=True)))
    assert batch[3] is not None  # packed
    grads = []
    for checkpoint in (False, True):
        step = nn.value_and_grad(model, make_loss(model, chunked=False))
        with checkpointed_layers(model, checkpoint):
            (loss, _), grad = step(model, *batch)
        mx.eval(loss, grad)
        grads.append(dict(tree_flatten(grad)))
    for name, value in grads[1].items():
        assert mx.allclose(value, grads[0][name], rtol=1e-3, atol=1e-6).item(), name


@pytest.mark.parametrize("architecture", ["gemma2", "qwen2"])
def test_the_default_models_architectures_keep_their_outputs(architecture: str) -> None:
    """gemma-2 (the default model: soft-capped attention and logits) and Qwen2, as tiny random
    models: a shared prefix, query chunks and packed rows all keep their outputs."""
    import importlib

    import mlx.core as mx

    from ai_lsp_tune.training.forward import forward_fault
    from ai_lsp_tune.training.packing import packing_fault

    module = importlib.import_module(f"mlx_lm.models.{architecture}")
    shape = {
        "model_type": architecture,
        "hidden_size": 64,
        "num_hidden_layers": 2,
        "intermediate_size": 128,
        "num_attention_heads": 4,
        "num_key_value_heads": 2,
        "rms_norm_eps": 1e-6,
        "vocab_size": 256,
        "rope_theta": 10000.0,
    }
    if architecture == "gemma2":
        shape |= {
            "head_dim": 16,
            "attn_logit_softcapping": 50.0,
            "final_logit_softcapping": 30.0,
            "query_pre_attn_scalar": 16.0,
        }
    mx.random.seed(0)
    model = module.Model(module.ModelArgs.from_dict(shape))
    assert forward_fault(model) is None
    assert packing_fault(model) is None
