"""A 4-bit base trains on its fp32 dequantized weights on a Linux CPU (OpenBLAS) and is saved
4-bit: the losses match the 4-bit path's, and the published model is as small as the base."""

from __future__ import annotations

import json
from pathlib import Path

import mlx.core as mx
import mlx.nn as nn
import numpy as np
import pytest

from ai_lsp_tune import blas
from ai_lsp_tune.training import precision
from ai_lsp_tune.training.runner import run_training
from tests.helpers.training import fast_request, write_splits

pytestmark = pytest.mark.skipif(
    not blas.status().name.startswith("OpenBLAS"), reason="MLX does not run on OpenBLAS here"
)


def quantized_copy(tiny_model: Path, folder: Path) -> Path:
    """The tiny model quantized as mlx-community's 4-bit models are (group 32, like Q4_1)."""
    from mlx_lm.utils import load, quantize_model, save_config, save_model

    model, _, config = load(str(tiny_model), return_config=True)  # type: ignore[misc]
    model, config = quantize_model(model, config, group_size=32, bits=4)
    folder.mkdir()
    for tokenizer_file in tiny_model.glob("*.json"):
        if tokenizer_file.name != "config.json" and "index" not in tokenizer_file.name:
            (folder / tokenizer_file.name).write_bytes(tokenizer_file.read_bytes())
    save_model(folder, model)
    save_config(config, folder / "config.json")
    return folder


@pytest.fixture(scope="module")
def tiny_4bit(tiny_model: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return quantized_copy(tiny_model, tmp_path_factory.mktemp("tiny-4bit") / "model")


def test_dequantized_logits_match_the_4bit_ones_and_requantize_keeps_the_format(
    tiny_4bit: Path,
) -> None:
    from mlx_lm import load

    quantized, _ = load(str(tiny_4bit))
    model, _ = load(str(tiny_4bit))
    plan, note = precision.for_training(model)
    assert plan and "dequantized to fp32" in note
    assert not any(isinstance(m, nn.QuantizedLinear) for _, m in model.named_modules())
    tokens = mx.array([[1, 5, 9, 2, 7, 3, 11, 4]])
    np.testing.assert_allclose(
        np.array(model(tokens)), np.array(quantized(tokens)), rtol=1e-4, atol=1e-4
    )

    precision.requantize(model, plan)
    before = dict(quantized.named_modules())
    for path, module in model.named_modules():
        if isinstance(before.get(path), nn.QuantizedLinear | nn.QuantizedEmbedding):
            original = before[path]
            assert type(module) is type(original), path
            assert (module.group_size, module.bits) == (original.group_size, original.bits)
            assert module.weight.shape == original.weight.shape
            assert module.scales.dtype == original.scales.dtype


@pytest.mark.training
@pytest.mark.slow
def test_fp32_training_keeps_the_4bit_losses_and_saves_4bit(
    tiny_4bit: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    dataset = write_splits(tmp_path / "data", 12, 4, 4)
    runs = {}
    for dequantize in ("0", "1"):
        monkeypatch.setenv(precision.DEQUANTIZE_ENV, dequantize)
        request = fast_request(
            tiny_4bit, tmp_path / dequantize, dataset, num_epochs=2, eval_max_tokens=8
        )
        outcome = run_training(request, lambda event: None)
        assert outcome.status == "done", outcome.event
        runs[dequantize] = json.loads((tmp_path / dequantize / "out" / "run.json").read_text())
    kept, fp32 = runs["0"], runs["1"]
    assert not any("fp32" in note for note in kept["notes"])
    assert any("dequantized to fp32" in note for note in fp32["notes"])
    np.testing.assert_allclose(fp32["train_loss_history"], kept["train_loss_history"], rtol=2e-3)
    np.testing.assert_allclose(fp32["val_loss_history"], kept["val_loss_history"], rtol=2e-3)
    for dequantize in runs:
        config = json.loads((tmp_path / dequantize / "out" / "model" / "config.json").read_text())
        assert config["quantization"]["bits"] == 4
    sizes = [
        sum(f.stat().st_size for f in (tmp_path / d / "out" / "model").glob("*.safetensors"))
        for d in ("0", "1")
    ]
    assert sizes[0] == sizes[1]  # fp32 training, 4-bit model: as small as the 4-bit path's


def test_the_model_host_serves_a_4bit_model_dequantized_with_the_4bit_greedy_answers(
    tiny_4bit: Path,
) -> None:
    from mlx_lm import load

    from ai_lsp_tune.decoding.decode import decode_answer
    from ai_lsp_tune.serving.engine import load_engine
    from ai_lsp_tune.serving.loading import read_weights

    quantized, tokenizer = load(str(tiny_4bit))
    engine = load_engine(str(tiny_4bit))
    assert engine.plan and not any(
        isinstance(m, nn.QuantizedLinear | nn.QuantizedEmbedding)
        for _, m in engine.model.named_modules()
    )
    for text in ("def f(a):\n    return a\n", "x = [1, 2, 3]\nprint(x[3])\n"):
        prompt = tokenizer.encode(text)
        served = decode_answer(engine.model, engine.tokenizer, prompt, 16)
        assert served == decode_answer(quantized, tokenizer, prompt, 16)
    # A fine-tune saved 4-bit (as training saves it) loads into the dequantized model.
    weights = read_weights(engine.model, tiny_4bit, engine.plan)
    assert not any(key.endswith(".scales") for key in weights)
    engine.model.load_weights(list(weights.items()), strict=True)
