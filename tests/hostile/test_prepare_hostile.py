"""prepare-dataset against hostile input and faults: large files, bad spans, full disks, special
files, SIGTERM and SIGKILL. Each case once crashed, hung or left files behind (issue 10)."""

from __future__ import annotations

import asyncio
import errno
import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from typer.testing import CliRunner

from ai_lsp_tune.cli.app import app
from ai_lsp_tune.dataset import pool
from ai_lsp_tune.dataset import prepare as dataset
from ai_lsp_tune.dataset.protocol import PrepareRequest
from ai_lsp_tune.dataset.runner import DatasetPreparation, PreparationFailed
from tests.helpers.big_traces import big_trace_file, record

BIG_FILES = 4  # documents in the repeated small trace: each is an example, the rest duplicates
PREPARE = ["finetune", "prepare-dataset"]


@pytest.fixture(scope="module")
def big_traces(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """50 MiB of valid traces: over the size at which worker processes read the file."""
    path = big_trace_file(tmp_path_factory.mktemp("big") / "traces.jsonl", mib=50)
    assert path.stat().st_size > pool.PARALLEL_MIN_BYTES
    return path


def _cli(*args: str) -> tuple[int, str]:
    result = CliRunner().invoke(app, [*PREPARE, *args])
    return result.exit_code, result.output


def _leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.name.startswith("."))


def _outputs(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in folder.rglob("*") if p.is_file()}


# --- 1. large inputs: the worker processes --------------------------------------------------


def test_cli_prepares_a_large_file_with_its_progress_bar(big_traces: Path, tmp_path: Path) -> None:
    code, output = _cli(
        str(big_traces),
        *("--output-file", str(tmp_path / "out" / "dataset.json")),
        *("--output-dir", str(tmp_path / "out" / "dataset")),
    )
    assert code == 0, output
    stats = json.loads((tmp_path / "out" / "dataset" / "stats.json").read_text())
    assert stats["examples"] == BIG_FILES and stats["duplicates"] > 0
    assert stats["bytes_read"] == big_traces.stat().st_size
    assert _leftovers(tmp_path / "out") == []


def test_library_call_with_another_thread_running(big_traces: Path, tmp_path: Path) -> None:
    """A program with threads of its own gets a fork server's workers: they must work too."""
    stop = threading.Event()
    other = threading.Thread(target=stop.wait, daemon=True)
    other.start()
    try:
        report = dataset.prepare_dataset(
            [big_traces], output_file=tmp_path / "dataset.json", output_dir=None
        )
    finally:
        stop.set()
    assert report.examples == BIG_FILES


def test_editor_fine_tune_prepares_a_large_file(big_traces: Path, tmp_path: Path) -> None:
    """The server's path: `python -m ai_lsp_tune.dataset.worker` in a child process."""
    request = PrepareRequest(
        traces=[big_traces], output_dir=tmp_path / "data" / "dataset", max_seq_length=2048
    )
    progress: list[float] = []
    done = asyncio.run(DatasetPreparation(request, progress.append).run())
    assert done.examples == BIG_FILES
    assert progress[-1] == 1.0
    assert (tmp_path / "data" / "dataset" / "train.jsonl").stat().st_size > 0


_OWNER = """
import os, sys, threading, time
from ai_lsp_tune.dataset import pool
if sys.argv[1] == "thread":  # as with the CLI's progress bar: a fork server then
    threading.Thread(target=time.sleep, args=(3600,), daemon=True).start()
workers = pool.WorkerPool(2)
print(sorted({workers.submit(os.getpid).result() for _ in range(8)}), flush=True)
time.sleep(3600)
"""


def _descendants(root: int) -> set[int]:
    parents = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if fields[0] != "Z":  # a zombie has ended; only its parent has not looked yet
            parents[int(stat.parent.name)] = int(fields[1])
    found, grew = {root}, True
    while grew:
        more = {pid for pid, parent in parents.items() if parent in found} - found
        found |= more
        grew = bool(more)
    return found - {root}


@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="needs /proc")
@pytest.mark.parametrize("threads", ["none", "thread"])
def test_workers_end_when_their_owner_is_killed(threads: str) -> None:
    with subprocess.Popen(
        [sys.executable, "-c", _OWNER, threads], stdout=subprocess.PIPE, text=True
    ) as owner:
        assert owner.stdout is not None
        line = owner.stdout.readline()
        assert line.startswith("["), "the pool's workers did not start"
        started = _descendants(owner.pid)
        assert set(json.loads(line)) <= started
        owner.kill()
        owner.wait()
    for _ in range(300):  # the workers notice within moments; wait up to 30 s on a busy machine
        if not started & _alive():
            break
        time.sleep(0.1)
    assert not started & _alive()


def _alive() -> set[int]:
    alive = set()
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            if stat.read_text().rsplit(")", 1)[1].split()[0] != "Z":
                alive.add(int(stat.parent.name))
        except OSError:
            continue
    return alive


# --- 5. one bad span --------------------------------------------------------------------------


