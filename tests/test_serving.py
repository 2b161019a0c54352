"""The model host and the hot-swappable served model, with the tiny MLX model."""

from __future__ import annotations

import asyncio
import shutil
from pathlib import Path

import pytest

from ai_lsp_tune.prompts import SYSTEM_PROMPT, user_prompt
from ai_lsp_tune.serving.client import HostClient, ModelLoadError
from ai_lsp_tune.serving.protocol import ChatMessage
from ai_lsp_tune.serving.registry import ModelRegistry
from ai_lsp_tune.serving.served_model import NoPreviousModel, ServedModel


def chat(code: str) -> list[ChatMessage]:
    return [
        ChatMessage(role="system", content=SYSTEM_PROMPT),
        ChatMessage(role="user", content=user_prompt("python", code, "a.py")),
    ]


async def test_host_decodes_greedily_from_the_cached_system_prompt(tiny_model: Path) -> None:
    from mlx_lm import generate, load

    host = await HostClient.start(str(tiny_model))
    try:
        assert host.ready is not None and host.ready.prompt_cache_tokens > 0
        first = await host.generate(chat("x = 1\n"), max_tokens=20, constrained=False)
        other = await host.generate(chat("y = [2]\n"), max_tokens=20, constrained=False)
        again = await host.generate(chat("x = 1\n"), max_tokens=20, constrained=False)
    finally:
        await host.close()
    assert first.cached_tokens == host.ready.prompt_cache_tokens
    assert again.text == first.text  # the cache is reset to the system prompt after each answer
    # (Unconstrained here:) the same tokens as mlx-lm's own greedy generation, without a cache.
    model, tokenizer = load(str(tiny_model))
    prompt = tokenizer.apply_chat_template(
        [m.model_dump() for m in chat("y = [2]\n")], add_generation_prompt=True
    )
    assert other.text == generate(model, tokenizer, prompt=prompt, max_tokens=20)
    assert first.input_tokens > host.ready.prompt_cache_tokens and first.output_tokens >= 1


async def test_cancelled_generation_stops_and_the_host_keeps_answering(tiny_model: Path) -> None:
    host = await HostClient.start(str(tiny_model))
    try:
        long = asyncio.create_task(
            host.generate(chat("x = 1\n"), max_tokens=100_000, constrained=False)
        )
        await asyncio.sleep(0.5)
        long.cancel()
        with pytest.raises(asyncio.CancelledError):
            await long
        answer = await asyncio.wait_for(host.generate(chat("x = 1\n"), max_tokens=5), 10)
        assert answer.output_tokens <= 5
    finally:
        await host.close()
    assert host.process.returncode == 0


async def test_unloadable_model_is_a_clear_error(tmp_path: Path) -> None:
    (tmp_path / "config.json").write_text("{}")
    with pytest.raises(ModelLoadError) as info:
        await HostClient.start(str(tmp_path))
    assert info.value.kind == "invalid_model" and str(tmp_path) in info.value.message


async def test_hot_swap_keeps_answering_and_is_persisted(tiny_model: Path, tmp_path: Path) -> None:
    second = tmp_path / "fine-tuned"
    shutil.copytree(tiny_model, second)
    registry = ModelRegistry(tmp_path / "ws")
    served = await ServedModel.start(str(tiny_model), registry=registry)
    try:
        with pytest.raises(NoPreviousModel):
            await served.rollback()
        old_host = served._host
        in_flight = asyncio.create_task(
            served.generate(chat("x = 1\n"), max_tokens=200, constrained=False)
        )
        await asyncio.sleep(0.2)
        await served.swap(str(second))
        assert served.current_path == str(second) and served.previous_path == str(tiny_model)
        answer = await served.generate(chat("y = 2\n"), max_tokens=5)  # on the new host
        assert answer.output_tokens >= 1
        assert (await in_flight).output_tokens >= 1  # finished on the old host, no failure
        await asyncio.wait_for(old_host.process.wait(), 10)  # then the old host stopped

        restarted = ModelRegistry(tmp_path / "ws")
        assert (restarted.served, restarted.previous) == (str(second), str(tiny_model))
        assert restarted.model_to_serve(str(tiny_model)) == str(second)

        with pytest.raises(ModelLoadError):
            await served.swap(str(tmp_path / "missing"))
        assert served.current_path == str(second)  # the old model kept serving
        assert (await served.generate(chat("z\n"), max_tokens=3)).output_tokens >= 1

        await served.rollback()
        assert served.current_path == str(tiny_model)
        assert ModelRegistry(tmp_path / "ws").served == str(tiny_model)
    finally:
        await served.close()


def test_registry_follows_a_newly_configured_model(tmp_path: Path) -> None:
    registry = ModelRegistry(tmp_path)
    assert registry.model_to_serve("base") == "base"
    registry.record_swap("tuned", "base")
    assert ModelRegistry(tmp_path).model_to_serve("base") == "tuned"
    # The user picked another model since: their choice wins, the swap is forgotten.
    assert ModelRegistry(tmp_path).model_to_serve("other") == "other"
    assert ModelRegistry(tmp_path).served is None


async def test_a_killed_host_is_started_again_but_not_in_a_crash_loop(
    tiny_model: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from ai_lsp_tune.serving import served_model
    from ai_lsp_tune.serving.client import HostGone

    monkeypatch.setattr(served_model, "MAX_RESTARTS", 1)
    served = await ServedModel.start(str(tiny_model))
    try:
        killed = served._host.process
        in_flight = asyncio.create_task(
            served.generate(chat("x = 1\n"), max_tokens=3000, constrained=False)
        )
        await asyncio.sleep(0.3)
        assert not in_flight.done()
        killed.kill()  # as the OOM killer would, mid-generation
        answer = await asyncio.wait_for(in_flight, 60)  # retried on a new host
        assert answer.output_tokens >= 1
        assert served._host.process.pid != killed.pid
        assert (await served.generate(chat("y = 2\n"), max_tokens=3)).output_tokens >= 1

        served._host.process.kill()  # a second death within the window: reported
        await served._host.process.wait()
        with pytest.raises(HostGone, match="2 times in 60 s"):
            await served.generate(chat("z\n"), max_tokens=3)
    finally:
        await served.close()
