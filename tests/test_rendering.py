"""Training and serving render a chat into the same tokens, whatever the model's chat template."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from ai_lsp_tune.cli.demo import sample_analyses
from ai_lsp_tune.serving.protocol import ChatMessage
from ai_lsp_tune.serving.runner import HostClient

# Gemma's shape: a template that refuses a system turn.
NO_SYSTEM_ROLE_TEMPLATE = (
    "{% if messages[0]['role'] == 'system' %}"
    "{{ raise_exception('System role not supported') }}{% endif %}"
    "{% for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)


@pytest.fixture(scope="module", params=["system role", "no system role", "no chat template"])
def template_model(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory, tiny_model: Path
) -> Path:
    """The tiny model, with its own chat template, Gemma's kind of template, or none at all."""
    if request.param == "system role":
        return tiny_model
    out = tmp_path_factory.mktemp("template") / "model"
    shutil.copytree(tiny_model, out)
    config = json.loads((out / "tokenizer_config.json").read_text())
    if request.param == "no system role":
        config["chat_template"] = NO_SYSTEM_ROLE_TEMPLATE
    else:
        del config["chat_template"]
    (out / "tokenizer_config.json").write_text(json.dumps(config))
    return out


@pytest.mark.model
async def test_the_model_host_is_prompted_in_the_tokens_the_trainer_learned_from(
    template_model: Path,
) -> None:
    from mlx_lm import load

    from ai_lsp_tune.serving.engine import Engine
    from ai_lsp_tune.training.data import example_tokens

    example = sample_analyses(1, seed=5)[0]
    chat = [
        ChatMessage(role="system", content=example.system),
        ChatMessage(role="user", content=example.user),
    ]
    model, tokenizer = load(str(template_model))[:2]
    trained, answer_starts = example_tokens(tokenizer, example)
    served = Engine(model, tokenizer).render(chat)
    assert served == trained[:answer_starts]
    assert len(trained) > answer_starts  # the answer follows the very prompt the host sees
    prompt_text = tokenizer.decode(served)
    assert example.system in prompt_text and example.user in prompt_text  # nothing dropped

    host = await HostClient.start(str(template_model))
    try:
        generation = await host.generate(chat, max_tokens=1, constrained=False)
    finally:
        await host.close()
    assert generation.input_tokens == answer_starts
