"""Rebuild a GGUF's tokenizer as Hugging Face ``tokenizers`` files mlx-lm loads.

Two families: gpt2-style byte-level BPE (``tokenizer.ggml.model = gpt2``, with the pre-tokenizer
``tokenizer.ggml.pre`` names) and llama SentencePiece (``= llama``: BPE over scored pieces with
byte fallback). Control tokens become special tokens; the chat template is copied as it is.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from ai_lsp_tune.models.errors import ModelError
from ai_lsp_tune.models.gguf_read import GGUFModel

CONTROL, USER_DEFINED = 3, 4
# The regexes llama.cpp and Hugging Face use for each ``tokenizer.ggml.pre`` name
QWEN2_SPLIT = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*"
    r"|\s*[\r\n]+|\s+(?!\S)|\s+"
)
LLAMA3_SPLIT = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*"
    r"|\s*[\r\n]+|\s+(?!\S)|\s+"
)
BYTE_LEVEL_PRE = ("default", "gpt2", "smollm", "qwen2", "llama-bpe", "llama3")


def _byte_level_pre_tokenizer(pre: str) -> Any:
    from tokenizers import Regex, pre_tokenizers

    byte_level = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    if pre in ("default", "gpt2"):
        return byte_level
    if pre == "smollm":
        return pre_tokenizers.Sequence([pre_tokenizers.Digits(individual_digits=True), byte_level])
    split = QWEN2_SPLIT if pre == "qwen2" else LLAMA3_SPLIT
    return pre_tokenizers.Sequence(
        [
            pre_tokenizers.Split(Regex(split), behavior="isolated", invert=False),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
        ]
    )


def _gpt2(meta: dict[str, Any], tokens: list[str]) -> Any:
    from tokenizers import Tokenizer, decoders, models

    pre = str(meta.get("tokenizer.ggml.pre", "default"))
    if pre not in BYTE_LEVEL_PRE:
        raise ModelError(
            "bad_model",
            f"The GGUF's tokenizer splits text with the '{pre}' pre-tokenizer, which the "
            f"importer does not know (it knows {', '.join(BYTE_LEVEL_PRE)}); pass the MLX "
            "model folder instead.",
        )
    merges = [tuple(merge.split(" ", 1)) for merge in meta.get("tokenizer.ggml.merges", [])]
    vocab = {token: index for index, token in enumerate(tokens)}
    bpe = models.BPE(vocab=vocab, merges=merges, ignore_merges=pre in ("llama-bpe", "llama3"))
    tokenizer = Tokenizer(bpe)
    tokenizer.pre_tokenizer = _byte_level_pre_tokenizer(pre)
    tokenizer.decoder = decoders.ByteLevel()
    return tokenizer


def _sentencepiece(meta: dict[str, Any], tokens: list[str]) -> Any:
    """llama.cpp's SPM tokenizer as a BPE over the pieces, merges ranked by piece score."""
    from tokenizers import Tokenizer, decoders, models, normalizers

    scores = meta.get("tokenizer.ggml.scores") or [0.0] * len(tokens)
    vocab = {token: index for index, token in enumerate(tokens)}
    merges: list[tuple[str, str, float]] = []
    for piece, score in zip(tokens, scores, strict=False):
        local = [
            (piece[:cut], piece[cut:], float(score))
            for cut in range(1, len(piece))
            if piece[:cut] in vocab and piece[cut:] in vocab
        ]
        merges.extend(sorted(local, key=lambda m: (vocab[m[0]], vocab[m[1]])))
    merges.sort(key=lambda m: m[2], reverse=True)
    unk = meta.get("tokenizer.ggml.unknown_token_id")
    bpe = models.BPE(
        vocab=vocab,
        merges=[(left, right) for left, right, _ in merges],
        unk_token=None if unk is None else tokens[int(unk)],
        fuse_unk=True,
        byte_fallback=True,
    )
    tokenizer = Tokenizer(bpe)
    prefix = bool(meta.get("tokenizer.ggml.add_space_prefix", True))
    steps = [normalizers.Prepend("▁")] if prefix else []
    tokenizer.normalizer = normalizers.Sequence([*steps, normalizers.Replace(" ", "▁")])
    decode = [decoders.Replace("▁", " "), decoders.ByteFallback(), decoders.Fuse()]
    tokenizer.decoder = decoders.Sequence(
        [*decode, decoders.Strip(" ", 1, 0)] if prefix else decode
    )
    return tokenizer


def _token(meta: dict[str, Any], tokens: list[str], key: str) -> str | None:
    index = meta.get(f"tokenizer.ggml.{key}_token_id")
    return None if index is None or int(index) >= len(tokens) else tokens[int(index)]


def build_tokenizer(meta: dict[str, Any]) -> Any:
    """A ``tokenizers.Tokenizer`` equal to the one the GGUF describes."""
    from tokenizers import AddedToken, processors

    tokens = [str(token) for token in meta.get("tokenizer.ggml.tokens", [])]
    kind = meta.get("tokenizer.ggml.model")
    if kind == "gpt2":
        tokenizer = _gpt2(meta, tokens)
    elif kind == "llama":
        tokenizer = _sentencepiece(meta, tokens)
    else:
        raise ModelError(
            "bad_model",
            f"The GGUF's tokenizer is '{kind}'; the importer reads 'gpt2' (byte-level BPE) "
            "and 'llama' (SentencePiece) tokenizers; pass the MLX model folder instead.",
        )
    types = meta.get("tokenizer.ggml.token_type") or []
    added = [
        AddedToken(tokens[index], special=token_kind == CONTROL, normalized=False)
        for index, token_kind in enumerate(types)
        if token_kind in (CONTROL, USER_DEFINED)
    ]
    tokenizer.add_tokens(added)
    bos = _token(meta, tokens, "bos")
    if meta.get("tokenizer.ggml.add_bos_token", kind == "llama") and bos is not None:
        bos_id = tokens.index(bos)
        tokenizer.post_processor = processors.TemplateProcessing(
            single=f"{bos} $A", pair=f"{bos} $A {bos} $B", special_tokens=[(bos, bos_id)]
        )
    return tokenizer


def write_tokenizer(model: GGUFModel, folder: Path) -> int:
    """tokenizer.json and tokenizer_config.json (with the chat template); returns the vocab size."""
    meta = model.metadata
    tokenizer = build_tokenizer(meta)
    tokens = [str(token) for token in meta.get("tokenizer.ggml.tokens", [])]
    tokenizer.save(str(folder / "tokenizer.json"))
    config: dict[str, Any] = {
        "tokenizer_class": "PreTrainedTokenizerFast",
        "clean_up_tokenization_spaces": False,
        "model_max_length": int(model.arch("context_length", 4096)),
        "add_bos_token": bool(meta.get("tokenizer.ggml.add_bos_token", False)),
    }
    for key in ("bos", "eos", "unknown", "padding"):
        token = _token(meta, tokens, key)
        if token is not None:
            name = {"unknown": "unk", "padding": "pad"}.get(key, key)
            config[f"{name}_token"] = token
    template = meta.get("tokenizer.chat_template")
    if template:
        config["chat_template"] = str(template)
    (folder / "tokenizer_config.json").write_text(json.dumps(config, indent=2))
    return len(tokens)


def end_token_ids(meta: dict[str, Any]) -> list[int]:
    """The ids that end a reply: EOS, and the end-of-turn token when it differs."""
    ids = [meta.get("tokenizer.ggml.eos_token_id"), meta.get("tokenizer.ggml.eot_token_id")]
    return list(dict.fromkeys(int(i) for i in ids if i is not None))
