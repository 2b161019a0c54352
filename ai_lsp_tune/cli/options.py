"""The options the ``ai-lsp finetune`` commands share: the hyper-parameters' (derived from
``Hyperparameters``, one per field) and the hand-written ones (model, output, hosts)."""

from __future__ import annotations

import inspect
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any, TypeVar

import typer

from ai_lsp_tune.hyperparams import NAMES, Hyperparameters, bounds, commands

Command = TypeVar("Command", bound=Callable[..., Any])


def hyperparameter_options(command: str, *, after: str) -> Callable[[Command], Command]:
    """One typer option per hyper-parameter ``command`` takes, placed after option ``after``.

    The decorated function collects them in ``**hyper`` (typer reads the signature this sets).
    """

    def decorate(func: Command) -> Command:
        signature = inspect.signature(func, eval_str=True)
        own = [p for p in signature.parameters.values() if p.kind is not p.VAR_KEYWORD]
        at = [p.name for p in own].index(after) + 1
        derived = [_option(name) for name in NAMES if command in commands(name)]
        func.__signature__ = signature.replace(parameters=[*own[:at], *derived, *own[at:]])  # type: ignore[attr-defined]
        return func

    return decorate


def _option(name: str) -> inspect.Parameter:
    """A hyper-parameter as a typer option: its default, help, and bounds (an open bound such
    as the learning rate's ``> 0`` is left to pydantic, which names the flag too)."""
    field = Hyperparameters.model_fields[name]
    bound = bounds(name)
    option = typer.Option(
        min=_number(bound.ge),
        max=_number(bound.le),
        help=field.description,
        show_default=field.default is not None,
    )
    return inspect.Parameter(
        name,
        inspect.Parameter.POSITIONAL_OR_KEYWORD,
        default=field.default,
        annotation=Annotated[field.annotation, option],
    )


def _number(value: float | None) -> float | int | None:
    """``1.0`` as ``1``, so --help shows ``[x<=1]``."""
    return int(value) if value is not None and float(value).is_integer() else value


ModelNameOption = Annotated[
    str,
    typer.Option(
        help="Base model: a local MLX model folder or a Hugging Face name (downloaded once; "
        "offline, pass a local folder)."
    ),
]
OutputDirOption = Annotated[
    Path,
    typer.Option(
        help="Gets model/ (fused, loadable by mlx_lm.load; not with --no-fuse), adapters/ and "
        "run.json; replaced as a whole when the run succeeds."
    ),
]
EvalMaxTokensOption = Annotated[
    int,
    typer.Option(
        min=8,
        help="Longest answer the test prompts may get before and after (shorter: faster on a "
        "CPU; an answer cut off is scored as invalid).",
    ),
]
EvalMaxExamplesOption = Annotated[
    int, typer.Option(min=0, help="Test prompts answered before and after training (0: skip).")
]
EvalUnconstrainedOption = Annotated[
    bool,
    typer.Option(
        "--eval-unconstrained/--no-eval-unconstrained",
        help="Also answer each test prompt without the grammar, to report the unconstrained "
        "JSON rate (what the model writes on its own). --no-eval-unconstrained answers only as "
        "served, which halves the evaluation (an untrained model's free answers run to "
        "--eval-max-tokens); that rate is then not measured (null in run.json).",
    ),
]
KeepLastAdapterOption = Annotated[
    bool | None,
    typer.Option(
        "--keep-last-adapter/--keep-best-adapter",
        help="Which adapter the run publishes: the last step's (as `mlx_lm lora` does), or "
        "the one of the best validation loss. Default (neither): the best only when its "
        "validation loss is surely lower than the last's (95% bootstrap interval over the "
        "validation files above 0, 5 files at least), else the last; run.json's "
        "adapter_choice says why.",
        show_default=False,
    ),
]
ResumeOption = Annotated[
    bool, typer.Option(help="Continue an interrupted run (Ctrl-C) from its checkpoint.")
]
RedactOption = Annotated[
    bool,
    typer.Option(
        "--redact/--no-redact",
        help="Replace private keys, API tokens and password literals with placeholders, "
        "the same in prompt and answer.",
    ),
]
HostsOption = Annotated[
    str | None,
    typer.Option(
        help="Train data-parallel on these hosts (comma-separated, e.g. 10.0.0.1,10.0.0.2; "
        "repeat a host for several ranks on it) through mlx.launch. Every host needs the same "
        "Python environment (same ai-lsp-tune, mlx and mlx-lm), the model and the dataset at "
        "the same path, and ssh access without a password; rank 0 (the first host) writes "
        "--output-dir.",
        show_default=False,
    ),
]
HostfileOption = Annotated[
    Path | None,
    typer.Option(
        help='Like --hosts, from an mlx.launch hostfile (JSON: {"hosts": [{"ssh": ..., '
        '"ips": [...]}]}).',
        show_default=False,
    ),
]
BackendOption = Annotated[
    str | None,
    typer.Option(
        help="mlx.launch backend with --hosts/--hostfile: ring (TCP; Macs over Thunderbolt or "
        "Ethernet), mpi, or nccl (CUDA GPUs). Default: nccl with CUDA, ring otherwise.",
        show_default=False,
    ),
]
