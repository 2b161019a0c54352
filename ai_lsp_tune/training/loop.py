"""The LoRA training loop: mlx-lm's ``train`` with our batches, loss and callback.

The callback turns mlx-lm's reports into TrainingEvents, keeps the adapter with the best
validation loss (mlx-lm keeps only the last) and its per-example validation losses, checkpoints
periodically, and stops the loop when asked (by raising out of ``train``). At the end the run
publishes the best or the last adapter (``adapter_choice``).
"""

from __future__ import annotations

import contextlib
import os
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ai_lsp_tune.training.adapter_choice import Published, WindowLoss, adapter_to_publish
from ai_lsp_tune.training.channel import Cancelled, EventChannel
from ai_lsp_tune.training.checkpoint import CheckpointState, save_checkpoint
from ai_lsp_tune.training.data import (
    LengthGroupedBatches,
    TokenizedSplit,
    WindowLosses,
    chunks,
    make_loss,
    packs,
)
from ai_lsp_tune.training.distributed import World, any_stopped
from ai_lsp_tune.training.evaluate import EvalMetrics
from ai_lsp_tune.training.frozen import CacheProgress, cache_frozen
from ai_lsp_tune.training.inputs import check_fits
from ai_lsp_tune.training.protocol import TrainingEvent, TrainRequest, at

VALIDATIONS_PER_RUN = 8


@dataclass
class TrainResult:
    iterations: int
    best_iteration: int
    best_val_loss: float | None
    best_weights: dict[str, Any]
    trained_tokens: int
    train_seconds: float
    peak_memory_gb: float
    val_history: list[tuple[int, float]] = field(default_factory=list)
    train_history: list[tuple[int, float]] = field(default_factory=list)
    batching: dict[str, Any] = field(default_factory=dict)
    published_adapter: Published = "best"
    adapter_choice: str = ""  # why, in a line


@dataclass(frozen=True)
class LoraTraining:
    """One LoRA training: the request, the loaded model and its tokenized splits, the
    checkpoint it resumes, and the run around it (its events, its stop, its ranks)."""

    request: TrainRequest
    model: Any
    tokens: dict[str, TokenizedSplit]
    total: int  # optimizer steps of the whole run, resumed or not
    fingerprint: str  # what a checkpoint must match to be resumed
    before: EvalMetrics  # the served model's scores, kept with the checkpoint
    resumed: tuple[CheckpointState, dict[str, Any]] | None
    channel: EventChannel
    stop: threading.Event
    world: World = field(default_factory=World)


class _Stop(Exception):
    pass


