"""The span exporter writes what the OpenTelemetry Collector's file exporter writes."""

from __future__ import annotations

import json
import multiprocessing
import stat
from pathlib import Path

import pytest
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SimpleSpanProcessor, SpanExportResult
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import StatusCode

from ai_lsp_tune.traces.exporter import OtlpJsonFileSpanExporter, backups_of


def _provider(exporter: OtlpJsonFileSpanExporter, *, batch: bool = False) -> TracerProvider:
    provider = TracerProvider(resource=Resource.create({"service.name": "ai-lsp-test"}))
    processor = BatchSpanProcessor(exporter) if batch else SimpleSpanProcessor(exporter)
    provider.add_span_processor(processor)
    return provider


def _lines(paths: list[Path]) -> list[dict]:
    return [json.loads(line) for p in paths for line in p.read_text().splitlines()]


def _spans(requests: list[dict]) -> list[dict]:
    return [
        span
        for request in requests
        for rs in request["resourceSpans"]
        for ss in rs["scopeSpans"]
        for span in ss["spans"]
    ]


def test_lines_are_collector_otlp_json(tmp_path: Path) -> None:
    trace_file = tmp_path / "traces" / "ai-lsp-otel.jsonl"
    provider = _provider(OtlpJsonFileSpanExporter(trace_file))
    tracer = provider.get_tracer("ai_lsp_tune", "0.1.0")
    with (
        tracer.start_as_current_span("parent", attributes={"count": 3, "ok": True}) as parent,
        tracer.start_as_current_span("child") as child,
    ):
        child.set_status(StatusCode.ERROR, "boom")
    provider.shutdown()

    assert stat.S_IMODE(trace_file.stat().st_mode) == 0o600
    requests = _lines([trace_file])
    assert len(requests) == 2  # SimpleSpanProcessor: one request (line) per span
    resource = requests[0]["resourceSpans"][0]["resource"]["attributes"]
    assert {"key": "service.name", "value": {"stringValue": "ai-lsp-test"}} in resource
    assert requests[0]["resourceSpans"][0]["scopeSpans"][0]["scope"]["name"] == "ai_lsp_tune"
    child_span, parent_span = _spans(requests)
    ctx = parent.get_span_context()
    assert parent_span["traceId"] == f"{ctx.trace_id:032x}"
    assert parent_span["spanId"] == f"{ctx.span_id:016x}"
    assert child_span["parentSpanId"] == parent_span["spanId"]
    assert child_span["traceId"] == parent_span["traceId"]
    assert parent_span["kind"] == 1
    assert isinstance(parent_span["startTimeUnixNano"], str)
    assert {"key": "count", "value": {"intValue": "3"}} in parent_span["attributes"]
    assert {"key": "ok", "value": {"boolValue": True}} in parent_span["attributes"]
    assert child_span["status"] == {"message": "boom", "code": 2}
    assert child.get_span_context().trace_id == ctx.trace_id


def test_batch_processor_writes_one_request_per_batch(tmp_path: Path) -> None:
    trace_file = tmp_path / "t.jsonl"
    provider = _provider(OtlpJsonFileSpanExporter(trace_file), batch=True)
    tracer = provider.get_tracer("ai_lsp_tune")
    for i in range(20):
        with tracer.start_as_current_span(f"s{i}"):
            pass
    provider.shutdown()
    requests = _lines([trace_file])
    assert len(requests) == 1
    assert sorted(s["name"] for s in _spans(requests)) == sorted(f"s{i}" for i in range(20))


def test_rotates_by_size_and_keeps_n_backups(tmp_path: Path) -> None:
    trace_file = tmp_path / "ai-lsp-otel.jsonl"
    exporter = OtlpJsonFileSpanExporter(trace_file, max_bytes=4000, backups=2)
    provider = _provider(exporter)
    tracer = provider.get_tracer("ai_lsp_tune")
    for i in range(60):
        with tracer.start_as_current_span(f"span-{i}", attributes={"pad": "x" * 200}):
            pass
    provider.shutdown()

    backups = backups_of(trace_file)
    assert len(backups) == 2
    assert all(p.name.startswith("ai-lsp-otel-") and p.suffix == ".jsonl" for p in backups)
    for path in [trace_file, *backups]:
        assert path.stat().st_size <= 4000
        assert stat.S_IMODE(path.stat().st_mode) == 0o600
    kept = [s["name"] for s in _spans(_lines([*backups, trace_file]))]
    # The newest spans survive, in order, each exactly once.
    assert kept == [f"span-{i}" for i in range(60 - len(kept), 60)]


def _write_spans(path: str, worker: int, count: int) -> None:
    provider = _provider(OtlpJsonFileSpanExporter(Path(path), max_bytes=20_000, backups=1000))
    tracer = provider.get_tracer("ai_lsp_tune")
    for i in range(count):
        with tracer.start_as_current_span(f"w{worker}-{i}", attributes={"pad": "y" * 100}):
            pass
    provider.shutdown()


def test_several_processes_share_one_file_without_losing_or_tearing_lines(
    tmp_path: Path,
) -> None:
    trace_file = tmp_path / "shared.jsonl"
    ctx = multiprocessing.get_context("fork")
    workers = [ctx.Process(target=_write_spans, args=(str(trace_file), w, 150)) for w in range(4)]
    for p in workers:
        p.start()
    for p in workers:
        p.join(timeout=60)
        assert p.exitcode == 0

    files = [*backups_of(trace_file), trace_file]
    assert len(files) > 5  # rotation happened while the others were writing
    names = [s["name"] for s in _spans(_lines(files))]  # every line parses
    assert sorted(names) == sorted(f"w{w}-{i}" for w in range(4) for i in range(150))


def test_unwritable_path_fails_the_export_without_raising(tmp_path: Path) -> None:
    memory = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(memory))
    with provider.get_tracer("t").start_as_current_span("s"):
        pass
    blocker = tmp_path / "not-a-dir"
    blocker.write_text("")
    exporter = OtlpJsonFileSpanExporter(blocker / "t.jsonl")
    assert exporter.export(memory.get_finished_spans()) is SpanExportResult.FAILURE
    exporter.shutdown()


@pytest.mark.parametrize(("max_bytes", "backups"), [(0, 5), (10, -1)])
def test_rejects_nonsense_limits(tmp_path: Path, max_bytes: int, backups: int) -> None:
    with pytest.raises(ValueError, match="must be"):
        OtlpJsonFileSpanExporter(tmp_path / "t.jsonl", max_bytes=max_bytes, backups=backups)
