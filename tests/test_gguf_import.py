"""A GGUF file the user already has loads as the same model: weights, logits, tokenizer."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from ai_lsp_tune.models import gguf_convert
from ai_lsp_tune.models.load import load_model
from ai_lsp_tune.models.resolve import resolve_model
from tests.helpers.gguf_files import gguf_of, qwen2_model

CODE = 'def greet(name: str) -> str:\n    return f"héllo {name} ✓ 12345"  # naïve\n'


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from ai_lsp_tune.cli.tiny_model import build_tiny_model

    folder = tmp_path_factory.mktemp("tiny-gguf")
    build_tiny_model(folder, word_split=True)
    return folder


def _dequantized_folder_weights(folder: Path) -> dict[str, np.ndarray]:
    import mlx.core as mx

    config = json.loads((folder / "config.json").read_text())
    arrays = mx.load(str(folder / "model.safetensors"))
    assert isinstance(arrays, dict)
    quantization = config.get("quantization") or {}
    out = {}
    for name, array in arrays.items():
        if name.endswith((".scales", ".biases")):
            continue
        module = name.rpartition(".")[0]
        if f"{module}.scales" in arrays:
            spec = quantization.get(module) or quantization
            array = mx.dequantize(
                array, arrays[f"{module}.scales"], arrays[f"{module}.biases"],
                group_size=spec["group_size"], bits=spec["bits"],
            )  # fmt: skip
        out[name] = np.array(array.astype(mx.float32))
    return out


def _inverse_rows(rows: int, n_head: int) -> np.ndarray:
    """The inverse of mlx-lm's own export permutation (mlx_lm.gguf.permute_weights)."""
    from mlx_lm.gguf import permute_weights

    order = np.array(permute_weights(np.arange(rows), n_head))
    return np.argsort(order)


@pytest.mark.parametrize("out_type", ["F32", "F16", "Q8_0", "Q4_0", "Q4_1", "Q5_1"])
def test_imported_weights_equal_llama_cpps_own_dequantization(
    tiny: Path, tmp_path: Path, out_type: str
) -> None:
    import gguf
    from gguf.quants import dequantize

    source = gguf_of(tiny, tmp_path / f"tiny-{out_type}.gguf", out_type)
    weights = _dequantized_folder_weights(resolve_model(str(source)))
    config = json.loads((tiny / "config.json").read_text())
    heads = {"attn_q": config["num_attention_heads"], "attn_k": config["num_key_value_heads"]}
    reader = gguf.GGUFReader(source)
    assert len(reader.tensors) == len(weights)
    for tensor in reader.tensors:
        expected = dequantize(tensor.data, tensor.tensor_type).astype(np.float32)
        expected = expected.reshape(tuple(reversed(tensor.shape.tolist())))
        role = tensor.name.split(".")[2] if tensor.name.startswith("blk.") else ""
        if role in heads:
            expected = expected[_inverse_rows(expected.shape[0], heads[role])]
        name = gguf_convert._mlx_name(tensor.name, "llama")
        scale = float(np.abs(expected).max())
        # MLX dequantizes into float16 (llama.cpp into float32): equal up to its rounding
        np.testing.assert_allclose(weights[name], expected, rtol=1e-3, atol=scale * 1e-3)


def _logits(folder_or_gguf: str, text: str = CODE) -> np.ndarray:
    import mlx.core as mx

    model, tokenizer, _, _ = load_model(folder_or_gguf)
    return np.array(model(mx.array([tokenizer.encode(text)])).astype(mx.float32))


def test_logits_equal_the_same_model_as_an_mlx_folder(tiny: Path, tmp_path: Path) -> None:
    source = gguf_of(tiny, tmp_path / "tiny.gguf")
    np.testing.assert_allclose(_logits(str(source)), _logits(str(tiny)), atol=1e-4)


def test_leaving_out_the_rope_permutation_changes_the_logits(
    tiny: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    source = gguf_of(tiny, tmp_path / "tiny.gguf")
    monkeypatch.setattr(gguf_convert, "unpermute_rows", lambda rows, n_head: rows)
    assert np.abs(_logits(str(source)) - _logits(str(tiny))).max() > 1e-2


def test_qwen2_biases_survive_import(tiny: Path, tmp_path: Path) -> None:
    folder = qwen2_model(tiny, tmp_path / "qwen2")
    source = gguf_of(folder, tmp_path / "qwen2.gguf")
    np.testing.assert_allclose(_logits(str(source)), _logits(str(folder)), atol=1e-4)


def test_tokenizer_and_chat_template_match_the_original(tiny: Path, tmp_path: Path) -> None:
    from mlx_lm.utils import load_tokenizer

    source = gguf_of(tiny, tmp_path / "tiny.gguf")
    converted = load_tokenizer(resolve_model(str(source)))
    original = load_tokenizer(tiny)
    assert converted.encode(CODE) == original.encode(CODE)
    assert converted.decode(converted.encode(CODE)) == CODE
    for special in ("<|endoftext|>", "<|im_start|>", "<|im_end|>"):
        assert converted.convert_tokens_to_ids(special) == original.convert_tokens_to_ids(special)
        assert converted.encode(f"a{special}b") == original.encode(f"a{special}b")
    chat = [{"role": "user", "content": CODE}]
    options = {"add_generation_prompt": True, "tokenize": False}
    assert converted.apply_chat_template(chat, **options) == original.apply_chat_template(
        chat, **options
    )
    assert converted.eos_token_ids == original.eos_token_ids
