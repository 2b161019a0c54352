"""A llama SentencePiece tokenizer in a GGUF splits text as SentencePiece itself does."""

from __future__ import annotations

import io
from typing import Any

import pytest

from ai_lsp_tune.models.errors import ModelError
from ai_lsp_tune.models.gguf_tokenizer import build_tokenizer

CORPUS = [
    "def greet(name):\n    return f'hello {name}'",
    "for item in range(10): print(item * 2)",
    "naïve café résumé, déjà vu",
    "class Parser(Base):\n    def parse(self, text: str) -> None:\n        pass",
]
TEXTS = ["def greet(name):\n    return f'hi {name}'  # ünïcode ✓ 12345", "  two  spaces", "x"]


@pytest.fixture(scope="module")
def sentencepiece() -> Any:
    spm = pytest.importorskip("sentencepiece")
    model = io.BytesIO()
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter(CORPUS * 50), model_writer=model, model_type="bpe",
        vocab_size=400, byte_fallback=True, character_coverage=1.0, split_digits=True,
        remove_extra_whitespaces=False, normalization_rule_name="identity", minloglevel=2,
    )  # fmt: skip
    return spm.SentencePieceProcessor(model_proto=model.getvalue())


def _gguf_metadata(sp: Any) -> dict[str, Any]:
    """What llama.cpp's converter writes for a SentencePiece model."""
    size = sp.get_piece_size()
    kinds = [
        3 if sp.is_control(i) else 2 if sp.is_unknown(i) else 6 if sp.is_byte(i) else 1
        for i in range(size)
    ]
    return {
        "tokenizer.ggml.model": "llama",
        "tokenizer.ggml.tokens": [sp.id_to_piece(i) for i in range(size)],
        "tokenizer.ggml.scores": [sp.get_score(i) for i in range(size)],
        "tokenizer.ggml.token_type": kinds,
        "tokenizer.ggml.bos_token_id": sp.bos_id(),
        "tokenizer.ggml.eos_token_id": sp.eos_id(),
        "tokenizer.ggml.unknown_token_id": sp.unk_id(),
        "tokenizer.ggml.add_bos_token": True,
    }


@pytest.mark.parametrize("text", TEXTS)
def test_sentencepiece_ids_and_text_survive(sentencepiece: Any, text: str) -> None:
    tokenizer = build_tokenizer(_gguf_metadata(sentencepiece))
    ids = tokenizer.encode(text).ids
    assert ids == [sentencepiece.bos_id(), *sentencepiece.encode(text)]
    assert tokenizer.decode(ids, skip_special_tokens=True) == text


def test_an_unknown_pre_tokenizer_is_refused_by_name() -> None:
    meta = {"tokenizer.ggml.model": "gpt2", "tokenizer.ggml.pre": "exotic-42"}
    with pytest.raises(ModelError, match="'exotic-42' pre-tokenizer"):
        build_tokenizer({**meta, "tokenizer.ggml.tokens": ["a"], "tokenizer.ggml.merges": []})
