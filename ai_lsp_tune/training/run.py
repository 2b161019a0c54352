"""One training run inside the worker: load, evaluate, train LoRA, fuse, evaluate, publish."""

from __future__ import annotations

import fcntl
import os
import shutil
import threading
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from ai_lsp_tune import blas
from ai_lsp_tune.files import PRIVATE_DIR_MODE, PRIVATE_FILE_MODE
from ai_lsp_tune.training import distributed, inputs, precision, publish
from ai_lsp_tune.training.channel import Cancelled, EventChannel, WorkerError
from ai_lsp_tune.training.checkpoint import (
    CheckpointState,
    fingerprint,
    load_checkpoint,
)
from ai_lsp_tune.training.data import iterations_for, split_loss
from ai_lsp_tune.training.distributed import World
from ai_lsp_tune.training.evaluate import (
    EvalMetrics,
    compare,
    greedy_answers,
    score_answers,
    served_answers,
    serving_grammar,
    valid_json_rate,
)
from ai_lsp_tune.training.inputs import check_fits, fit_layers
from ai_lsp_tune.training.loop import LoraTraining, train_lora
from ai_lsp_tune.training.modelio import load_model
from ai_lsp_tune.training.protocol import (
    DoneEvent,
    EvaluatingEvent,
    FusingEvent,
    LoadingEvent,
    TrainRequest,
    WarningEvent,
    at,
)
from ai_lsp_tune.training.splits import dataset_sha256


@contextmanager
def _exclusive(output_dir: Path) -> Any:
    lock_path = output_dir.with_name(f".{output_dir.name}.lock")
    lock_path.parent.mkdir(parents=True, exist_ok=True)
    with open(os.open(lock_path, os.O_WRONLY | os.O_CREAT, PRIVATE_FILE_MODE), "w") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError as exc:
            raise WorkerError(
                "busy", f"Another training run is writing {output_dir}; wait for it or cancel it."
            ) from exc
        yield


def run_job(request: TrainRequest, channel: EventChannel, stop: threading.Event) -> DoneEvent:
    """Run the request to a published model; raise WorkerError or Cancelled otherwise."""
    world = distributed.join()
    channel.follow(world.leader)
    try:
        mismatch = distributed.check_versions(publish.versions(), world)
        if mismatch:
            raise WorkerError("distributed", mismatch)
        if not world.leader:  # only rank 0 writes (and locks) the output
            return _run(request, channel, stop, world)
        with _exclusive(request.output_dir), publish.cleaned_on_failure(request):
            return _run(request, channel, stop, world)
    except RuntimeError as exc:
        message = distributed.peer_lost_message(exc, world)
        if message is None:
            raise
        raise WorkerError("distributed", message) from exc


def evaluate_phase(
    stage: str,
    model: Any,
    tokenizer: Any,
    request: TrainRequest,
    data: dict[str, Any],
    split: str,
    channel: EventChannel,
    stop: threading.Event,
    world: World | None = None,
) -> EvalMetrics:
    """Loss and greedy-answer metrics on the evaluation split, with progress events."""
    examples = data["splits"][split][: request.eval_max_examples]
    if world is not None and not world.leader:
        examples = []  # the loss is computed by all ranks together, the answers by rank 0

    def progress(done: int, total: int) -> None:
        channel.emit(
            EvaluatingEvent(
                stage=stage,  # type: ignore[arg-type]
                done=done,
                total=total,
                examples=len(examples),
                fraction=at(stage, 0.2 + 0.8 * done / max(total, 1)),
            )
        )

    grammar, problem = (None, None)
    if request.constrained_decoding and (world is None or world.leader):
        grammar, problem = serving_grammar(model, tokenizer)
    if problem:
        channel.emit(
            WarningEvent(
                message=f"Evaluating without constrained decoding ({problem}); the server "
                "will serve this model unconstrained too."
            )
        )
    answer_free = grammar is None or request.eval_unconstrained
    total = len(examples) * ((grammar is not None) + answer_free)
    progress(0, total)
    started = time.perf_counter()
    loss = split_loss(model, data["tokens"][split], batch_size=request.batch_size)
    free = []
    if answer_free:
        free = greedy_answers(
            model,
            tokenizer,
            examples,
            max_tokens=request.eval_max_tokens,
            on_progress=lambda done, _: progress(done, total),
            should_stop=stop.is_set,
        )
    answers = free
    if grammar is not None and not stop.is_set():
        # The gate scores what users get: the answers decoded as the model host serves them.
        answers = served_answers(
            model,
            tokenizer,
            examples,
            grammar=grammar,
            max_tokens=request.eval_max_tokens,
            on_progress=lambda done, _: progress(len(free) + done, total),
            should_stop=stop.is_set,
        )
    if stop.is_set():
        raise Cancelled(f"Cancelled while evaluating ({stage}).")
    metrics = score_answers(examples, answers, val_loss=loss)
    update = {"unconstrained_valid_json_rate": valid_json_rate(free) if answer_free else None}
    return metrics.model_copy(update=update | {"seconds": round(time.perf_counter() - started, 3)})


