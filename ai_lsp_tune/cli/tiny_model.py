"""A tiny, random-init llama-type MLX model built locally: the offline smoke-test model.

It is loadable by ``mlx_lm.load`` like any hub model (config.json, model.safetensors, a
byte-level BPE tokenizer trained with ``tokenizers``, a ChatML chat template), so the demo,
the tests and the language server run end to end without downloading anything.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from ai_lsp_tune import paths
from ai_lsp_tune.prompts import SYSTEM_PROMPT

TINY_MODEL_VERSION = 3
CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)
SPECIAL_TOKENS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
MODEL_CONFIG = {
    "model_type": "llama",
    "hidden_size": 96,
    "num_hidden_layers": 2,
    "intermediate_size": 192,
    "num_attention_heads": 4,
    "num_key_value_heads": 2,
    "rms_norm_eps": 1e-5,
    "max_position_embeddings": 4096,
    "rope_theta": 10000.0,
    "tie_word_embeddings": True,
}
VOCAB_SIZE = 1024
MAX_TOKEN_CHARS = 64

# Text the tokenizer learns its merges from: code, JSON of the DiagnosticResult schema and
# the prompts, so that answers and prompts tokenise to reasonably short sequences.
_TOKENIZER_CORPUS = [
    SYSTEM_PROMPT,
    # as the chat template renders them (role name + newline, then the text)
    "system\n" + SYSTEM_PROMPT,
    "user\nAnalyze this python code for issues:\n\n```python\n",
    'assistant\n{"issues":[{"issue_snippet":"',
    '","severity":"',
    '","message":"',
    '","suggested_fixes":null}]}',
    "Analyze this python code for issues:\n\n```python\n",
    "Analyze this typescript code for issues:\n\n```typescript\n",
    '{"issues": [{"issue_snippet": "x", "severity": "warning", "message": "m", '
    '"suggested_fixes": [{"title": "t", "target_snippet": "a", "replacement_snippet": "b"}]}]}',
    '{"issues":[]}',
    "def main(argv: list[str]) -> int:\n    for i in range(len(items)):\n        return None\n",
    "import os\nimport json\nfrom pathlib import Path\n\nclass Server:\n    def __init__(self):\n",
    "const value = await fetch(url);\nif (result === null) { throw new Error('x'); }\n",
    "password = 'hunter2'\nAPI_KEY = os.environ['API_KEY']\nwhile True:\n    pass\n",
]


def tiny_model_path(cache_dir: Path | None = None) -> Path:
    """Where the tiny model lives (built on first use)."""
    base = cache_dir or paths.cache_dir()
    return base / f"tiny-model-v{TINY_MODEL_VERSION}"


def ensure_tiny_model(
    cache_dir: Path | None = None, *, seed: int = 0, word_split: bool = False
) -> Path:
    """Build the tiny model once and return its directory; later calls reuse the cache."""
    target = tiny_model_path(cache_dir)
    if word_split:
        target = target.with_name(target.name + "-word-split")
    if (target / "config.json").exists() and (target / "model.safetensors").exists():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=".tiny-model-", dir=target.parent))
    try:
        build_tiny_model(staging, seed=seed, word_split=word_split)
        try:
            os.rename(staging, target)
        except OSError:
            # Another process published it first: theirs is as good as ours.
            if not (target / "config.json").exists():
                raise
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return target


def build_tiny_model(
    out_dir: Path,
    *,
    seed: int = 0,
    word_split: bool = False,
    vocab_size: int = VOCAB_SIZE,
    model_vocab_size: int | None = None,
    corpus: Iterable[str] | None = None,
    config: dict[str, Any] | None = None,
    max_token_chars: int | None = MAX_TOKEN_CHARS,
) -> None:
    """Write a random-init llama model, its tokenizer and chat template into ``out_dir``.

    ``word_split`` trains the tokenizer as real ones are (GPT-2's regex splits words before BPE
    merges) rather than merging across spaces; ``model_vocab_size`` pads the logits beyond the
    tokenizer's vocabulary, as Qwen's 151,936 do; ``config`` overrides the model's shape.
    """
    import mlx.core as mx
    from mlx_lm.models import llama
    from mlx_lm.utils import save_config, save_model

    tokenizer_vocab = _train_tokenizer(
        out_dir,
        word_split=word_split,
        vocab_size=vocab_size,
        corpus=corpus,
        max_token_chars=max_token_chars,
    )
    config = {
        **MODEL_CONFIG,
        **(config or {}),
        "vocab_size": max(tokenizer_vocab, model_vocab_size or 0),
    }
    config["eos_token_id"] = _token_id(out_dir, "<|im_end|>")
    mx.random.seed(seed)
    model = llama.Model(llama.ModelArgs.from_dict(config))
    mx.eval(model.parameters())
    save_model(out_dir, model)
    save_config(config, out_dir / "config.json")


def _train_tokenizer(
    out_dir: Path,
    *,
    word_split: bool = False,
    vocab_size: int = VOCAB_SIZE,
    corpus: Iterable[str] | None = None,
    max_token_chars: int | None = MAX_TOKEN_CHARS,
) -> int:
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers

    tokenizer = Tokenizer(models.BPE())
    # No regex pre-split: merges may cross spaces, so the fixed system prompt becomes a few
    # tokens and examples stay short enough to train on two CPU cores in a minute. Tokens are
    # capped at 64 characters, as in real vocabularies: llguidance's token trie rejects deeper.
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=word_split)
    tokenizer.decoder = decoders.ByteLevel()
    tokenizer.post_processor = processors.ByteLevel(trim_offsets=False)
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=SPECIAL_TOKENS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        max_token_length=max_token_chars,
        show_progress=False,
    )
    tokenizer.train_from_iterator(
        _TOKENIZER_CORPUS * 4 if corpus is None else corpus, trainer=trainer
    )
    tokenizer.save(str(out_dir / "tokenizer.json"))
    tokenizer_config = {
        "tokenizer_class": "PreTrainedTokenizerFast",
        "bos_token": None,
        "eos_token": "<|im_end|>",
        "pad_token": "<|endoftext|>",
        "unk_token": None,
        "model_max_length": MODEL_CONFIG["max_position_embeddings"],
        "chat_template": CHAT_TEMPLATE,
        "clean_up_tokenization_spaces": False,
    }
    (out_dir / "tokenizer_config.json").write_text(json.dumps(tokenizer_config, indent=2))
    (out_dir / "special_tokens_map.json").write_text(
        json.dumps({"eos_token": "<|im_end|>", "pad_token": "<|endoftext|>"}, indent=2)
    )
    return int(tokenizer.get_vocab_size())


def _token_id(out_dir: Path, token: str) -> int:
    vocab = json.loads((out_dir / "tokenizer.json").read_text())["model"]["vocab"]
    return int(vocab[token])
