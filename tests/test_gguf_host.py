"""The model host serves a GGUF file under the name the user gave, as it serves the folder."""

from __future__ import annotations

from pathlib import Path

import pytest

from ai_lsp_tune.serving.runner import HostClient, ModelLoadError
from tests.helpers.gguf_files import gguf_of
from tests.helpers.model_host import chat, host_answers
from tests.helpers.trace_recorder import CODE

pytestmark = pytest.mark.model


@pytest.mark.slow
async def test_a_gguf_is_served_like_its_folder(
    tiny_model_word_split: Path, tmp_path: Path
) -> None:
    source = gguf_of(tiny_model_word_split, tmp_path / "tiny.gguf")
    codes = [CODE, CODE + "value = 1\n"]
    host = await HostClient.start(str(source))
    try:
        assert host.ready is not None and host.ready.model == str(source)
        served = [
            (await host.generate(chat(code), max_tokens=12, constrained=False)).text
            for code in codes
        ]
        answer = await host.generate(chat(CODE), max_tokens=8, constrained=True)
        assert answer.constrained
    finally:
        await host.close()
    assert served == await host_answers(tiny_model_word_split, codes)  # as a host of its own


async def test_a_broken_gguf_is_one_clear_line(tmp_path: Path) -> None:
    broken = tmp_path / "model.gguf"
    broken.write_bytes(b"GGUF\x03\x00\x00\x00\x01")
    with pytest.raises(ModelLoadError) as raised:
        await HostClient.start(str(broken))
    assert raised.value.kind == "invalid_model"
    assert "is not a complete GGUF model file" in raised.value.message
    assert "\n" not in raised.value.message
