"""The model host and the hot-swappable served model, with the tiny MLX model."""

from __future__ import annotations

import asyncio
import shutil
from pathlib import Path

import pytest

from ai_lsp_tune.serving.registry import ModelRegistry
from ai_lsp_tune.serving.runner import HostClient, ModelLoadError
from ai_lsp_tune.serving.served_model import NoPreviousModel, ServedModel
from tests.helpers.model_host import chat, host_answers
from tests.helpers.models import same_shape_model, three_layer_model


@pytest.mark.model
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


@pytest.mark.model
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


@pytest.mark.model
async def test_unloadable_model_is_a_clear_error(tmp_path: Path) -> None:
    (tmp_path / "config.json").write_text("{}")
    with pytest.raises(ModelLoadError) as info:
        await HostClient.start(str(tmp_path))
    assert info.value.kind == "invalid_model" and str(tmp_path) in info.value.message


@pytest.mark.model
@pytest.mark.parametrize("bits", [None, 4], ids=["bf16", "4-bit"])
async def test_a_swap_to_the_same_architecture_happens_in_the_running_host(
    tiny_model: Path, tmp_path: Path, bits: int | None
) -> None:
    base = (
        tiny_model
        if bits is None
        else same_shape_model(tiny_model, tmp_path / "q", seed=0, bits=bits)
    )
    tuned = same_shape_model(tiny_model, tmp_path / "fine-tuned", seed=1, bits=bits)
    codes = ["x = 1\n", "def f(a):\n    return a\n"]
    expected_tuned = await host_answers(tuned, codes)

    registry = ModelRegistry(tmp_path / "ws")
    served = await ServedModel.start(str(base), registry=registry)
    try:
        host = served._host
        expected_base = [
            (await served.generate(chat(c), max_tokens=12, constrained=False)).text for c in codes
        ]
        assert expected_base != expected_tuned  # other weights: other answers
        in_flight = asyncio.create_task(
            served.generate(chat(codes[0]), max_tokens=12, constrained=False)
        )
        await asyncio.sleep(0.05)
        await served.swap(str(tuned))
        assert served._host is host and host.process.returncode is None  # no second host
        assert served.current_path == str(tuned) and served.previous_path == str(base)
        before = await in_flight  # sent before the swap: answered by the old weights
        assert (before.model, before.text) == (str(base), expected_base[0])
        after = [await served.generate(chat(c), max_tokens=12, constrained=False) for c in codes]
        assert [a.text for a in after] == expected_tuned  # as if loaded by a host of its own
        assert {a.model for a in after} == {str(tuned)}
        constrained = await served.generate(chat(codes[1]), max_tokens=40)
        assert constrained.constrained and constrained.grammar_problem is None  # grammar kept

        await served.rollback()  # the same operation, back to the base's weights
        assert served._host is host and served.current_path == str(base)
        again = await served.generate(chat(codes[1]), max_tokens=12, constrained=False)
        assert again.text == expected_base[1]
        assert ModelRegistry(tmp_path / "ws").served == str(base)
    finally:
        await served.close()


@pytest.mark.model
async def test_a_model_of_another_architecture_gets_a_host_of_its_own(
    tiny_model: Path, tmp_path: Path
) -> None:
    other = three_layer_model(tmp_path / "three-layers")
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
        await served.swap(str(other))
        assert served._host is not old_host
        assert served.current_path == str(other) and served.previous_path == str(tiny_model)
        answer = await served.generate(chat("y = 2\n"), max_tokens=5)  # on the new host
        assert answer.output_tokens >= 1 and answer.model == str(other)
        assert (await in_flight).output_tokens >= 1  # finished on the old host, no failure
        await asyncio.wait_for(old_host.process.wait(), 10)  # then the old host stopped

        restarted = ModelRegistry(tmp_path / "ws")
        assert (restarted.served, restarted.previous) == (str(other), str(tiny_model))
        assert restarted.model_to_serve(str(tiny_model)) == str(other)

        for broken in (tmp_path / "missing", tmp_path / "no-weights"):
            if broken.name == "no-weights":
                shutil.copytree(other, broken)
                (broken / "model.safetensors").write_bytes(b"not safetensors")
            with pytest.raises(ModelLoadError):
                await served.swap(str(broken))
            assert served.current_path == str(other)  # the old model kept serving
            assert (await served.generate(chat("z\n"), max_tokens=3)).output_tokens >= 1

        await served.rollback()
        assert served.current_path == str(tiny_model)
        assert ModelRegistry(tmp_path / "ws").served == str(tiny_model)
    finally:
        await served.close()


def test_registry_follows_a_newly_configured_model(tmp_path: Path) -> None:
    registry = ModelRegistry(tmp_path)
    assert registry.start_serving("base") == "base"
    registry.record_swap("tuned", "base")
    assert ModelRegistry(tmp_path).model_to_serve("base") == "tuned"
    # The user picked another model since: their choice wins, the swap is forgotten.
    assert ModelRegistry(tmp_path).start_serving("other") == "other"
    assert ModelRegistry(tmp_path).served is None


@pytest.mark.model
async def test_a_killed_host_is_started_again_but_not_in_a_crash_loop(
    tiny_model: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from ai_lsp_tune.serving import served_model
    from ai_lsp_tune.serving.runner import HostGone

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
