"""The run's outputs: adapters, the fused model, run.json, and publishing them atomically."""

from __future__ import annotations

import contextlib
import errno
import importlib
import json
import platform
import shutil
import time
from collections.abc import Iterator
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ai_lsp_tune import blas
from ai_lsp_tune.files import atomic_write_text, make_private, publish_dir
from ai_lsp_tune.training.channel import Cancelled, WorkerError
from ai_lsp_tune.training.evaluate import EvalMetrics
from ai_lsp_tune.training.protocol import TrainRequest

if TYPE_CHECKING:
    import mlx.core as mx
    import mlx.nn as nn

    from ai_lsp_tune.training.loop import TrainResult

RUN_JSON_VERSION = 1
HYPERPARAMETERS = {"num_epochs", "batch_size", "learning_rate", "max_seq_length", "lora_rank",
                   "lora_scale", "num_layers", "max_batch_tokens", "seed", "fuse"}  # fmt: skip


def served_path(request: TrainRequest) -> Path:
    """What a run publishes to serve: the fused model, or (``fuse`` false) the adapter folder."""
    return request.output_dir / ("model" if request.fuse else "adapters")


def write_adapters(
    folder: Path, model: nn.Module, request: TrainRequest, best_weights: dict[str, mx.array]
) -> None:
    """Load the published adapter (best or last) into the model and save it as mlx-lm's adapter
    folder."""
    import mlx.core as mx

    model.load_weights(list(best_weights.items()), strict=False)
    folder.mkdir(parents=True, exist_ok=True)
    mx.save_safetensors(str(folder / "adapters.safetensors"), best_weights)
    base = Path(request.model_name).expanduser()
    config = {
        "fine_tune_type": "lora",
        # The base it is served on (serving/adapters.py): a folder or GGUF by its absolute path.
        "model": str(base.resolve()) if base.exists() else request.model_name,
        "num_layers": request.num_layers,
        "lora_parameters": {"rank": request.lora_rank, "scale": request.lora_scale, "dropout": 0.0},
    }
    (folder / "adapter_config.json").write_text(json.dumps(config, indent=2))


def fuse(model: nn.Module) -> None:
    """Merge the LoRA layers into the base weights (as ``mlx_lm fuse`` does)."""
    from mlx.utils import tree_unflatten

    fused = [(n, m.fuse(dequantize=False)) for n, m in model.named_modules() if hasattr(m, "fuse")]
    if fused:
        model.update_modules(tree_unflatten(fused))
    model.eval()


def save_model(
    folder: Path, base_path: Path, model: nn.Module, tokenizer: Any, config: dict[str, Any]
) -> None:
    """Save a model that ``mlx_lm.load`` reads like the base."""
    from mlx_lm.utils import save

    save(folder, base_path, model, tokenizer, config, donate_model=False)


def write_run_json(
    path: Path,
    *,
    request: TrainRequest,
    model_path: Path,
    dataset_hash: str,
    data: dict[str, Any],
    trained: TrainResult,
    before: EvalMetrics,
    after: EvalMetrics,
    eval_split: str,
    started: float,
    notes: list[str] | None = None,
    distributed: dict[str, Any] | None = None,
) -> Path:
    """The manifest: what was trained on what, how, and how well (before and after)."""
    tokens = data["tokens"]
    manifest = {
        "version": RUN_JSON_VERSION,
        "base_model": request.model_name,
        "base_model_path": str(model_path),
        "baseline_model": request.baseline_model or request.model_name,
        "dataset": str(request.dataset),
        "dataset_sha256": dataset_hash,
        "examples": {name: len(split) for name, split in tokens.items()},
        "skipped_too_long": {name: split.too_long for name, split in tokens.items()},
        "skipped_invalid_answer": {name: data["invalid_answers"].get(name, 0) for name in tokens},
        "cropped_too_long": data.get("cropped", {}),
        "hyperparameters": request.model_dump(mode="json", include=HYPERPARAMETERS),
        "notes": notes or [],  # settings adjusted to the model (e.g. num_layers beyond its layers)
        "iterations": trained.iterations,
        "best_iteration": trained.best_iteration,
        "best_val_loss": trained.best_val_loss,
        # the adapter published, "best" (validation loss) or "last", and why (adapter_choice.py)
        "published_adapter": trained.published_adapter,
        "adapter_choice": trained.adapter_choice,
        "val_loss_history": trained.val_history,
        "train_loss_history": trained.train_history,
        "trained_tokens": trained.trained_tokens,
        "train_seconds": round(trained.train_seconds, 3),
        "tokens_per_sec": round(trained.trained_tokens / trained.train_seconds, 1)
        if trained.train_seconds
        else None,
        "peak_memory_gb": trained.peak_memory_gb,
        "batching": trained.batching,  # packed or not, micro-batches per step, rows, padding
        "evaluated_on": eval_split,
        "metrics": {"before": before.model_dump(), "after": after.model_dump()},
        "started_at": time.strftime("%Y-%m-%dT%H:%M:%S%z", time.localtime(started)),
        "seconds": round(time.time() - started, 3),
        "versions": versions(),
        "distributed": distributed or {"world_size": 1, "backend": "none", "hosts": []},
        "platform": f"{platform.system()}-{platform.machine()}",
        "blas": blas.status().as_dict(),  # what the CPU's matmuls ran on (ai_lsp_tune.blas)
    }
    atomic_write_text(path, json.dumps(manifest, indent=2) + "\n")
    return path


