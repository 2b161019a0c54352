"""The tiny local model that the demo and the tests use in place of a hub model."""

from pathlib import Path

import pytest
from mlx_lm import generate, load, stream_generate

from ai_lsp_tune.cli import tiny_model as tiny_model_module
from ai_lsp_tune.cli.tiny_model import ensure_tiny_model
from ai_lsp_tune.prompts import SYSTEM_PROMPT, user_prompt

USER = user_prompt("python", "x = 1\n", "a.py")
MESSAGES = [{"role": "system", "content": SYSTEM_PROMPT}, {"role": "user", "content": USER}]


def test_its_chat_template_renders_the_system_and_user_prompts_in_chatml(tiny_model: Path) -> None:
    _, tokenizer = load(str(tiny_model))
    prompt = tokenizer.apply_chat_template(MESSAGES, add_generation_prompt=True)
    assert tokenizer.decode(prompt) == (
        f"<|im_start|>system\n{SYSTEM_PROMPT}<|im_end|>\n"
        f"<|im_start|>user\n{USER}<|im_end|>\n"
        "<|im_start|>assistant\n"
    )


def test_it_generates_up_to_max_tokens_and_the_same_text_every_time(tiny_model: Path) -> None:
    model, tokenizer = load(str(tiny_model))
    prompt = tokenizer.apply_chat_template(MESSAGES, add_generation_prompt=True)
    steps = list(stream_generate(model, tokenizer, prompt=prompt, max_tokens=8))
    assert [s.generation_tokens for s in steps] == list(range(1, len(steps) + 1))
    assert (len(steps), steps[-1].finish_reason) == (8, "length") or steps[
        -1
    ].finish_reason == "stop"
    assert all(0 <= s.token < tokenizer.vocab_size for s in steps)
    text = "".join(s.text for s in steps)
    assert text  # a random model, but it says something
    assert generate(model, tokenizer, prompt=prompt, max_tokens=8) == text  # greedy: deterministic
    assert generate(model, tokenizer, prompt=prompt, max_tokens=8) == text


def test_it_is_built_once_and_then_reused_from_its_cache(
    tiny_model: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def build_again(*args: object, **kwargs: object) -> None:
        raise AssertionError("the cached tiny model was built again")

    monkeypatch.setattr(tiny_model_module, "build_tiny_model", build_again)
    files = {p.name: p.stat().st_mtime_ns for p in tiny_model.iterdir()}
    assert {"config.json", "model.safetensors", "tokenizer.json"} <= files.keys()
    assert ensure_tiny_model(tiny_model.parent) == tiny_model
    assert {p.name: p.stat().st_mtime_ns for p in tiny_model.iterdir()} == files
    assert [p.name for p in tiny_model.parent.iterdir()] == [tiny_model.name]  # no staging left