@pytest.mark.parametrize(
    "bad_time", ['"99999999999999999999999"', "1e999", "-1e308", '"-1"', '"soon"', "true"]
)
def test_a_span_with_an_impossible_time_is_counted_and_the_rest_kept(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, bad_time: str
) -> None:
    traces = tmp_path / "traces.jsonl"
    record(traces, files=3)
    lines = traces.read_bytes().splitlines(keepends=True)
    assert len(lines) == 3
    lines[1] = re.sub(
        rb'"startTimeUnixNano":"\d+"', b'"startTimeUnixNano":' + bad_time.encode(), lines[1]
    )
    traces.write_bytes(b"".join(lines))
    monkeypatch.chdir(tmp_path)

    code, output = _cli("traces.jsonl")

    assert code == 0, output
    stats = json.loads(Path("dataset/stats.json").read_text())
    assert (stats["agent_runs"], stats["examples"], stats["malformed_spans"]) == (2, 2, 1)
    assert stats["problems"] == [
        f"traces.jsonl:2: malformed span (startTimeUnixNano {json.loads(bad_time)!s:.40} "
        "is not a time in nanoseconds)"
    ]
    assert "malformed spans skipped" in output


@pytest.mark.parametrize(
    ("attribute", "bad_value", "error"),
    [
        ("ai_lsp.attempts", b'{"doubleValue":1e999}', "OverflowError"),
        ("gen_ai.input.messages", b'{"stringValue":"' + b"[" * 100_000 + b'"}', "RecursionError"),
    ],
)
def test_a_span_with_an_impossible_attribute_is_counted_and_the_rest_kept(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, attribute: str, bad_value: bytes, error: str
) -> None:
    traces = tmp_path / "traces.jsonl"
    record(traces, files=3)
    lines = traces.read_bytes().splitlines(keepends=True)
    key = b'"key":"%s","value":' % attribute.encode()
    lines[1] = re.sub(
        re.escape(key) + rb'\{"(?:intValue|stringValue)":"(?:[^"\\]|\\.)*"\}',
        lambda _: key + bad_value,
        lines[1],
    )
    assert bad_value in lines[1]
    traces.write_bytes(b"".join(lines))
    monkeypatch.chdir(tmp_path)

    code, output = _cli("traces.jsonl")

    assert code == 0, output
    stats = json.loads(Path("dataset/stats.json").read_text())
    assert (stats["examples"], stats["malformed_spans"]) == (2, 1)
    assert stats["problems"] == [
        f"traces.jsonl:2: malformed span (invoke_agent ai-lsp-analyzer: {error})"
    ]


# --- 6. outputs that cannot be written -----------------------------------------------------


def test_output_file_naming_a_folder_is_one_clear_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    record(tmp_path / "traces.jsonl")
    (tmp_path / "out").mkdir()
    monkeypatch.chdir(tmp_path)
    result = CliRunner().invoke(app, [*PREPARE, "traces.jsonl", "--output-file", "out"])
    assert result.exit_code == 2
    assert result.output.strip().splitlines() == [
        "error: --output-file out is a folder; pass a file name"
    ]
    assert isinstance(result.exception, SystemExit)  # not an IsADirectoryError
    assert list((tmp_path / "out").iterdir()) == []


def _disk_full(*args: object, **kwargs: object) -> None:
    raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))


@pytest.mark.parametrize(
    "write", ["ai_lsp_tune.files.copy_range", "ai_lsp_tune.dataset.prepare._write_json"]
)
def test_a_full_disk_is_one_clear_error_and_keeps_the_earlier_outputs(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, write: str
) -> None:
    record(tmp_path / "traces.jsonl", files=3)
    monkeypatch.chdir(tmp_path)
    args = ["traces.jsonl", "--output-file", "out/dataset.json", "--output-dir", "out/dataset"]
    assert _cli(*args)[0] == 0
    before = _outputs(tmp_path / "out")

    monkeypatch.setattr(write, _disk_full)
    result = CliRunner().invoke(app, [*PREPARE, *args])

    assert result.exit_code == 1
    assert isinstance(result.exception, SystemExit)  # not the OSError
    assert result.output.strip().splitlines() == [
        f"error: could not write the dataset in {tmp_path / 'out'}: No space left on device; "
        "earlier outputs are unchanged; free some space there or pass --output-file and "
        "--output-dir elsewhere"
    ]
    assert _outputs(tmp_path / "out") == before
    assert _leftovers(tmp_path / "out") == []


# --- 9. special files, SIGTERM and SIGKILL ---------------------------------------------------