class _Reporter:
    """mlx-lm TrainingCallback: events, best adapter, checkpoints, stop."""

    def __init__(
        self,
        training: LoraTraining,
        *,
        optimizer: Any,
        batches: LengthGroupedBatches,
        best_weights: dict[str, Any],
        state: CheckpointState,
        start: int,
        per_update: int = 1,
    ) -> None:
        self.training = training
        self.optimizer = optimizer
        self.batches = batches
        self.after_eval_s = before_eval_seconds(training.channel)
        self.state = state
        self.start = start
        self.per_update = per_update  # mlx-lm counts micro-batches; we count optimizer steps
        self.best_weights = best_weights
        self.last_report = time.perf_counter()
        self.last_tokens = 0
        self.last_checkpoint = time.monotonic()
        self.val_seconds = 0.0
        self.sec_per_iter: float | None = None
        self.layers = len(training.model.layers)  # read now: caching runs fewer
        self.last_windows: list[WindowLoss] | None = None  # the latest validation's

    def _trainable(self) -> dict[str, Any]:
        from mlx.utils import tree_flatten

        return dict(tree_flatten(self.training.model.trainable_parameters()))

    def checkpoint(self, iteration: int) -> None:
        from mlx.utils import tree_flatten

        if not self.training.world.leader:  # the other ranks never write to the output
            return
        folder: Path = self.training.request.partial_dir / "checkpoint"
        self.state.iteration = iteration
        arrays = {
            "adapters": self._trainable(),
            "best_adapters": self.best_weights,
            "optimizer": dict(tree_flatten(self.optimizer.state)),
        }
        save_checkpoint(folder, self.state, arrays)
        self.training.channel.last_checkpoint = (iteration, folder)
        self.last_checkpoint = time.monotonic()

    def _emit(self, iteration: int, **fields: Any) -> None:
        import mlx.core as mx

        total = self.state.total
        remaining = total - iteration
        eta = None
        if self.sec_per_iter is not None:
            eta = remaining * self.sec_per_iter + self.after_eval_s
        self.training.channel.emit(
            TrainingEvent(
                iteration=iteration,
                total=total,
                best_val_loss=self.state.best_val_loss,
                trained_tokens=self.state.trained_tokens,
                peak_memory_gb=round(mx.get_peak_memory() / 1e9, 3),
                eta_s=None if eta is None else round(eta, 1),
                fraction=at("training", iteration / max(total, 1)),
                **fields,
            )
        )

    def caching(self, progress: CacheProgress) -> None:
        """The frozen layers' cache being built, as a training event at the first step. The
        ETA prices a step's tokens (its examples' own, the prefix once) through the LoRA'd
        layers at 3x (forward, backward) the cache's time per token and layer, until real
        steps measure it; unknown until the first examples are cached."""
        request, (done, of, seconds, rows, shared) = self.training.request, progress
        frozen = self.layers - request.num_layers
        per_token_layer = seconds / max(rows * frozen, 1)
        own = (rows - shared) / max(done, 1)  # an example's tokens after the shared prefix
        step = 3 * per_token_layer * request.num_layers * (shared + request.batch_size * own)
        eta = seconds / max(done, 1) * (of - done) + step * (self.state.total - self.start)
        self.training.channel.emit(
            TrainingEvent(
                iteration=self.start,
                total=self.state.total,
                trained_tokens=self.state.trained_tokens,
                eta_s=round(eta + self.after_eval_s, 1) if done else None,
                fraction=at("training", self.start / max(self.state.total, 1)),
                message=f"Caching frozen layers 1-{frozen} of {self.layers}: {done}/{of} examples",
            )
        )

    def on_train_loss_report(self, info: dict[str, Any]) -> None:
        iteration = self.start + int(info["iteration"]) // self.per_update
        now = time.perf_counter()
        seconds = max(now - self.last_report - self.val_seconds, 1e-9)
        batches = self.batches
        tokens = batches.trained_tokens - self.last_tokens
        self.state.trained_tokens += tokens
        self.state.train_seconds += seconds
        self.last_report, self.last_tokens, self.val_seconds = now, batches.trained_tokens, 0.0
        done = iteration - self.start
        self.sec_per_iter = (self.state.train_seconds / max(iteration, 1)) if done else None
        loss = float(info["train_loss"])
        self.state.train_history.append((iteration, round(loss, 5)))
        self._emit(
            iteration,
            train_loss=loss,
            learning_rate=float(info["learning_rate"]),
            tokens_per_sec=round(tokens / seconds, 1),
        )
        if time.monotonic() - self.last_checkpoint > self.training.request.checkpoint_every_s:
            self.checkpoint(iteration)
        if any_stopped(self.training.stop.is_set(), self.training.world):
            self.checkpoint(iteration)
            raise _Stop

    def on_val_loss_report(self, info: dict[str, Any]) -> None:
        iteration = self.start + int(info["iteration"]) // self.per_update
        self.val_seconds += float(info["val_time"])
        self.record_val(iteration, float(info["val_loss"]), self.windows())
        if iteration > self.start:
            self.checkpoint(iteration)

    def keep_last(self, iteration: int, val_loss: float | None = None) -> None:
        """The adapter kept is the last one: without validation, or when the request says so."""
        self.state.best_iteration = iteration
        if val_loss is not None:
            self.state.best_val_loss = val_loss
        self.best_weights = self._trainable()

    def windows(self) -> list[WindowLoss] | None:
        """The last validation pass's per-example losses, every rank's."""
        recorded = self.batches.window_losses
        return None if recorded is None else recorded.pairs(self.training.world)

    def record_val(
        self, iteration: int, val_loss: float, windows: list[WindowLoss] | None = None
    ) -> None:
        self.last_windows = windows
        if self.state.val_history and self.state.val_history[-1][0] == iteration:
            return
        self.state.val_history.append((iteration, round(val_loss, 5)))
        if self.state.best_val_loss is None or val_loss < self.state.best_val_loss:
            self.state.best_val_loss = val_loss
            self.state.best_iteration = iteration
            self.state.best_window_losses = windows
            self.best_weights = self._trainable()
        self._emit(iteration, val_loss=val_loss)


