"""Loading a model's weights: a folder's weights read whole before anything changes, put into a
loaded model with an adapter's LoRA layers on top (the old ones back on a failure), and the
sentence that says why a model did not load."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ai_lsp_tune.models.errors import ModelError
from ai_lsp_tune.serving.adapters import Adapter
from ai_lsp_tune.serving.adapters import remove as remove_adapter
from ai_lsp_tune.serving.protocol import LoadFailed
from ai_lsp_tune.shorten import NAME_CHARS, shorten


def read_weights(model: Any, folder: Path, plan: Any = None) -> dict[str, Any]:
    """A model folder's weights, read now: a damaged file fails before anything changed."""
    import mlx.core as mx

    weights: dict[str, Any] = {}
    files = sorted(folder.glob("model*.safetensors"))
    if not files:
        raise FileNotFoundError(f"{shorten(str(folder), NAME_CHARS)} has no weights")
    for file in files:
        arrays = mx.load(str(file))
        assert isinstance(arrays, dict)
        weights.update(arrays)
    if hasattr(model, "sanitize"):
        weights = model.sanitize(weights)
    if plan:
        from ai_lsp_tune.training import precision

        weights = precision.dequantized_weights(weights, plan)
    mx.eval(weights)
    return weights


def set_weights(
    model: Any,
    weights: dict[str, Any],
    adapter: Adapter | None,
    *,
    served: Path | None,
    served_adapter: Path | None,
    plan: Any = None,
) -> None:
    """Base weights (none: keep them), then the adapter's layers. On a failure the old
    model is put back: strict loading checks every shape before it replaces any; an adapter
    that does not fit the new base has the served base's weights reloaded."""
    old = Adapter(served_adapter) if served_adapter is not None else None
    remove_adapter(model)
    try:
        if weights:
            model.load_weights(list(weights.items()), strict=True)
        if adapter is not None:
            adapter.apply(model)  # takes its layers off again if it does not fit
    except Exception:
        if weights and served is not None:
            model.load_weights(list(read_weights(model, served, plan).items()), strict=True)
        if old is not None:
            old.apply(model)
        raise


def describe_load_error(model_name: str, exc: BaseException) -> LoadFailed:
    """Say why a model did not load, in a sentence the server can show the user."""
    detail = shorten(str(exc).splitlines()[0].split(". ")[0], NAME_CHARS) if str(exc) else ""
    reason = f"{type(exc).__name__}: {detail}" if detail else type(exc).__name__
    shown = shorten(model_name, NAME_CHARS)
    if isinstance(exc, ModelError):
        if exc.kind == "model_not_found":
            return LoadFailed(model=model_name, kind="model_not_found", message=exc.message)
        return LoadFailed(model=model_name, kind="invalid_model", message=exc.message)
    try:
        exists = Path(model_name).expanduser().exists()
    except (OSError, ValueError):  # a name too long for a path, a NUL byte
        exists = False
    if not exists:
        return LoadFailed(
            model=model_name,
            kind="model_not_found",
            message=f"'{shown}' is not a folder on this machine and could not be fetched "
            f"from the Hugging Face hub ({reason})",
        )
    return LoadFailed(
        model=model_name,
        kind="invalid_model",
        message=f"'{shown}' is not a loadable MLX model ({reason})",
    )