def versions() -> dict[str, str]:
    """What every rank of a distributed run must share, and what run.json records."""
    return {
        "mlx": _version("mlx", "mlx.core"),
        "mlx-lm": _version("mlx-lm", "mlx_lm"),
        "ai-lsp-tune": _version("ai-lsp-tune", "ai_lsp_tune"),
        "python": platform.python_version(),
    }


def _version(distribution: str, module: str) -> str:
    """An installed package's version; its module's ``__version__`` when run from a source tree
    (no installed metadata), so the manifest never fails a finished run."""
    try:
        return version(distribution)
    except PackageNotFoundError:
        return str(getattr(importlib.import_module(module), "__version__", "unknown"))


def publish(partial: Path, output_dir: Path) -> None:
    """Replace ``output_dir`` with the finished run in one rename, private like its sources."""
    shutil.rmtree(partial / "checkpoint", ignore_errors=True)
    make_private(partial)  # mlx-lm writes model/ and adapters/ with the default umask
    publish_dir(partial, output_dir)


NEARLY_FULL_BYTES = 256 * 2**20


def disk_full_message(exc: BaseException, folder: Path) -> str | None:
    """The line for a write that failed for want of space in ``folder``; None for another error.

    ENOSPC, or MLX's "[write] Unable to write N bytes to file" (no reason given) on a disk
    that is nearly full while the partial run still holds its space.
    """
    text = str(exc).lower()
    full = (isinstance(exc, OSError) and exc.errno in (errno.ENOSPC, errno.EDQUOT)) or (
        "no space left" in text
    )
    if not full and "unable to write" in text:
        with contextlib.suppress(OSError):
            full = shutil.disk_usage(folder).free < NEARLY_FULL_BYTES
    if not full:
        return None
    return (
        f"No space left on the disk holding {folder}: free some space there and run again "
        "(the partial run was removed)."
    )


@contextlib.contextmanager
def cleaned_on_failure(request: TrainRequest) -> Iterator[None]:
    """A run that fails leaves no partial outputs (a full disk: no checkpoint either); a
    cancelled one keeps them to resume."""
    try:
        yield
    except Cancelled:
        raise
    except BaseException as exc:
        full = disk_full_message(exc, request.output_dir.parent)
        remove_partial(request.partial_dir, keep_checkpoint=full is None)
        if full is not None:
            raise WorkerError("disk_full", full) from exc
        raise


def remove_partial(partial: Path, *, keep_checkpoint: bool) -> None:
    """What a failed run wrote; its checkpoint stays for ``--resume`` unless space ran out."""
    if not partial.is_dir():
        return
    for entry in partial.iterdir():
        if keep_checkpoint and entry.name == "checkpoint":
            continue
        if entry.is_dir() and not entry.is_symlink():
            shutil.rmtree(entry, ignore_errors=True)
        else:
            entry.unlink(missing_ok=True)
    with contextlib.suppress(OSError):
        partial.rmdir()  # nothing kept