def _prepare(model: Any, request: TrainRequest) -> None:
    from mlx_lm.tuner.utils import linear_to_lora_layers

    check_fits(model, request)
    model.freeze()
    params = {"rank": request.lora_rank, "scale": request.lora_scale, "dropout": 0.0}
    linear_to_lora_layers(model, min(request.num_layers, len(model.layers)), params)


@contextlib.contextmanager
def checkpointed_layers(model: Any, enabled: bool) -> Iterator[None]:
    """Gradient checkpointing of the transformer layers while training (``--grad-checkpoint``).

    mlx-lm's ``grad_checkpoint`` patches the layer class itself; it is put back afterwards, so
    the evaluation that follows (and any later model of that class) runs unpatched.
    """
    if not enabled:
        yield
        return
    from mlx_lm.tuner.trainer import grad_checkpoint

    layer_class = type(model.layers[0])
    original = layer_class.__call__
    grad_checkpoint(model.layers[0])
    try:
        yield
    finally:
        layer_class.__call__ = original


def train_lora(training: LoraTraining) -> TrainResult:
    """Train LoRA adapters for ``total`` iterations (or the rest of them, when resuming)."""
    import mlx.core as mx
    import mlx.optimizers as optim
    from mlx.utils import tree_unflatten
    from mlx_lm.tuner.trainer import TrainingArgs, evaluate, train

    request, model, tokens, total = (
        training.request,
        training.model,
        training.tokens,
        training.total,
    )
    mx.random.seed(request.seed)
    _prepare(model, request)
    optimizer = optim.Adam(learning_rate=request.learning_rate)
    if training.resumed:
        state, arrays = training.resumed
        model.load_weights(list(arrays["adapters"].items()), strict=False)
        if arrays["optimizer"]:
            optimizer.state = tree_unflatten(list(arrays["optimizer"].items()))
        best_weights = arrays["best_adapters"] or dict(arrays["adapters"])
    else:
        from mlx.utils import tree_flatten

        state = CheckpointState(
            fingerprint=training.fingerprint, iteration=0, total=total, before=training.before
        )
        best_weights = dict(tree_flatten(model.trainable_parameters()))
    start = state.iteration
    # No validation split (a first fine-tune on few examples): no best-adapter selection.
    valid = tokens["valid"] if len(tokens["valid"]) else None
    batches, batching = _batches(model, request, tokens["train"], start, training.world)
    if valid is not None:
        batches.window_losses = WindowLosses(valid)
    per_update = batching["micro_batches_per_step"]
    eval_every = request.eval_every or max(1, total // VALIDATIONS_PER_RUN)
    reporter = _Reporter(
        training,
        optimizer=optimizer,
        batches=batches,
        best_weights=best_weights,
        state=state,
        start=start,
        per_update=per_update,
    )
    if training.stop.is_set():
        raise Cancelled("Cancelled before training.")
    args = TrainingArgs(
        batch_size=request.batch_size,
        iters=(total - start) * per_update,
        val_batches=request.val_batches,
        steps_per_report=per_update,  # one report per optimizer step
        steps_per_eval=eval_every * per_update,
        grad_accumulation_steps=per_update,
        steps_per_save=1 << 62,  # we checkpoint ourselves (mlx-lm would save every 100)
        max_seq_length=request.max_seq_length,
        adapter_file=str(request.partial_dir / "mlx-lm-adapters.safetensors"),
    )
    if total > start:
        # One process stops within an example; ranks stop together, at the first step.
        stop = training.stop.is_set if training.world.size == 1 else None
        batches.frozen, frozen = cache_frozen(
            model, request, tokens["train"], reporter.caching, stop, valid=valid
        )
        batching |= frozen  # its seconds are recorded there, not in the steps' tokens/s
        reporter.last_report = time.perf_counter()
    loss = make_loss(
        model, training.world.group, chunked=batching["chunked"], frozen=batches.frozen
    )
    if total > start:
        try:
            with checkpointed_layers(model, request.grad_checkpoint):
                train(model, optimizer, tokens["train"], valid, args, loss, batches, reporter)  # type: ignore[arg-type]
        except _Stop:
            raise Cancelled(f"Cancelled at iteration {state.iteration} of {total}.") from None
        finally:
            Path(args.adapter_file).unlink(missing_ok=True)  # mlx-lm's last weights; ours differ
        if valid is not None:  # mlx-lm's last validation ran before the last step
            final = evaluate(
                model=model,
                dataset=valid,
                loss=loss,
                batch_size=args.batch_size,
                num_batches=args.val_batches,
                max_seq_length=args.max_seq_length,
                iterate_batches=batches,  # type: ignore[arg-type]
            )
            reporter.record_val(total, float(final), reporter.windows())
        choice = adapter_to_publish(
            request.keep_last_adapter,
            best=(state.best_iteration, state.best_window_losses),
            last=(total, reporter.last_windows),
            sources=tokens["valid"].sources,
        )
        if choice.published == "last":
            reporter.keep_last(total, float(final) if valid is not None else None)
        state.published_adapter, state.adapter_choice = choice.published, choice.reason
        reporter.checkpoint(total)
    return TrainResult(
        iterations=total,
        best_iteration=state.best_iteration,
        best_val_loss=state.best_val_loss,
        best_weights=reporter.best_weights,
        trained_tokens=state.trained_tokens,
        train_seconds=state.train_seconds,
        peak_memory_gb=round(mx.get_peak_memory() / 1e9, 3),
        val_history=state.val_history,
        train_history=state.train_history,
        batching={**batching, "rows": batches.rows, "padded_tokens": batches.padded_tokens},
        published_adapter=state.published_adapter,
        adapter_choice=state.adapter_choice,
    )


PACK_ENV = "AI_LSP_TRAIN_PACK"  # "0": pad every example to its own row (benchmarks compare)


def _batches(
    model: Any, request: TrainRequest, train: TokenizedSplit, start: int, world: World
) -> tuple[LengthGroupedBatches, dict[str, Any]]:
    """The step batches: packed when the model keeps packed examples apart (else a log line),
    split into micro-batches of at most ``max_batch_tokens``."""
    wanted = os.environ.get(PACK_ENV, "1") != "0"
    pack = wanted and packs(model)
    if wanted and not pack:
        fault = model._ai_lsp_packing_fault
        print(f"packing off for {request.model_name}: {fault}; batches are padded", file=sys.stderr)
    # --grad-checkpoint recomputes each layer alone: keys and values cannot cross chunks.
    chunked = not request.grad_checkpoint and chunks(model)
    fault = getattr(model, "_ai_lsp_forward_fault", "")
    if fault and not request.grad_checkpoint:
        print(f"rows run whole for {request.model_name}: {fault}", file=sys.stderr)
    batches = LengthGroupedBatches(
        seed=request.seed,
        skip=start,
        pack=pack,
        share=chunked,
        max_batch_tokens=request.batch_token_budget,
    )
    per_update = batches.steps_per_update(train, request.batch_size, world.size)
    return batches, {
        "packed": pack,
        "chunked": chunked,
        "unpacked_because": None if pack or not wanted else model._ai_lsp_packing_fault,
        "max_batch_tokens": request.batch_token_budget,
        "micro_batches_per_step": per_update,
    }


def before_eval_seconds(channel: EventChannel) -> float:
    """The 'after' evaluation takes about as long as loading + 'before' did: the ETA's tail."""
    return time.monotonic() - channel.started
