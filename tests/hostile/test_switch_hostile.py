"""A model host asked to switch to a hostile model folder refuses it and keeps serving.

Each trigger once raised outside the guarded part of ``Engine.switch`` and took the host down:
a chat template that fails to render, a name too long for the file system, a folder whose
tokenizer cannot be read. The host must answer a refusal, and the next analysis must run on the
old model as before.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from pathlib import Path

import pytest

from ai_lsp_tune.serving.engine import Engine, load_engine
from ai_lsp_tune.serving.protocol import (
    ChatMessage,
    GenerateRequest,
    Generation,
    SwitchRefused,
    SwitchRequest,
)

SANDBOX_ESCAPE = "{% for m in messages %}{{ m.content.__class__.__mro__ }}{% endfor %}"


def _copy(tiny_model: Path, tmp_path: Path) -> Path:
    folder = tmp_path / "hostile-model"
    shutil.copytree(tiny_model, folder)
    return folder


def _template_fails(folder: Path) -> str:
    config = json.loads((folder / "tokenizer_config.json").read_text())
    config["chat_template"] = SANDBOX_ESCAPE
    (folder / "tokenizer_config.json").write_text(json.dumps(config))
    (folder / "chat_template.jinja").unlink(missing_ok=True)
    return str(folder)


def _name_too_long(folder: Path) -> str:
    return str(folder / ("m" * 5000))


def _tokenizer_unreadable(folder: Path) -> str:
    (folder / "tokenizer_config.json").write_bytes(b"\xff\xfe not json")
    return str(folder)


def _weights_missing(folder: Path) -> str:
    for weights in folder.glob("*.safetensors"):
        weights.unlink()
    return str(folder)


TRIGGERS: dict[str, Callable[[Path], str]] = {
    "a chat template that fails to render": _template_fails,
    "a 5,000-character name": _name_too_long,
    "a binary tokenizer_config.json": _tokenizer_unreadable,
    "no weights": _weights_missing,
}


@pytest.fixture(scope="module")
def engine(tiny_model: Path) -> Engine:
    loaded = load_engine(str(tiny_model))
    loaded.warm()
    return loaded


def _analyse(engine: Engine) -> Generation:
    request = GenerateRequest(
        id=1,
        messages=[ChatMessage(role="user", content="def f(): pass")],
        max_tokens=8,
        constrained=False,
    )
    answer = engine.generate(request, set())
    assert isinstance(answer, Generation)
    return answer


@pytest.mark.parametrize("trigger", TRIGGERS)
def test_a_switch_to_a_hostile_model_is_refused_and_the_old_model_keeps_answering(
    engine: Engine, tiny_model: Path, tmp_path: Path, trigger: str
) -> None:
    before = _analyse(engine)
    model = TRIGGERS[trigger](_copy(tiny_model, tmp_path))

    refused = engine.switch(SwitchRequest(id=7, model=model))

    assert isinstance(refused, SwitchRefused), refused
    assert refused.kind != "architecture"  # not worth a second host: it cannot load at all
    assert len(refused.message) <= 400, refused.message
    assert engine.name == str(tiny_model)
    after = _analyse(engine)
    assert (after.text, after.model) == (before.text, before.model)
