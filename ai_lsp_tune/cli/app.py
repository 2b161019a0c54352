"""The ``ai-lsp`` command line: ``finetune prepare-dataset|train|pipeline``, ``demo``, ``serve``.

Each command parses its options here and delegates to the module that owns the work.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from ai_lsp_tune.cli.prepare import run_prepare_dataset
from ai_lsp_tune.config import DEFAULT_MODEL
from ai_lsp_tune.hyperparams import option_bounds

if TYPE_CHECKING:
    from ai_lsp_tune.training.distributed import Launch
    from ai_lsp_tune.training.request import TrainRequest

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


# --- finetune prepare-dataset (owner: dataset) --------------------------------------------
RedactOption = Annotated[
    bool,
    typer.Option(
        "--redact/--no-redact",
        help="Replace private keys, API tokens and password literals with placeholders, "
        "the same in prompt and answer.",
    ),
]


@finetune_app.command("prepare-dataset")
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
    max_seq_length: Annotated[
        int,
        typer.Option(
            min=1,
            help="Examples longer than this many tokens are cropped to windows of their code "
            "around their issues (mlx-lm would truncate them).",
        ),
    ] = 2048,
    redact: RedactOption = True,
    tokenizer: Annotated[
        str | None,
        typer.Option(
            help="Count tokens exactly with this model's tokenizer (local folder or Hugging "
            "Face id); without it, tokens are estimated from characters.",
            show_default=False,
        ),
    ] = None,
) -> None:
    """Turn OTLP JSON-lines traces into a clean training set.

    Reads the analysis agent's runs (pydantic-ai 0.x, 1.x/2.x, ai-lsp-tune spans).
    Keeps runs that finished with a valid result; drops duplicates, issues the
    user dismissed or that are not in the code; redacts secrets. Writes
    dataset.json and the mlx-lm splits, and prints what each step removed.

    Bad lines are skipped and counted; exit code 2 when nothing is usable.
    """
    run_prepare_dataset(
        traces,
        output_file=output_file,
        output_dir=output_dir,
        max_seq_length=max_seq_length,
        redact=redact,
        tokenizer=tokenizer,
    )


# --- finetune train / pipeline, demo (owner: training) -------------------------------------
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
        help="Gets model/ (fused, loadable by mlx_lm.load), adapters/ and run.json; "
        "replaced as a whole when the run succeeds."
    ),
]
EpochsOption = Annotated[
    int, typer.Option(**option_bounds("num_epochs"), help="Passes over the training split.")
]
BatchSizeOption = Annotated[
    int, typer.Option(**option_bounds("batch_size"), help="Examples per step (try 1 on OOM).")
]
LearningRateOption = Annotated[
    float,
    typer.Option(**option_bounds("learning_rate"), help="Adam learning rate (more than 0)."),
]
MaxSeqLengthOption = Annotated[
    int,
    typer.Option(
        **option_bounds("max_seq_length"),
        help="Longer examples are cropped to windows of their code.",
    ),
]
LoraRankOption = Annotated[
    int,
    typer.Option(
        **option_bounds("lora_rank"),
        help="Rank of the LoRA adapters (at most the model's hidden size).",
    ),
]
NumLayersOption = Annotated[
    int,
    typer.Option(
        **option_bounds("num_layers"),
        help="Adapt the last N transformer layers; -1 for all (more than the model has: all).",
    ),
]
GradCheckpointOption = Annotated[
    bool,
    typer.Option(
        help="Recompute activations in the backward pass: less memory for long examples, "
        "slower steps."
    ),
]
ResumeOption = Annotated[
    bool, typer.Option(help="Continue an interrupted run (Ctrl-C) from its checkpoint.")
]
SeedOption = Annotated[int, typer.Option(min=0, help="Seed for LoRA init and batch order.")]


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

DATASET_DIR = Path("dataset")


def _train_request(dataset: Path, options: dict[str, Any]) -> TrainRequest:
    """A TrainRequest from a command's ``locals()``, or exit 2 with the offending option named.

    The training options share TrainRequest's field names, so train and pipeline declare them
    once each (typer needs the signature) and hand them over here in one piece.
    """
    from pydantic import ValidationError

    from ai_lsp_tune.hyperparams import misfit
    from ai_lsp_tune.training.request import TrainRequest

    fields = {name: value for name, value in options.items() if name in TrainRequest.model_fields}
    try:
        request = TrainRequest.model_validate({**fields, "dataset": dataset})
    except ValidationError as exc:
        first = exc.errors()[0]
        typer.echo(f"error: invalid {_flag(str(first['loc'][0]))}: {first['msg']}", err=True)
        raise typer.Exit(2) from None
    problem = misfit(request.model_name, request.model_dump(), _flag)  # config.json, no load
    if problem:
        _usage(problem)
    return request


def _flag(field: str) -> str:
    return "--" + field.replace("_", "-")


def _run_train(request: TrainRequest, options: dict[str, Any] | None = None) -> None:
    from rich.console import Console

    from ai_lsp_tune.cli.train_view import report_outcome, train_with_progress

    outcome = train_with_progress(request, _launch(options or {}))
    code = report_outcome(outcome, Console())
    if code:
        raise typer.Exit(code)


def _launch(options: dict[str, Any]) -> Launch | None:
    """--hosts/--hostfile/--backend as an mlx.launch spec, or exit 2 naming the bad option."""
    from ai_lsp_tune.training.distributed import BACKENDS, Launch, hostfile_hosts

    hosts, hostfile, backend = options.get("hosts"), options.get("hostfile"), options.get("backend")
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


def _usage(message: str) -> None:
    typer.echo(f"error: {message}", err=True)
    raise typer.Exit(2)


@finetune_app.command("train")
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
    num_epochs: EpochsOption = 3,
    batch_size: BatchSizeOption = 2,
    learning_rate: LearningRateOption = 1e-5,
    max_seq_length: MaxSeqLengthOption = 2048,
    lora_rank: LoraRankOption = 8,
    num_layers: NumLayersOption = 16,
    grad_checkpoint: GradCheckpointOption = False,
    resume: ResumeOption = False,
    seed: SeedOption = 0,
    hosts: HostsOption = None,
    hostfile: HostfileOption = None,
    backend: BackendOption = None,
) -> None:
    """Fine-tune a model with LoRA (MLX) on a prepared dataset.

    Trains on the answers only (prompt masked), in the model's own chat template.

    Validates as it goes, keeps the best adapter, fuses it into the base model.

    Measures the test split before and after (valid JSON, DiagnosticResult, grounding, F1).

    Ctrl-C stops within seconds and keeps a checkpoint: continue with --resume.

    Several machines: --hosts or --hostfile (or run it under mlx.launch yourself).
    """
    _run_train(_train_request(dataset, locals()), locals())


@finetune_app.command("pipeline")
def pipeline(
    traces: Annotated[
        list[Path],
        typer.Argument(help="Trace files (.jsonl, .jsonl.gz) or folders.", show_default=False),
    ],
    model_name: ModelNameOption = DEFAULT_MODEL,
    output_dir: OutputDirOption = Path("./finetuned-model"),
    num_epochs: EpochsOption = 3,
    batch_size: BatchSizeOption = 2,
    learning_rate: LearningRateOption = 1e-5,
    max_seq_length: MaxSeqLengthOption = 2048,
    lora_rank: LoraRankOption = 8,
    num_layers: NumLayersOption = 16,
    grad_checkpoint: GradCheckpointOption = False,
    resume: ResumeOption = False,
    seed: SeedOption = 0,
    dataset_file: Annotated[Path, typer.Option(help="Where to write dataset.json.")] = Path(
        "dataset.json"
    ),
    dataset_dir: Annotated[Path, typer.Option(help="Where to write the splits.")] = DATASET_DIR,
    redact: RedactOption = True,
    hosts: HostsOption = None,
    hostfile: HostfileOption = None,
    backend: BackendOption = None,
) -> None:
    """prepare-dataset + train in one go (same options as both)."""
    request = _train_request(dataset_dir, locals())  # checked before any work is done
    launch_options = dict(locals())
    _launch(launch_options)
    # Exact token counts when the model's tokenizer is at hand; an estimate otherwise.
    tokenizer = model_name if Path(model_name).expanduser().is_dir() else None
    run_prepare_dataset(
        traces,
        output_file=dataset_file,
        output_dir=dataset_dir,
        max_seq_length=max_seq_length,
        redact=redact,
        tokenizer=tokenizer,
    )
    _run_train(request, launch_options)


@app.command("demo")
def demo(
    workdir: Annotated[
        Path | None,
        typer.Option(help="Where the demo writes its dataset and model; default: data dir."),
    ] = None,
) -> None:
    """Offline smoke test: the whole pipeline on sample traces with a tiny local model.

    Builds a tiny random-init model once (seconds, no download), turns the sample traces in
    examples/ into a dataset, fine-tunes, and prints the metrics before and after.
    """
    from ai_lsp_tune.cli.demo import run_demo

    code = run_demo(workdir)
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
    from ai_lsp_tune.server.logs import setup_logging
    from ai_lsp_tune.server.server import run_stdio, run_tcp

    setup_logging(log_file, log_level)
    if tcp:
        run_tcp(host, port)
    else:
        run_stdio()


if __name__ == "__main__":
    app()
