"""LoRA on the last layers only: the frozen layers' output is computed once per run and each
step runs the LoRA'd layers alone (``training/frozen.py``), with the losses and adapter of
the plain pass; a model whose stack cannot start from cached states trains the plain way."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from ai_lsp_tune.training.data import LengthGroupedBatches
from ai_lsp_tune.training.protocol import TrainingEvent, TrainRequest, WorkerEvent
from ai_lsp_tune.training.runner import run_training
from tests.helpers.models import lora_model
from tests.helpers.training import (
    BATCH,
    Losses,
    fast_request,
    prompted_split,
    step_args,
    write_splits,
)

pytestmark = pytest.mark.training


def trained(
    tiny_model: Path, tmp_path: Path, *, pack: bool, share: bool, frozen: bool
) -> tuple[dict, list[float]]:
    """Two steps through mlx-lm's compiled step, every layer run or the first one cached (and
    then broken: a step that ran it would give NaN)."""
    import mlx.core as mx
    import mlx.optimizers as optim
    from mlx.utils import tree_flatten, tree_map
    from mlx_lm.tuner.trainer import train

    from ai_lsp_tune.training.data import make_loss
    from ai_lsp_tune.training.frozen import build_cache

    model = lora_model(tiny_model, num_layers=1)  # LoRA on the last of 2 layers
    split = prompted_split(model.args.vocab_size)
    cache = build_cache(model, 1, split) if frozen else None
    batches = LengthGroupedBatches(seed=2, pack=pack, share=share, frozen=cache)
    steps = len(split) // BATCH
    args = step_args(tmp_path / f"adapters-{frozen}.safetensors", steps)
    losses = Losses()
    loss = make_loss(model, chunked=share, frozen=cache)
    if frozen:
        first = model.model.layers[0]
        first.update(tree_map(lambda a: mx.full(a.shape, mx.nan, a.dtype), first.parameters()))
    train(model, optim.Adam(learning_rate=1e-3), split, None, args, loss, batches, losses)  # type: ignore[arg-type]
    return dict(tree_flatten(model.trainable_parameters())), losses.train


@pytest.mark.parametrize(
    ("pack", "share"),
    [(True, False), (False, True), (False, False)],
    ids=["packed", "shared-prefix", "padded"],
)
def test_cached_frozen_layers_make_the_updates_of_the_plain_pass(
    tiny_model: Path, tmp_path: Path, pack: bool, share: bool
) -> None:
    import mlx.core as mx

    plain, plain_losses = trained(tiny_model, tmp_path, pack=pack, share=share, frozen=False)
    mine, my_losses = trained(tiny_model, tmp_path, pack=pack, share=share, frozen=True)
    assert my_losses == pytest.approx(plain_losses, rel=1e-4)
    for name, value in mine.items():
        if name.endswith("lora_b"):
            assert mx.abs(value).max().item() > 0, name  # it trained
        assert mx.allclose(value, plain[name], rtol=1e-3, atol=1e-5).item(), name


def test_validation_over_the_cache_gives_the_plain_loss(tiny_model: Path) -> None:
    """Validation examples are cached with the training ones, so each validation runs the last
    layers only (the first one broken: had it run, the loss would be NaN) to the same loss."""
    import math

    import mlx.core as mx
    from mlx.utils import tree_map
    from mlx_lm.tuner.trainer import evaluate

    from ai_lsp_tune.training.data import TokenizedSplit, make_loss
    from ai_lsp_tune.training.frozen import cache_frozen

    model = lora_model(tiny_model, num_layers=1)
    split = prompted_split(model.args.vocab_size)
    train, valid = TokenizedSplit(items=split.items[:-4]), TokenizedSplit(items=split.items[-4:])

    def validation_loss(frozen: object, loss: object) -> float:
        return float(
            evaluate(
                model=model,
                dataset=valid,
                loss=loss,  # type: ignore[arg-type]
                batch_size=2,
                num_batches=-1,
                max_seq_length=1 << 30,
                iterate_batches=LengthGroupedBatches(share=True, frozen=frozen),  # type: ignore[arg-type]
            )
        )

    plain = validation_loss(None, make_loss(model))
    request = TrainRequest(dataset=Path("d"), model_name="tiny", num_layers=1)
    cache, record = cache_frozen(model, request, train, valid=valid)
    assert cache is not None, record
    loss = make_loss(model, frozen=cache)  # as training does: before any step
    first = model.model.layers[0]
    first.update(tree_map(lambda a: mx.full(a.shape, mx.nan, a.dtype), first.parameters()))
    cached = validation_loss(cache, loss)
    assert math.isfinite(plain) and cached == pytest.approx(plain, rel=1e-4)


def test_a_model_whose_stack_scales_its_embeddings_trains_every_layer_and_says_so(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Gemma-2 multiplies what its embedding gives: cached states would be scaled twice."""
    import mlx.core as mx
    from mlx_lm.models import gemma2

    from ai_lsp_tune.training.frozen import cache_frozen
    from ai_lsp_tune.training.loop import _prepare

    shape = {"model_type": "gemma2", "hidden_size": 64, "num_hidden_layers": 3,
             "intermediate_size": 128, "num_attention_heads": 4, "num_key_value_heads": 2,
             "head_dim": 16, "rms_norm_eps": 1e-6, "vocab_size": 256, "rope_theta": 10000.0,
             "query_pre_attn_scalar": 16.0}  # fmt: skip
    mx.random.seed(0)
    model = gemma2.Model(gemma2.ModelArgs.from_dict(shape))
    request = TrainRequest(dataset=Path("d"), model_name="tiny-gemma", num_layers=1)
    _prepare(model, request)
    cache, record = cache_frozen(model, request, prompted_split(256))
    assert cache is None
    assert record["frozen_layers"] == 0
    assert "differ from the plain pass's" in record["frozen_off_because"]
    said = capsys.readouterr().err.splitlines()
    assert said == [f"every layer runs every step for tiny-gemma: {record['frozen_off_because']}"]


