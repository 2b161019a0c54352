"""Large files are read in chunks by worker processes: the outputs must not change at all."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from ai_lsp_tune.dataset import pool, reader
from ai_lsp_tune.dataset import prepare as dataset
from tests.helpers.recorded_traces import TraceFacts


def _prepare(traces: Path, out: Path) -> tuple[dict, dict[str, bytes]]:
    report = dataset.prepare_dataset(
        [traces], output_file=out / "dataset.json", output_dir=out / "splits"
    )
    files = {p.name: p.read_bytes() for p in [out / "dataset.json", *(out / "splits").iterdir()]}
    stats = json.loads(files.pop(reader.STATS_FILE))
    assert stats == report.model_dump(mode="json")
    for key in ("output_file", "output_dir"):
        stats.pop(key)
    return stats, files


def test_chunked_workers_give_what_one_pass_gives(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, trace_file: TraceFacts
) -> None:
    lines = trace_file.path.read_bytes().splitlines(keepends=True)
    # Two copies (the second one all duplicates), with bad lines spread over the chunks and a
    # last line cut off by a killed collector.
    bad = [b"{not json\n", b"\n", b'{"resourceSpans": []}\xff\n', b'{"hello": 1}\n']
    body = []
    for number, line in enumerate(lines * 2):
        body.append(line)
        if number % 5 == 4:
            body.append(bad[number % len(bad)])
    body.append(lines[3][:2000])
    traces = tmp_path / "traces.jsonl"
    traces.write_bytes(b"".join(body))

    monkeypatch.setattr(pool, "CHUNK_BYTES", 2**40)  # one pass, in this process
    expected, expected_files = _prepare(traces, tmp_path / "one")
    monkeypatch.setattr(pool, "CHUNK_BYTES", trace_file.chunk_bytes)
    monkeypatch.setattr(pool, "PARALLEL_MIN_BYTES", 0)
    chunks = pool.plan_chunks([traces])
    assert len(chunks) > 20
    assert pool.worker_count(chunks) > 1 or os.cpu_count() == 1
    got, got_files = _prepare(traces, tmp_path / "chunked")

    assert got == expected
    assert got_files == expected_files
    assert expected["duplicates"] == expected["examples"] > 0
    assert expected["skipped_lines"]["truncated last line"] == 1
    bad_at = [number for number, line in enumerate(body, 1) if line in bad]
    listed = [int(problem.split(":")[1]) for problem in expected["problems"]]
    assert listed == [*bad_at, len(body)]  # numbered in the whole file, the cut line last


def test_outputs_the_same_where_the_kernel_cannot_copy_ranges(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, trace_file: TraceFacts
) -> None:
    # Twice the file: every second example a duplicate, so the kept lines are ranges apart.
    traces = tmp_path / "traces.jsonl"
    traces.write_bytes(trace_file.path.read_bytes() * 2)
    expected, expected_files = _prepare(traces, tmp_path / "kernel")
    monkeypatch.delattr(os, "copy_file_range", raising=False)  # as on macOS
    got, got_files = _prepare(traces, tmp_path / "memory")
    assert expected["duplicates"] == expected["examples"] > 0
    assert (got, got_files) == (expected, expected_files)
