"""Training hyper-parameters, each defined once, in ``Hyperparameters``.

One field per hyper-parameter: name, type, default, bounds, help, and the CLI commands that take
it. Everything else is derived from it: the options of ``ai-lsp finetune train|pipeline``
(``cli/options.py``; the flag is ``flag(name)``: ``--lora-rank``), the editor settings
(``server.settings.FinetuneSettings`` subclasses it; the setting is ``setting(name)``:
``aiLsp.finetune.loraRank``), ``training.protocol.TrainRequest`` (subclasses it) and the
extension's package.json (a test holds them equal). A value one of them accepts the others
accept too. ``misfit`` checks the values against the model's ``config.json`` (read as JSON, no
model load) before any expensive step, naming each field as the user knows it.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, NamedTuple

from pydantic import BaseModel, Field, field_validator
from pydantic.alias_generators import to_camel

TRAIN_AND_PIPELINE = ("train", "pipeline")
# The base model when none is named: the CLI's --model-name, the server's model setting.
DEFAULT_MODEL = "mlx-community/gemma-2-2b-it-4bit"  # the original tool's default


def hyper(
    default: Any,
    help: str,
    *,
    ge: float | None = None,
    gt: float | None = None,
    le: float | None = None,
    commands: tuple[str, ...] = TRAIN_AND_PIPELINE,
    same_run: bool = True,
) -> Any:
    """One hyper-parameter's field: ``commands`` are the ``ai-lsp finetune`` commands that take
    it as an option; ``same_run``: a cancelled run's checkpoint is resumed only when it matches."""
    extra: dict[str, Any] = {"commands": list(commands), "sameRun": same_run}
    return Field(default, description=help, ge=ge, gt=gt, le=le, json_schema_extra=extra)


class Hyperparameters(BaseModel):
    """The training hyper-parameters; defaults are the original ai-lsp tool's.

    To add one: one field here, ``name: type = hyper(default, help, ge=..., le=...)``; then
    VS Code's copy of it, which tests/test_hyperparams.py checks: its ``aiLsp.finetune.<name>``
    entry in editors/vscode/package.json and the name in ``FINETUNE_SETTINGS`` (src/settings.ts).
    """

    num_epochs: int = hyper(3, "Passes over the training split.", ge=1, le=1000)
    batch_size: int = hyper(2, "Examples per step (try 1 when out of memory).", ge=1, le=4096)
    learning_rate: float = hyper(1e-5, "Adam learning rate (more than 0).", gt=0, le=1.0)
    max_seq_length: int = hyper(
        2048,
        "Longest example in tokens: a longer one is cropped to windows of its code around its "
        "issues (mlx-lm would truncate it).",
        ge=16,
        le=1_048_576,
        commands=("prepare-dataset", *TRAIN_AND_PIPELINE),
    )
    lora_rank: int = hyper(
        8, "Rank of the LoRA adapters (at most the model's hidden size).", ge=1, le=4096
    )
    num_layers: int = hyper(
        16,
        "Adapt the last N transformer layers; -1 for all (more than the model has: all).",
        ge=-1,
        le=4096,
    )
    grad_checkpoint: bool = hyper(
        False,
        "Recompute activations in the backward pass: less memory for long examples, slower steps.",
        same_run=False,
    )
    max_batch_tokens: int | None = hyper(
        None,
        "Tokens (padding included) in one forward and backward pass; short examples are packed "
        "several to a row, and a step over this is split, its gradients accumulated (the step "
        "still has the batch size's examples). Default: batch size x max sequence length.",
        ge=16,
        le=1 << 32,
        same_run=False,
    )
    seed: int = hyper(0, "Seed for LoRA init and batch order.", ge=0)
    fuse: bool = hyper(
        True,
        "Write a fused copy of the model (about 1.5 GB for the default model); false: write only "
        "the LoRA adapter (a few MB) and serve the base model with the adapter on top.",
        same_run=False,
    )
    include_local_answers: bool = hyper(
        False,
        "Also learn from analyses the local model answered itself (left out by default: it "
        "would learn to repeat itself); those you applied a fix from are always kept.",
        commands=("prepare-dataset", "pipeline"),
    )

    @field_validator("num_layers")
    @classmethod
    def _not_zero_layers(cls, value: int) -> int:
        if value == 0:
            raise ValueError("must be at least 1, or -1 for all layers")
        return value

    @field_validator("learning_rate")
    @classmethod
    def _finite(cls, value: float) -> float:
        if not math.isfinite(value):
            raise ValueError("must be a finite number")
        return value

    def hyperparameters(self) -> dict[str, Any]:
        """The hyper-parameters alone (a subclass adds other fields), by field name."""
        return {name: getattr(self, name) for name in Hyperparameters.model_fields}


