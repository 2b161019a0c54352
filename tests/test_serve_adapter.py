"""``finetune.fuse`` false: the model host serves base + LoRA adapter, no fused copy needed.

The real host process and a tiny model (bf16 and 4-bit, as the default mlx-community model is):
an adapter is put on the base the host already holds, in place; requests sent before finish on
the old weights; a rollback takes it off again; another base is reloaded in place first, and a
base of another architecture gets a host of its own that loads base + adapter.
"""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from types import SimpleNamespace

import pytest

from ai_lsp_tune.serving.registry import ModelEntry, ModelRegistry
from ai_lsp_tune.serving.runner import ModelLoadError
from ai_lsp_tune.serving.served_model import ServedModel
from tests.helpers.model_host import chat
from tests.helpers.models import same_shape_model, three_layer_model

CODES = ["x = 1\n", "def f(a):\n    return a\n"]


def make_adapter(base: Path, folder: Path, *, seed: int) -> Path:
    """A LoRA adapter of ``base`` as a run writes it (rank 4, last layer), large enough to
    change the greedy answers."""
    import mlx.core as mx
    from mlx.utils import tree_flatten
    from mlx_lm import load
    from mlx_lm.tuner.utils import linear_to_lora_layers

    model = load(str(base))[0]
    params = {"rank": 4, "scale": 20.0, "dropout": 0.0}
    linear_to_lora_layers(model, 1, params)
    mx.random.seed(seed)
    weights = {
        name: mx.random.normal(value.shape) * 0.5
        for name, value in tree_flatten(model.trainable_parameters())
        if name.rsplit(".", 1)[-1] in ("lora_a", "lora_b")
    }
    folder.mkdir(parents=True)
    mx.save_safetensors(str(folder / "adapters.safetensors"), weights)
    config = {"fine_tune_type": "lora", "model": str(base), "num_layers": 1,
              "lora_parameters": params}  # fmt: skip
    (folder / "adapter_config.json").write_text(json.dumps(config))
    return folder


async def adapter_answers(base: Path, adapter: Path) -> list[str]:
    """What a host of its own answers for base + adapter."""
    from ai_lsp_tune.serving.runner import HostClient

    host = await HostClient.start(str(base), adapter=str(adapter))
    try:
        assert host.model == str(adapter)  # the path reported is the adapter's
        return [(await host.generate(chat(c), 12, constrained=False)).text for c in CODES]
    finally:
        await host.close()


@pytest.mark.model
@pytest.mark.parametrize("bits", [None, 4], ids=["bf16", "4-bit"])
async def test_an_adapter_is_served_on_the_running_hosts_base_and_rolled_back(
    tiny_model: Path, tmp_path: Path, bits: int | None
) -> None:
    base = same_shape_model(tiny_model, tmp_path / "base", seed=0, bits=bits)
    adapter = make_adapter(base, tmp_path / "runs" / "r1" / "output" / "adapters", seed=3)
    expected_adapter = await adapter_answers(base, adapter)

    registry = ModelRegistry(tmp_path / "ws")
    served = await ServedModel.start(str(base), registry=registry)
    try:
        host = served._host
        expected_base = [
            (await served.generate(chat(c), 12, constrained=False)).text for c in CODES
        ]
        assert expected_adapter != expected_base  # the adapter changes what the model answers
        in_flight = asyncio.create_task(
            served.generate(chat(CODES[0]), max_tokens=12, constrained=False)
        )
        await asyncio.sleep(0.05)
        await served.swap(str(adapter))  # a path, as a fine-tune's record and the list have it
        assert served._host is host and host.process.returncode is None  # in place
        assert served.current_path == str(adapter) and served.previous_path == str(base)
        before = await in_flight
        assert (before.model, before.text) == (str(base), expected_base[0])
        after = [await served.generate(chat(c), 12, constrained=False) for c in CODES]
        assert [a.text for a in after] == expected_adapter
        assert {a.model for a in after} == {str(adapter)}
        constrained = await served.generate(chat(CODES[1]), max_tokens=40)
        assert constrained.constrained and constrained.model == str(adapter)

        await served.rollback()  # the adapter's layers come off: the base answers again
        assert served._host is host and served.current_path == str(base)
        assert (await served.generate(chat(CODES[1]), 12, constrained=False)).text == (
            expected_base[1]
        )
        await served.use(str(adapter))  # ``ai-lsp.model.use`` of the adapter re-applies it
        assert (await served.generate(chat(CODES[0]), 12, constrained=False)).text == (
            expected_adapter[0]
        )
        assert ModelRegistry(tmp_path / "ws").served == str(adapter)
    finally:
        await served.close()

    restarted = await ServedModel.start(str(adapter), registry=registry)  # a server restart
    try:
        again = await restarted.generate(chat(CODES[1]), 12, constrained=False)
        assert (again.model, again.text) == (str(adapter), expected_adapter[1])
    finally:
        await restarted.close()


