"""Training hyper-parameters: their bounds (one table) and their check against a model.

The table feeds the editor settings (``config.FinetuneSettings``), the CLI options and
``TrainRequest``, so a value one of them accepts the others accept too. ``misfit`` checks the
values against the model's ``config.json`` (read as JSON, no model load) before any expensive
step; the caller says how a field is named where the user is (``--lora-rank`` or
``aiLsp.finetune.loraRank``).
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, NamedTuple


class Bound(NamedTuple):
    ge: float | None = None
    gt: float | None = None
    le: float | None = None


BOUNDS: dict[str, Bound] = {
    "num_epochs": Bound(ge=1, le=1000),
    "batch_size": Bound(ge=1, le=4096),
    "learning_rate": Bound(gt=0, le=1.0),
    "max_seq_length": Bound(ge=16, le=1_048_576),
    "lora_rank": Bound(ge=1, le=4096),
    "num_layers": Bound(ge=-1, le=4096),  # 0 is refused by check_num_layers
}


def field_bounds(name: str) -> dict[str, Any]:
    """The bounds of ``name`` as pydantic ``Field`` keywords."""
    return {key: value for key, value in BOUNDS[name]._asdict().items() if value is not None}


def bounded(name: str) -> Any:
    """``Annotated[int, bounded("lora_rank")]``: the bounds as a pydantic constraint."""
    from pydantic import Field

    return Field(**field_bounds(name))


def option_bounds(name: str) -> dict[str, Any]:
    """The bounds of ``name`` as typer ``Option`` keywords (an open bound is left to pydantic)."""
    bound = BOUNDS[name]
    out: dict[str, Any] = {}
    if bound.ge is not None:
        out["min"] = int(bound.ge) if float(bound.ge).is_integer() else bound.ge
    if bound.le is not None:
        out["max"] = int(bound.le) if float(bound.le).is_integer() else bound.le
    return out


def check_num_layers(value: int) -> int:
    if value == 0:
        raise ValueError("must be at least 1, or -1 for all layers")
    return value


def check_finite(value: float) -> float:
    if not math.isfinite(value):
        raise ValueError("must be a finite number")
    return value


def model_config(model: str) -> dict[str, Any] | None:
    """The model's config.json from its folder or the local hub cache; None when not at hand."""
    path = Path(model).expanduser()
    candidate: Path | None = path / "config.json" if path.is_dir() else None
    if candidate is None and model.count("/") == 1 and not model.startswith((".", "/", "~")):
        try:
            from huggingface_hub import try_to_load_from_cache

            cached = try_to_load_from_cache(model, "config.json")
        except Exception:  # a malformed name or no cache: nothing to check against
            cached = None
        candidate = Path(cached) if isinstance(cached, str) else None
    if candidate is None:
        return None
    try:
        config = json.loads(candidate.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None  # the load itself reports an unreadable model
    return config if isinstance(config, dict) else None


def _text_value(config: Mapping[str, Any], key: str) -> Any:
    """A key of the language model's config (multimodal models nest it under text_config)."""
    if key in config:
        return config[key]
    text = config.get("text_config")
    return text.get(key) if isinstance(text, Mapping) else None


def misfit(model: str, values: Mapping[str, Any], name: Callable[[str], str]) -> str | None:
    """The first hyper-parameter in ``values`` the model cannot take, as one line; else None."""
    config = model_config(model)
    if config is None:
        return None
    hidden = _text_value(config, "hidden_size")
    rank = values.get("lora_rank")
    if isinstance(hidden, int) and isinstance(rank, int) and rank > hidden:
        return (
            f"{name('lora_rank')} {rank} is more than the hidden size {hidden} of {model}, the "
            f"most a LoRA update of its layers can use; set {name('lora_rank')} to {hidden} "
            "or less."
        )
    return None