def _run(
    request: TrainRequest, channel: EventChannel, stop: threading.Event, world: World
) -> DoneEvent:
    started = time.time()
    partial = request.partial_dir
    channel.emit(LoadingEvent(message=f"Loading {request.model_name}", fraction=at("loading")))
    splits, invalid = inputs.load_dataset(request, channel)
    model, tokenizer, config, model_path = load_model(request.model_name)
    blas.fit_to_model(getattr(getattr(model, "args", None), "hidden_size", None))
    plan, precision_note = precision.for_training(model)
    request, layers_note = fit_layers(model, request)
    for note in (precision_note if not plan else "", layers_note):  # kept 4-bit: say why
        if note:
            channel.emit(WarningEvent(message=note))
    check_fits(model, request)  # hyper-parameters: before any evaluation or training
    data = inputs.tokenized(request, tokenizer, splits, invalid, channel)
    request = inputs.fit_batch_size(request, len(data["tokens"]["train"]), channel)
    dataset_hash = dataset_sha256(request.dataset)
    print_ = fingerprint(request, dataset_hash)
    checkpoint = distributed.shared_checkpoint(partial / "checkpoint", world)
    resumed = _resume_state(request, checkpoint, print_, channel)
    if world.leader:
        if resumed is None and partial.exists():
            shutil.rmtree(partial)
        partial.mkdir(mode=PRIVATE_DIR_MODE, parents=True, exist_ok=True)
        partial.chmod(PRIVATE_DIR_MODE)  # its files are derived from source code
    eval_split = inputs.evaluation_split(data, channel)
    total = iterations_for(len(data["tokens"]["train"]), request.num_epochs, request.batch_size)

    before = resumed[0].before if resumed else None
    if before is None:
        baseline = model
        if request.baseline_model and request.baseline_model != request.model_name:
            baseline, baseline_tokenizer, _, _ = load_model(request.baseline_model)
            precision.for_training(baseline)
        else:
            baseline_tokenizer = tokenizer
        before = evaluate_phase(
            "before", baseline, baseline_tokenizer, request, data, eval_split, channel, stop, world
        )
        del baseline
    trained = train_lora(
        LoraTraining(
            request=request,
            model=model,
            tokens=data["tokens"],
            total=total,
            fingerprint=print_,
            before=before,
            resumed=resumed,
            channel=channel,
            stop=stop,
            world=world,
        )
    )
    if not world.leader:
        return _follow_to_the_end(request, model, plan, data, eval_split, trained, world)
    channel.emit(
        FusingEvent(
            message=f"Fusing the {trained.published_adapter} adapter",
            fraction=at("fusing"),
        )
    )
    publish.write_adapters(partial / "adapters", model, request, trained.best_weights)
    if request.fuse:
        publish.fuse(model)
        precision.requantize(model, plan)  # saved as small as the base
        publish.save_model(partial / "model", model_path, model, tokenizer, config)
        precision.dequantize(model, plan)  # evaluated on the weights saved, on the BLAS
    else:  # ``finetune.fuse`` false: the adapter is the model; evaluated unfused, as served
        model.eval()
    if stop.is_set():
        raise Cancelled("Cancelled while fusing.")
    after = evaluate_phase(
        "after", model, tokenizer, request, data, eval_split, channel, stop, world
    )
    after = compare(after, before)  # the F1 difference the gate judges, paired over files
    run_json = publish.write_run_json(
        partial / "run.json",
        request=request,
        model_path=model_path,
        dataset_hash=dataset_hash,
        data=data,
        trained=trained,
        before=before,
        after=after,
        eval_split=eval_split,
        started=started,
        notes=[note for note in (precision_note, layers_note) if note],
        distributed=world.record(),
    )
    shutil.rmtree(partial / "checkpoint", ignore_errors=True)
    publish.publish(partial, request.output_dir)
    served = publish.served_path(request)
    return DoneEvent(
        fraction=1.0,
        message=f"Fine-tuned model written to {served}",
        output_dir=request.output_dir,
        model_path=served,
        run_json=request.output_dir / run_json.name,
        before=before,
        after=after,
        best_iteration=trained.best_iteration,
        iterations=total,
        published_adapter=trained.published_adapter,
        adapter_choice=trained.adapter_choice,
    )


def _resume_state(
    request: TrainRequest, folder: Path, print_: str, channel: EventChannel
) -> tuple[CheckpointState, dict[str, Any]] | None:
    found = load_checkpoint(folder) if folder.exists() else None
    if not request.resume:
        if found:
            channel.emit(
                WarningEvent(
                    message=f"Discarding the checkpoint of an interrupted run (iteration "
                    f"{found[0].iteration}); pass --resume to continue it instead."
                )
            )
        return None
    if found is None:
        raise WorkerError(
            "bad_request",
            f"Nothing to resume: no checkpoint in {folder}; run again without --resume.",
        )
    if found[0].fingerprint != print_:
        raise WorkerError(
            "bad_request",
            f"The checkpoint in {folder} was made with another model, dataset or "
            "hyper-parameters; pass the same options to --resume, or run without --resume.",
        )
    channel.last_checkpoint = (found[0].iteration, folder)
    return found


def _follow_to_the_end(
    request: TrainRequest,
    model: Any,
    plan: precision.Plan,
    data: dict[str, Any],
    split: str,
    trained: Any,
    world: World,
) -> DoneEvent:
    """A rank other than 0: fuse in memory and take part in the 'after' loss; write nothing."""
    model.load_weights(list(trained.best_weights.items()), strict=False)
    if request.fuse:  # the weights rank 0 saves and evaluates
        publish.fuse(model)
        precision.requantize(model, plan)
        precision.dequantize(model, plan)
    else:
        model.eval()
    split_loss(model, data["tokens"][split], batch_size=request.batch_size)
    return DoneEvent(
        fraction=1.0,
        message=f"Rank {world.rank} of {world.size} done; rank 0 publishes the model.",
        output_dir=request.output_dir,
        model_path=publish.served_path(request),
        run_json=request.output_dir / "run.json",
        best_iteration=trained.best_iteration,
        iterations=trained.iterations,
    )