@pytest.mark.parametrize("special", ["fifo", "/dev/zero", "/dev/urandom"])
def test_special_files_are_refused_not_read_for_ever(tmp_path: Path, special: str) -> None:
    if special == "fifo":
        os.mkfifo(tmp_path / "fifo")
    elif not Path(special).exists():
        pytest.skip(f"no {special} here")
    command = [sys.executable, "-m", "ai_lsp_tune.cli", *PREPARE, special]
    # The timeout only stops a hang (the failure this test is about), it measures nothing.
    done = subprocess.run(command, cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert done.returncode == 2
    assert "is not a regular file (a pipe, a device or a socket)" in done.stderr
    assert "Traceback" not in done.stderr
    assert not (tmp_path / "dataset").exists()


_KILLED_WHILE_WRITING = """
import os, signal, sys
from ai_lsp_tune.cli.app import app
from ai_lsp_tune.dataset import prepare as dataset

write_outputs = dataset._write_outputs
signum = getattr(signal, sys.argv[1])

def signalled(*args, **kwargs):
    # Both temp kinds exist now: the run's folder and dataset.json's temp file.
    os.kill(os.getpid(), signum)
    return write_outputs(*args, **kwargs)

dataset._write_outputs = signalled
sys.argv = ["ai-lsp", "finetune", "prepare-dataset", *sys.argv[2:]]
app()
"""


def _run_killed(signal_name: str, traces: Path, out: Path) -> subprocess.CompletedProcess[str]:
    command = [
        *(sys.executable, "-c", _KILLED_WHILE_WRITING, signal_name, str(traces)),
        *("--output-file", str(out / "dataset.json"), "--output-dir", str(out / "dataset")),
    ]
    return subprocess.run(command, capture_output=True, text=True, timeout=300)


@pytest.mark.parametrize("size", ["small", "large"])
def test_sigterm_removes_the_temp_files_and_keeps_the_earlier_outputs(
    tmp_path: Path, big_traces: Path, size: str
) -> None:
    traces = tmp_path / "traces.jsonl"
    record(traces, files=3)
    out = tmp_path / "out"
    assert (
        _cli(str(traces), "--output-file", f"{out}/dataset.json", "--output-dir", f"{out}/dataset")[
            0
        ]
        == 0
    )
    before = _outputs(out)

    done = _run_killed("SIGTERM", traces if size == "small" else big_traces, out)

    assert done.returncode == 128 + signal.SIGTERM, done.stderr
    assert "Traceback" not in done.stderr
    assert _leftovers(out) == []
    assert _outputs(out) == before


def test_a_killed_runs_temp_files_are_removed_by_the_next_run(tmp_path: Path) -> None:
    traces = tmp_path / "traces.jsonl"
    record(traces, files=3)
    out = tmp_path / "out"
    out.mkdir()
    # Not ours, or ours but of a run still going (this process): kept.
    (out / ".dataset.json.swp").write_text("an editor's")
    running = f".ai-lsp-dataset.{os.getpid()}-abcd1234"
    (out / running).mkdir()

    killed = _run_killed("SIGKILL", traces, out)
    assert killed.returncode == -signal.SIGKILL
    left = set(_leftovers(out)) - {".dataset.json.swp", running}
    assert len(left) == 2  # the killed run's folder and dataset.json's temp file

    code, output = _cli(
        str(traces), "--output-file", f"{out}/dataset.json", "--output-dir", f"{out}/dataset"
    )

    assert code == 0, output
    assert _leftovers(out) == sorted([".dataset.json.swp", running])


def test_a_cancelled_editor_preparation_removes_its_temp_files(
    big_traces: Path, tmp_path: Path
) -> None:
    data = tmp_path / "data"
    request = PrepareRequest(traces=[big_traces], output_dir=data / "dataset", max_seq_length=2048)

    async def cancel_once_started() -> None:
        preparation: DatasetPreparation

        def on_progress(fraction: float) -> None:
            preparation.cancel()

        preparation = DatasetPreparation(request, on_progress)
        with pytest.raises(PreparationFailed, match="cancelled"):
            await preparation.run()

    asyncio.run(cancel_once_started())
    assert list(data.iterdir()) == []


# --- 11. an answer recovered from the output tool call ------------------------------------


def test_a_recovered_answer_is_written_like_a_recorded_one(tmp_path: Path) -> None:
    from tests.helpers.pydantic_ai_runs import record_run

    # The model's own JSON: keys in another order, suggested_fixes left out.
    raw = (
        '{"issues":[{"message":"Fails on an empty list.","severity":"warning",'
        '"issue_snippet":"len(xs)"}]}'
    )
    record_run(tmp_path / "scrubbed.jsonl", raw, scrub_final_result=True)
    record_run(tmp_path / "recorded.jsonl", raw, scrub_final_result=False)

    rows = {}
    for name in ("scrubbed", "recorded"):
        report = dataset.prepare_dataset(
            [tmp_path / f"{name}.jsonl"], output_file=tmp_path / f"{name}.json", output_dir=None
        )
        assert report.examples == 1
        rows[name] = json.loads((tmp_path / f"{name}.json").read_text())["assistant"]
    assert rows["scrubbed"] == rows["recorded"]
    issue = json.loads(rows["scrubbed"])["issues"][0]
    assert list(issue) == ["issue_snippet", "severity", "message", "suggested_fixes"]