NAMES: tuple[str, ...] = tuple(Hyperparameters.model_fields)

# The editor's "Fine-tune on my traces" defaults where they differ from the CLI's (the original
# tool's, which learn too, but less: on the demo's corpus SmolLM2's held-out issue F1 rose
# 0.16 -> 0.23 with them, in about twice the CPU time). Rank 16 on the last 4 layers is what
# lifted SmolLM2-135M's held-out issue F1 most on the lint teacher's corpus (bench/quality_curve.py
# and `ai-lsp demo --real`; RESULTS.md "quality"); the last layers alone also let training cache
# the frozen ones' output.
EDITOR_DEFAULTS: dict[str, Any] = {
    "learning_rate": 5e-4,
    "num_epochs": 3,
    "batch_size": 4,
    "lora_rank": 16,
    "num_layers": 4,
}


def editor_default(name: str) -> Any:
    """The default of the editor setting for hyper-parameter ``name``."""
    return EDITOR_DEFAULTS.get(name, Hyperparameters.model_fields[name].default)


def flag(name: str) -> str:
    """The CLI option of a field: ``lora_rank`` -> ``--lora-rank``."""
    return "--" + name.replace("_", "-")


def setting(name: str) -> str:
    """A ``FinetuneSettings`` field in the editor: ``lora_rank`` -> ``aiLsp.finetune.loraRank``."""
    return f"aiLsp.finetune.{to_camel(name)}"


class Bound(NamedTuple):
    ge: float | None = None
    gt: float | None = None
    le: float | None = None


def default(name: str) -> Any:
    """A hyper-parameter's default, for code that takes it outside a ``Hyperparameters``."""
    return Hyperparameters.model_fields[name].default


def bounds(name: str) -> Bound:
    """A hyper-parameter's bounds, as its field declares them."""
    found: dict[str, float] = {}
    for item in Hyperparameters.model_fields[name].metadata:  # annotated_types.Ge, Gt, Le
        for key in Bound._fields:
            if isinstance(getattr(item, key, None), int | float):
                found[key] = getattr(item, key)
    return Bound(**found)


def commands(name: str) -> tuple[str, ...]:
    """The ``ai-lsp finetune`` commands that take ``name`` as an option."""
    return tuple(_extra(name)["commands"])


def same_run(names: tuple[str, ...] = NAMES) -> tuple[str, ...]:
    """The hyper-parameters a cancelled run's checkpoint must match to be resumed."""
    return tuple(name for name in names if _extra(name)["sameRun"])


def _extra(name: str) -> dict[str, Any]:
    extra = Hyperparameters.model_fields[name].json_schema_extra
    assert isinstance(extra, dict), f"{name}: declare it with hyper()"
    return extra


def refusal(error: Mapping[str, Any], name: Callable[[str], str]) -> str:
    """A pydantic error (one of ``exc.errors()``) as one line naming the field as ``name`` does."""
    loc = error.get("loc") or ("value",)
    message = str(error.get("msg", "invalid")).removeprefix("Value error, ")
    return f"invalid {name(str(loc[0]))} {error.get('input')}: {message}"


def check_batch_tokens(
    max_batch_tokens: int | None, max_seq_length: int, name: Callable[[str], str]
) -> str | None:
    """Why a token budget cannot hold one example of ``max_seq_length`` tokens; None if it can."""
    if max_batch_tokens is None or max_batch_tokens >= max_seq_length:
        return None
    return (
        f"{name('max_batch_tokens')} {max_batch_tokens} is less than {name('max_seq_length')} "
        f"{max_seq_length}: one example must fit in a batch; raise {name('max_batch_tokens')} "
        f"or lower {name('max_seq_length')}."
    )


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
    budget, longest = values.get("max_batch_tokens"), values.get("max_seq_length")
    if isinstance(longest, int) and (problem := check_batch_tokens(budget, longest, name)):
        return problem
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
