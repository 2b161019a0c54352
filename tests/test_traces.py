"""Reading OTLP JSON lines: every span of good lines, every bad line skipped and counted."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor

from ai_lsp_tune.traces import otlp
from ai_lsp_tune.traces.exporter import OtlpJsonFileSpanExporter, backups_of
from ai_lsp_tune.traces.spans import decode_span
from tests.helpers.recorded_traces import TraceFacts


def _request(*names: str, trace_id: str = "0af7651916cd43dd8448eb211c80319c") -> bytes:
    spans = [
        {
            "traceId": trace_id,
            "spanId": f"{i + 1:016x}",
            "name": name,
            "kind": 1,
            "startTimeUnixNano": "1762971239641474000",
            "endTimeUnixNano": "1762971239641475000",
            "attributes": [
                {"key": "n", "value": {"intValue": str(i)}},
                {"key": "tags", "value": {"arrayValue": {"values": [{"stringValue": "a"}]}}},
            ],
            "status": {},
        }
        for i, name in enumerate(names)
    ]
    request = {"resourceSpans": [{"resource": {}, "scopeSpans": [{"scope": {}, "spans": spans}]}]}
    return json.dumps(request).encode() + b"\n"


def _read(*paths: Path, **kwargs: int) -> tuple[list[otlp.Span], otlp.ReadReport]:
    report = otlp.ReadReport()
    spans = list(otlp.read_spans(otlp.expand_trace_paths(list(paths)), report, **kwargs))
    return spans, report


def test_decodes_spans_as_the_collector_wrote_them(tmp_path: Path) -> None:
    path = tmp_path / "t.jsonl"
    path.write_bytes(_request("one", "two"))
    spans, report = _read(path)
    assert [s.name for s in spans] == ["one", "two"]
    assert spans[1].attributes == {"n": 1, "tags": ["a"]}
    assert spans[0].span_id == "0000000000000001"
    assert spans[0].start_time_unix_nano == 1762971239641474000
    assert spans[0].source == f"{path}:1"
    assert (report.lines, report.requests, report.spans, sum(report.skipped.values())) == (
        1,
        1,
        2,
        0,
    )


BAD_LINES = [
    (b"{not json\n", otlp.MALFORMED),
    (b'{"resourceSpans": [{"scopeSpans": [{"spans": [{"na', otlp.TRUNCATED),
    (b'{"resourceSpans": []}\xff\xfe\n', otlp.NOT_UTF8),
    (b'{"hello": "world"}\n', otlp.NOT_OTLP),
    (b"[1, 2, 3]\n", otlp.NOT_OTLP),
    (b"   \n", otlp.BLANK),
    (b"[" * 100_000 + b"\n", otlp.MALFORMED),
]


@pytest.mark.parametrize(("bad", "reason"), BAD_LINES)
def test_bad_line_is_skipped_with_its_line_number(tmp_path: Path, bad: bytes, reason: str) -> None:
    path = tmp_path / "t.jsonl"
    if reason == otlp.TRUNCATED:  # the collector was killed mid-write: the last line is cut
        path.write_bytes(_request("before") + bad)
    else:
        path.write_bytes(_request("before") + bad + _request("after"))
    spans, report = _read(path)
    assert [s.name for s in spans] == (
        ["before"] if reason == otlp.TRUNCATED else ["before", "after"]
    )
    assert report.skipped == {reason: 1}
    assert str(report.problems[0]).startswith(f"{path}:2: {reason}")


def test_a_50_mb_line_is_skipped_without_holding_it(tmp_path: Path) -> None:
    path = tmp_path / "t.jsonl"
    with path.open("wb") as handle:
        handle.write(_request("before"))
        handle.write(b'{"resourceSpans": "' + b"x" * (50 * 2**20) + b'"}\n')
        handle.write(_request("after"))
    spans, report = _read(path, max_line_bytes=2**20)
    assert [s.name for s in spans] == ["before", "after"]
    assert report.skipped == {otlp.TOO_LONG: 1}
    assert "50.0 MiB" in str(report.problems[0])


def test_empty_and_non_otlp_files_are_reported_not_raised(tmp_path: Path) -> None:
    empty = tmp_path / "empty.jsonl"
    empty.write_bytes(b"")
    csv = tmp_path / "notes.json"
    csv.write_bytes(b"name,value\na,1\n")
    spans, report = _read(empty, csv)
    assert spans == []
    assert report.empty_files == 1
    assert report.skipped == {otlp.MALFORMED: 2}
    assert report.unusable_files == [
        f"{empty}: empty file",
        f"{csv}: no OTLP trace data in 2 line(s)",
    ]


def test_gzip_and_a_cut_off_gzip(tmp_path: Path) -> None:
    good = tmp_path / "a.jsonl.gz"
    good.write_bytes(gzip.compress(_request("zipped") * 3))
    cut = tmp_path / "b.jsonl.gz"
    cut.write_bytes(gzip.compress(_request("lost") * 50)[:-30])
    spans, report = _read(good, cut)
    names = [s.name for s in spans]
    assert names[:3] == ["zipped"] * 3
    assert set(names[3:]) <= {"lost"}
    assert report.skipped[otlp.UNREADABLE] == 1


def test_folder_reads_the_collectors_rotated_backups_oldest_first(tmp_path: Path) -> None:
    trace_file = tmp_path / "otel" / "ai-lsp-otel.jsonl"
    provider = TracerProvider()
    provider.add_span_processor(
        SimpleSpanProcessor(OtlpJsonFileSpanExporter(trace_file, max_bytes=3000, backups=50))
    )
    tracer = provider.get_tracer("t")
    for i in range(30):
        with tracer.start_as_current_span(f"s{i:02d}", attributes={"pad": "p" * 300}):
            pass
    provider.shutdown()
    gz = backups_of(trace_file)[0]
    gz.with_name(gz.name + ".gz").write_bytes(gzip.compress(gz.read_bytes()))  # compressed backup
    gz.unlink()
    (tmp_path / "otel" / "README.txt").write_text("not a trace file")
    spans, report = _read(tmp_path / "otel")
    assert [s.name for s in spans] == [f"s{i:02d}" for i in range(30)]
    assert report.files == len(backups_of(trace_file)) + 2
    assert sum(report.skipped.values()) == 0


def test_missing_input_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(otlp.TraceInputError, match="trace file not found"):
        otlp.expand_trace_paths([tmp_path / "nope.jsonl"])
    (tmp_path / "empty-dir").mkdir()
    with pytest.raises(otlp.TraceInputError, match="no trace files"):
        otlp.expand_trace_paths([tmp_path / "empty-dir"])


def test_trace_file_reads_cleanly(trace_file: TraceFacts) -> None:
    from ai_lsp_tune.traces.agent_runs import is_agent_run

    spans, report = _read(trace_file.path)
    assert (report.lines, report.requests, report.spans) == (
        trace_file.lines,
        trace_file.lines,
        trace_file.spans,
    )
    assert sum(1 for s in spans if is_agent_run(s)) == trace_file.agent_runs
    assert report.bytes_read == trace_file.path.stat().st_size


# --- properties -------------------------------------------------------------------------------

_line = st.one_of(
    st.binary(max_size=200).map(lambda b: b.replace(b"\n", b"")),
    st.lists(st.text(max_size=10), max_size=3).map(lambda names: _request(*names)[:-1]),
    st.sampled_from([b"{", b"[]", b'{"resourceSpans": 1}', b'{"resourceSpans": [{}]}', b""]),
    st.recursive(
        st.none() | st.booleans() | st.integers() | st.text(max_size=5),
        lambda children: (
            st.lists(children, max_size=3)
            | st.dictionaries(
                st.sampled_from(["resourceSpans", "scopeSpans", "spans", "name"]), children
            )
        ),
        max_leaves=10,
    ).map(lambda v: json.dumps(v).encode()),
)


@settings(
    max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(lines=st.lists(_line, max_size=8), final_newline=st.booleans())
def test_any_lines_never_raise_and_counts_add_up(
    tmp_path: Path, lines: list[bytes], final_newline: bool
) -> None:
    data = b"\n".join(lines) + (b"\n" if final_newline and lines else b"")
    if data.startswith(b"\x1f\x8b"):
        data = b" " + data
    path = tmp_path / "prop.jsonl"
    path.write_bytes(data)
    spans, report = _read(path)
    expected_lines = data.count(b"\n") + (0 if data.endswith(b"\n") or not data else 1)
    assert report.lines == expected_lines
    assert report.requests + sum(report.skipped.values()) == report.lines
    assert report.spans == len(spans)
    assert report.bytes_read == len(data)
    assert all(isinstance(s.attributes, dict) for s in spans)


@settings(
    max_examples=100, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(data=st.binary(max_size=2000))
def test_arbitrary_bytes_never_raise(tmp_path: Path, data: bytes) -> None:
    path = tmp_path / "junk.jsonl"
    path.write_bytes(data)
    _, report = _read(path)
    assert report.requests + sum(report.skipped.values()) == report.lines


@settings(
    max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    names=st.lists(st.lists(st.text(min_size=1, max_size=8), min_size=1, max_size=4), max_size=6)
)
def test_every_span_of_valid_lines_comes_back_in_order(
    tmp_path: Path, names: list[list[str]]
) -> None:
    path = tmp_path / "valid.jsonl"
    path.write_bytes(b"".join(_request(*line) for line in names))
    spans, report = _read(path)
    assert [s.name for s in spans] == [n for line in names for n in line]
    assert report.requests == len(names)


def test_trace_file_final_results_come_out_exactly(trace_file: TraceFacts) -> None:
    from ai_lsp_tune.traces.agent_runs import agent_run_from_span

    spans, _ = _read(trace_file.path)
    runs = [(s, run) for s in spans if (run := agent_run_from_span(s))]
    assert len(runs) == trace_file.agent_runs
    assert {run.format for _, run in runs} == trace_file.formats
    finished = [(s, run) for s, run in runs if run.output is not None]
    assert len(finished) == trace_file.finished  # the others were cancelled while the user typed
    for span, run in finished:
        assert run.output is not None
        assert json.loads(run.output) == json.loads(span.attributes["final_result"])
        assert run.system.startswith("You are an AI code analyzer")
    assert sum(run.prompt_scrubbed for _, run in finished) == trace_file.scrubbed
    usable = [run for _, run in finished if not run.prompt_scrubbed]
    assert {run.document_name for run in usable} == trace_file.names
    assert all(run.user.startswith(f"Analyze this {run.language} code") for run in usable)


def test_skimming_a_line_agrees_with_parsing_it(trace_file: TraceFacts) -> None:
    from ai_lsp_tune.traces.agent_runs import agent_run_from_span
    from ai_lsp_tune.traces.skim import skim_line

    skimmed_lines = 0
    for number, line in enumerate(trace_file.path.read_bytes().splitlines(keepends=True), 1):
        skimmed = skim_line(line)
        report = otlp.ReadReport()
        spans = list(otlp._spans_of(json.loads(line), trace_file.path, number, report))
        runs = [run for s in spans if (run := agent_run_from_span(s))]
        if skimmed is None:
            assert any(run.output is not None for run in runs) or not runs
            continue
        skimmed_lines += 1
        assert skimmed.spans == len(spans)
        assert skimmed.runs == len(runs) and all(run.output is None for run in runs)
        uris = [(s.span_id, s.attributes["uri"]) for s in spans if "uri" in s.attributes]
        assert skimmed.uris == uris
    assert skimmed_lines > 20


@settings(max_examples=100, deadline=None)
@given(line=_line)
def test_skimming_any_line_never_raises(line: bytes) -> None:
    from ai_lsp_tune.traces.skim import skim_line

    skimmed = skim_line(b'{"resourceSpans":' + line + b"}")
    assert skimmed is None or skimmed.spans >= 0


@pytest.mark.parametrize("spaced", [False, True], ids=["compact", "spaced"])
def test_decoding_only_the_run_spans_agrees_with_parsing_the_line(
    trace_file: TraceFacts, spaced: bool
) -> None:
    from ai_lsp_tune.traces.agent_runs import agent_run_from_span
    from ai_lsp_tune.traces.skim import skim_and_decode

    lines = trace_file.path.read_bytes().splitlines(keepends=True)
    if spaced:  # as json.dumps writes it (compact lines are searched differently)
        lines = [json.dumps(json.loads(line)).encode() + b"\n" for line in lines]
    decoded_runs = 0
    for number, line in enumerate(lines, 1):
        skimmed = skim_and_decode(line)
        assert skimmed is not None  # every line of the file is skimmed
        source = f"{trace_file.path}:{number}"
        spans = list(otlp._spans_of(json.loads(line), trace_file.path, number, otlp.ReadReport()))
        decoded = [
            decode_span(raw, name, version, source) for raw, name, version in skimmed.decoded
        ]
        assert decoded == [s for s in spans if "final_result" in s.attributes]
        runs = [run for s in spans if (run := agent_run_from_span(s))]
        finished = [run for s in decoded if (run := agent_run_from_span(s))]
        assert skimmed.runs + len(finished) == len(runs)
        assert skimmed.spans == len(spans)
        assert skimmed.uris == [
            (s.span_id, s.attributes["uri"]) for s in spans if "uri" in s.attributes
        ]
        decoded_runs += len(finished)
    assert decoded_runs == trace_file.finished


@pytest.mark.parametrize(
    "span",
    [
        # fields out of OTLP order: the span cannot be found by its opening
        b'{"name":"agent run","traceId":"01","spanId":"02","startTimeUnixNano":"1",'
        b'"attributes":[{"key":"final_result","value":{"stringValue":"{}"}}]}',
        # the attribute sits in a link, not in the span
        b'{"traceId":"01","spanId":"02","name":"x","startTimeUnixNano":"1","links":[{"traceId":'
        b'"03","spanId":"04","attributes":[{"key":"final_result","value":{"stringValue":"{}"}}]}]}',
        # broken JSON inside the span
        b'{"traceId":"01","spanId":"02","name":"agent run","startTimeUnixNano":"1",'
        b'"attributes":[{"key":"final_result","value":{"stringValue":"{}"}},]}',
    ],
)
def test_a_line_the_skimmer_cannot_vouch_for_is_parsed_whole(span: bytes) -> None:
    from ai_lsp_tune.traces.skim import skim_and_decode

    line = b'{"resourceSpans":[{"scopeSpans":[{"scope":{},"spans":[' + span + b"]}]}]}\n"
    assert skim_and_decode(line) is None


@settings(max_examples=100, deadline=None)
@given(line=_line)
def test_skimming_and_decoding_any_line_never_raises(line: bytes) -> None:
    from ai_lsp_tune.traces.skim import skim_and_decode

    for body in (line, line.replace(b'"name"', b'"key":"final_result","name"')):
        skimmed = skim_and_decode(b'{"resourceSpans":' + body + b"}\n")
        assert skimmed is None or skimmed.spans >= len(skimmed.decoded)