def test_a_run_on_the_last_layer_caches_the_first_and_records_it(
    tiny_model: Path, tmp_path: Path
) -> None:
    dataset = write_splits(tmp_path / "data", 24, 4, 2)
    request = fast_request(
        tiny_model, tmp_path, dataset, num_epochs=2, num_layers=1, eval_max_tokens=16
    )
    events: list[WorkerEvent] = []
    outcome = run_training(request, events.append)
    assert outcome.status == "done", outcome.event
    caching = [e for e in events if isinstance(e, TrainingEvent) and "Caching" in e.message]
    assert caching and caching[-1].message.endswith("28/28 examples")  # training + validation
    assert caching[-1].eta_s is not None and caching[-1].iteration == 0

    batching = json.loads((tmp_path / "out" / "run.json").read_text())["batching"]
    assert batching["frozen_layers"] == 1
    tokens = batching["frozen_cache_tokens"]
    assert tokens > 24 * 100  # every token of every training example
    assert batching["frozen_cache_mib"] == pytest.approx(tokens * 96 * 4 / 2**20, abs=0.1)
    assert batching["frozen_cache_seconds"] >= 0


def _files(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in folder.rglob("*") if p.is_file()}


async def test_a_cancel_while_the_cache_is_built_stops_before_training_and_keeps_the_last_model(
    tiny_model: Path, tmp_path: Path
) -> None:
    """Cancelled at the first caching event (0 of 202 examples cached: 200 training, 2
    validation): the run stops within an example, no step runs, and the model published before
    is untouched."""
    from ai_lsp_tune.training.runner import TrainingRunner

    earlier = tmp_path / "out"
    for name, content in [("model/model.safetensors", b"weights"), ("run.json", b"{}")]:
        (earlier / name).parent.mkdir(parents=True, exist_ok=True)
        (earlier / name).write_bytes(content)
    published = _files(earlier)
    dataset = write_splits(tmp_path / "data", 200, 2, 2)
    request = fast_request(tiny_model, tmp_path, dataset, num_layers=1, eval_max_examples=0)
    caching: list[str] = []
    stepped: list[int] = []

    def on_event(event: WorkerEvent) -> None:
        if isinstance(event, TrainingEvent) and "Caching" in event.message:
            if not caching:
                runner.cancel()
            caching.append(event.message)
        if isinstance(event, TrainingEvent) and event.train_loss is not None:
            stepped.append(event.iteration)

    runner = TrainingRunner(request, on_event)
    outcome = await runner.run()

    assert outcome.status == "cancelled", outcome.event
    assert outcome.event.message == "Cancelled while caching the frozen layers, before training."
    assert caching[0].endswith(": 0/202 examples")  # shown as it starts
    assert not caching[-1].endswith("202/202 examples") and stepped == []
    assert _files(earlier) == published
    assert _files(request.partial_dir) == {}  # no half adapter or model beside it


@pytest.mark.slow
async def test_a_run_resumed_with_the_cache_on_ends_as_the_run_never_stopped(
    tiny_model: Path, tmp_path: Path
) -> None:
    """Cancelled mid-training, resumed: the cache is built again and the run ends with the
    losses and adapter of an uninterrupted one."""
    import mlx.core as mx

    from ai_lsp_tune.training.runner import TrainingRunner

    dataset = write_splits(tmp_path / "data", 24, 4, 2)
    options = {"num_epochs": 2, "num_layers": 1, "eval_max_examples": 0, "fuse": False}
    whole = fast_request(tiny_model, tmp_path / "whole", dataset, **options)
    assert (await TrainingRunner(whole, lambda _: None).run()).status == "done"

    request = fast_request(tiny_model, tmp_path, dataset, **options)

    cancelled: list[int] = []

    def on_event(event: WorkerEvent) -> None:
        if isinstance(event, TrainingEvent) and event.iteration >= 2 and not cancelled:
            cancelled.append(event.iteration)
            runner.cancel()

    runner = TrainingRunner(request, on_event)
    outcome = await runner.run()
    assert outcome.status == "cancelled", outcome.event
    stopped = outcome.event.checkpoint_iteration
    assert stopped is not None and 2 <= stopped < 12  # in steps: no flaky timing

    caching: list[str] = []

    def record(event: WorkerEvent) -> None:
        if isinstance(event, TrainingEvent) and "Caching" in event.message:
            caching.append(event.message)

    resume = request.model_copy(update={"resume": True})
    outcome = await TrainingRunner(resume, record).run()
    assert outcome.status == "done", outcome.event
    assert caching and caching[-1].endswith("28/28 examples")  # 24 training, 4 validation

    runs = [
        json.loads((root / "out" / "run.json").read_text())
        for root in (tmp_path / "whole", tmp_path)
    ]
    assert runs[1]["batching"]["frozen_layers"] == 1
    steps = [[step for step, _ in run["train_loss_history"]] for run in runs]
    assert steps[0] == steps[1] == list(range(1, 13))
    losses = [[loss for _, loss in run["train_loss_history"]] for run in runs]
    assert losses[1] == pytest.approx(losses[0], rel=1e-4)
    adapters = [
        mx.load(str(root / "out" / "adapters" / "adapters.safetensors"))
        for root in (tmp_path / "whole", tmp_path)
    ]
    for name, value in adapters[0].items():
        assert mx.allclose(adapters[1][name], value, rtol=1e-3, atol=1e-5).item(), name
