"""``ai-lsp demo --smoke``: the whole pipeline, offline, on sample traces and the tiny local model.

The sample traces are analyses recorded in our span format through the real OpenTelemetry
SDK and our exporter. Their answers follow a fixed, schema-valid pattern (one issue kind per
snippet), so the tiny random-init model can visibly learn the task in a minute or two on a
laptop CPU. It is a smoke test of the machinery, not a useful model (``ai-lsp demo`` without
``--smoke`` shows a real one learn: ``cli.review_demo``).
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from pathlib import Path

from ai_lsp_tune.prompts import SYSTEM_PROMPT, user_prompt
from ai_lsp_tune.schema import DiagnosticResult, Issue

SAMPLE_MODEL_NAME = "scripted-reviewer"  # the model name recorded in the sample traces

# (snippet, severity, message, line that contains the snippet); None: a clean function.
_KINDS: list[tuple[str, str, str, str] | None] = [
    ("eval", "error", "eval runs arbitrary code.", "    {v} = eval({v})"),
    ("time.sleep", "warning", "Blocking sleep in async code.", "    time.sleep(1)"),
    ("password", "error", "Hard-coded secret.", '    password = "{secret}"'),
    ("except:", "warning", "Errors are silently ignored.", "    except:\n        pass"),
    None,
]
_NAMES = ["load", "run", "handle", "fetch", "parse", "save", "build", "check"]
_VARS = ["data", "items", "value", "result", "config", "rows"]
_FILLER = [
    "    {v} = {v} or []",
    "    log.info('start')",
    "    {v} = list({v})",
    "    count = len({v})",
    "    {v}.sort()",
]


@dataclass(frozen=True)
class SampleAnalysis:
    """One scripted analysis: the document, the prompts and the answer."""

    name: str
    code: str
    system: str
    user: str
    assistant: str


def sample_analysis(rng: random.Random, index: int) -> SampleAnalysis:
    """A short Python function with at most one issue of a known kind, and its answer."""
    kind = _KINDS[index % len(_KINDS)]
    fn, v = rng.choice(_NAMES), rng.choice(_VARS)
    secret = rng.choice(["hunter2", "s3cret", "admin123"])
    body = [line.format(v=v) for line in rng.sample(_FILLER, rng.randint(1, 2))]
    header = f"def {fn}({v}):"
    issues: list[Issue] = []
    if kind is not None:
        snippet, severity, message, line = kind
        if snippet == "time.sleep":
            header = "async " + header
        if snippet == "except:":
            line = f"    try:\n        {v} = int({v})\n" + line
        body.insert(rng.randint(0, len(body)), line.format(v=v, secret=secret))
        issues.append(Issue(issue_snippet=snippet, severity=severity, message=message))  # type: ignore[arg-type]
    code = "\n".join([header, *body, f"    return {v}"]) + "\n"
    name = f"{fn}_{index}.py"
    answer = DiagnosticResult(issues=issues).to_json()
    return SampleAnalysis(name, code, SYSTEM_PROMPT, user_prompt("python", code, name), answer)


def sample_analyses(n: int, *, seed: int = 0) -> list[SampleAnalysis]:
    """``n`` scripted analyses, the same for the same seed."""
    rng = random.Random(seed)
    return [sample_analysis(rng, i) for i in range(n)]


def record_sample_traces(path: Path, n: int = 100, *, seed: int = 0) -> Path:
    """Record ``n`` scripted analyses as our spans, via the OTel SDK and our file exporter."""
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor

    from ai_lsp_tune.traces import genai
    from ai_lsp_tune.traces.exporter import OtlpJsonFileSpanExporter

    provider = TracerProvider(resource=Resource.create({"service.name": "ai-lsp-tune-demo"}))
    provider.add_span_processor(BatchSpanProcessor(OtlpJsonFileSpanExporter(path)))
    tracer = provider.get_tracer(genai.INSTRUMENTATION_SCOPE)
    for sample in sample_analyses(n, seed=seed):
        record = genai.AnalysisRecord(
            model=SAMPLE_MODEL_NAME,
            provider="scripted",
            system=sample.system,
            user=sample.user,
            output=sample.assistant,
            valid=True,
            document_uri=f"file:///demo/{sample.name}",
            language="python",
            document_name=sample.name,
        )
        attributes = genai.analysis_attributes(record)
        with tracer.start_as_current_span(genai.ANALYSIS_SPAN_NAME, attributes=attributes):
            pass
    provider.shutdown()
    return path


# Tuned so the tiny model learns the pattern in about a minute on two CPU cores.
DEMO_HYPERPARAMETERS = {
    "num_epochs": 6,
    "batch_size": 4,
    "learning_rate": 5e-4,
    "lora_rank": 8,
    "num_layers": -1,
    "eval_max_tokens": 64,
    "eval_max_examples": 20,
}
SAMPLE_TRACES = Path(__file__).resolve().parents[1] / "examples" / "traces" / "sample-otel.jsonl"
REAL_COMMAND = (
    "ai-lsp finetune pipeline <your ai-lsp-otel.jsonl> "
    "--model-name mlx-community/gemma-2-2b-it-4bit"
)


def run_demo(workdir: Path | None = None) -> int:
    """The smoke run: prepare, train and evaluate offline; return the exit code."""
    from rich.console import Console
    from rich.panel import Panel

    from ai_lsp_tune import paths
    from ai_lsp_tune.cli.prepare_view import run_prepare_dataset
    from ai_lsp_tune.cli.tiny_model import ensure_tiny_model
    from ai_lsp_tune.cli.train_view import report_outcome, train_with_progress
    from ai_lsp_tune.training.protocol import TrainRequest

    console = Console()
    workdir = workdir or paths.data_dir() / "demo"
    console.print(
        Panel(
            "This is a [bold]smoke test[/bold] of the whole pipeline, offline: a tiny "
            "random-init model (built locally, no download) learns a fixed answer pattern "
            "from sample traces. It shows the machinery works and that training moves the "
            "metrics; it is not a useful reviewer (`ai-lsp demo` without --smoke shows a real "
            f"one learn).\n\nFor a real model, on your own traces:\n  [bold]{REAL_COMMAND}[/bold]",
            title="ai-lsp demo --smoke",
        )
    )
    with console.status("Building the tiny model (once)"):
        model = ensure_tiny_model()
    traces = SAMPLE_TRACES
    if not traces.exists():  # an installed package has no examples/: record them afresh
        traces = record_sample_traces(workdir / "sample-otel.jsonl")
    console.print(f"Sample traces: {traces}", highlight=False)
    run_prepare_dataset(
        [traces],
        output_file=workdir / "dataset.json",
        output_dir=workdir / "dataset",
        tokenizer=str(model),
    )
    request = TrainRequest(
        dataset=workdir / "dataset",
        model_name=str(model),
        output_dir=workdir / "finetuned-model",
        **DEMO_HYPERPARAMETERS,  # type: ignore[arg-type]
    )
    outcome = train_with_progress(request)
    code = report_outcome(outcome, console)
    if code == 0:
        console.print(
            "[green]Smoke test passed:[/green] the metrics above moved because of training. "
            "Next, on your own traces:"
        )
        console.print(f"  {REAL_COMMAND}", soft_wrap=True, highlight=False, markup=False)
    return code