@pytest.mark.model
async def test_an_adapter_of_another_base_reloads_it_in_place_or_in_a_host_of_its_own(
    tiny_model: Path, tmp_path: Path
) -> None:
    base = same_shape_model(tiny_model, tmp_path / "base", seed=0)
    adapter = make_adapter(base, tmp_path / "adapters", seed=3)
    expected = await adapter_answers(base, adapter)
    fused = same_shape_model(tiny_model, tmp_path / "fused", seed=1)  # continueFromServed's
    served = await ServedModel.start(str(fused))
    try:
        host = served._host
        await served.swap(str(adapter))
        assert served._host is host  # same architecture: the base's weights reloaded in place
        assert [(await served.generate(chat(c), 12, constrained=False)).text for c in CODES] == (
            expected
        )
    finally:
        await served.close()

    other = three_layer_model(tmp_path / "three-layers")
    served = await ServedModel.start(str(other))
    try:
        host = served._host
        await served.swap(str(adapter))
        assert served._host is not host  # another architecture: base + adapter in a new host
        answer = await served.generate(chat(CODES[0]), 12, constrained=False)
        assert (answer.model, answer.text) == (str(adapter), expected[0])
    finally:
        await served.close()


@pytest.mark.model
async def test_an_adapter_that_does_not_fit_leaves_the_old_model_serving(
    tiny_model: Path, tmp_path: Path
) -> None:
    other = three_layer_model(tmp_path / "three-layers")
    misfit = make_adapter(other, tmp_path / "adapters", seed=3)  # for layer 2 of 0..2
    config = json.loads((misfit / "adapter_config.json").read_text())
    (misfit / "adapter_config.json").write_text(json.dumps({**config, "model": str(tiny_model)}))
    fused = same_shape_model(tiny_model, tmp_path / "fused", seed=1)
    served = await ServedModel.start(str(fused))
    try:
        expected = [(await served.generate(chat(c), 12, constrained=False)).text for c in CODES]
        with pytest.raises(ModelLoadError, match="does not fit"):
            await served.swap(str(misfit))  # the base's weights were loaded, then put back
        assert served.current_path == str(fused)
        assert [(await served.generate(chat(c), 12, constrained=False)).text for c in CODES] == (
            expected
        )
    finally:
        await served.close()


def test_retention_deletes_old_adapters_but_never_the_served_ones_base(tmp_path: Path) -> None:
    runs = tmp_path / "runs"
    fused_base = runs / "r0" / "output" / "model"
    fused_base.mkdir(parents=True)
    (fused_base / "config.json").write_text("{}")
    adapters = []
    for run in ("r1", "r2", "r3"):
        folder = runs / run / "output" / "adapters"
        folder.mkdir(parents=True)
        (folder / "adapter_config.json").write_text(json.dumps({"model": str(fused_base)}))
        adapters.append(str(folder))
    registry = ModelRegistry(tmp_path / "ws")
    for path in [str(fused_base), *adapters]:
        registry.record_model(ModelEntry(path=path, run_id=Path(path).parts[-3]))
    registry.record_swap(adapters[2], "base")
    serving = SimpleNamespace(model=adapters[2])  # no host needed: retention reads the registry
    served = ServedModel(serving, registry=registry)  # type: ignore[arg-type]

    deleted = asyncio.run(served.retain(1, protect={"base"}, runs_dir=runs))
    assert deleted == adapters[:2]  # old adapters go, like old fused models
    assert not (runs / "r1").exists() and not (runs / "r2").exists()
    assert Path(adapters[2]).is_dir() and fused_base.is_dir()  # served, and the base it needs
