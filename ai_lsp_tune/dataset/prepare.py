"""Trace files -> a clean training set: ``dataset.json`` and mlx-lm ``train/valid/test.jsonl``.

Streaming passes keep memory flat: the first reads the traces and writes every usable agent run
to private temp files (remembering only small things: document URIs by span id, dismissed
feedback, source files); the second cleans each candidate (dismissed issues, secrets, snippet
grounding, length); the third drops duplicates into dataset.json and writes the mlx-lm splits.
Large plain files are cut at line starts and the first two passes run in worker processes, one
chunk each (``dataset_chunks``), merged in input order. Outputs are written to temp names and
renamed, so earlier outputs survive any failure.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import tempfile
from collections import Counter
from collections.abc import Callable
from concurrent.futures import Executor
from pathlib import Path
from typing import Any

from ai_lsp_tune import hyperparams
from ai_lsp_tune.dataset.chunks import Chunk, collect_chunk
from ai_lsp_tune.dataset.clean import Confirmed, clean_chunk
from ai_lsp_tune.dataset.pool import WorkerPool, in_order, plan_chunks, worker_count
from ai_lsp_tune.dataset.reader import SPLIT_FILES, STATS_FILE, split_examples
from ai_lsp_tune.dataset.report import SPLITS, DatasetReport, nothing_usable
from ai_lsp_tune.files import (
    ByteRanges,
    atomic_writer,
    private_binary_writer,
    private_fd,
    publish_dir,
    remove_stale_temps,
    temp_prefix,
)
from ai_lsp_tune.tokens import TokenCounter, estimate_counter
from ai_lsp_tune.traces import otlp

_OUR_FILES = {*SPLIT_FILES.values(), STATS_FILE}


class DatasetNotWritten(Exception):
    """Writing an output or a temp file beside it failed (disk full, no permission)."""

    def __init__(self, folder: Path, error: OSError) -> None:
        super().__init__(
            f"could not write the dataset in {folder}: {error.strerror or error}; "
            "earlier outputs are unchanged"
        )
        self.folder = folder
        self.error = error


class NoUsableTraces(ValueError):
    """Nothing in the traces could become a training example; the message says why."""

    def __init__(self, message: str, report: DatasetReport) -> None:
        super().__init__(message)
        self.report = report


def prepare_dataset(
    traces: list[Path],
    *,
    output_file: Path | None,
    output_dir: Path | None,
    max_seq_length: int = hyperparams.default("max_seq_length"),
    redact: bool = True,
    tokenizer: str | None = None,
    on_progress: Callable[[int, int], None] | None = None,
    include_local_answers: bool = False,
) -> DatasetReport:
    """Read ``traces`` (files, folders, .gz) and write the cleaned dataset; return the counts.

    Analyses our server's own local model answered are left out (training on them teaches the
    model to repeat itself) unless the user applied a fix from them, or ``include_local_answers``.

    Raises otlp.TraceInputError for a missing input, NoUsableTraces when no example came out
    (earlier outputs are then left untouched), ValueError for an output folder we must not
    replace, DatasetNotWritten when writing fails (a full disk; earlier outputs untouched), and
    tokens.TokenizerUnavailable when ``tokenizer`` cannot be loaded.
    """
    if max_seq_length <= 0:
        raise ValueError(f"--max-seq-length must be positive, got {max_seq_length}")
    if output_dir is not None:
        _check_output_dir(output_dir)
    if output_file is not None:
        _check_output_file(output_file)
    files = otlp.expand_trace_paths(traces)
    counter = estimate_counter() if tokenizer is None else TokenCounter.load(tokenizer)
    report = DatasetReport(max_seq_length=max_seq_length, redaction=redact)
    report.token_counter = counter.name
    # Temp files live beside the outputs, so the final renames stay on one file system.
    work_parent = (output_dir or output_file or Path("dataset")).resolve().parent
    try:
        work_parent.mkdir(parents=True, exist_ok=True)
        remove_stale_temps(work_parent, _WORK_PREFIX)
        work = Path(tempfile.mkdtemp(prefix=temp_prefix(_WORK_PREFIX), dir=work_parent))  # 0700
    except OSError as exc:
        raise DatasetNotWritten(work_parent, exc) from exc
    dataset_tmp: Path | None = None
    chunks = plan_chunks(files)
    # A tokenizer stays in this process: loading it in every worker costs more than it saves.
    workers = worker_count(chunks) if tokenizer is None else 1
    pool = WorkerPool(workers) if workers > 1 else None
    try:
        state = _collect(chunks, work, report, on_progress, pool, workers)
        if report.usable == 0:
            raise NoUsableTraces(nothing_usable(report), report)
        if output_file is not None:
            output_file.parent.mkdir(parents=True, exist_ok=True)
            dataset_prefix = f".{output_file.name}."
            remove_stale_temps(output_file.parent, dataset_prefix)
            fd, name = tempfile.mkstemp(prefix=temp_prefix(dataset_prefix), dir=output_file.parent)
            os.close(fd)
            dataset_tmp = Path(name)
        staging = work / "splits" if output_dir is not None else None
        cleaned = dataset_tmp or work / "dataset.json"
        confirmed = None if include_local_answers else state.applied
        _write_outputs(
            state, cleaned, staging, None if pool else counter, report, pool, workers, confirmed
        )
        if report.examples == 0:
            raise NoUsableTraces(nothing_usable(report), report)
        if output_file is not None and dataset_tmp is not None:
            os.replace(dataset_tmp, output_file)
            report.output_file = str(output_file)
        if staging is not None and output_dir is not None:
            report.output_dir = str(output_dir)
            _write_json(staging / STATS_FILE, report.model_dump(mode="json"))
            publish_dir(staging, output_dir)
    except OSError as exc:  # a full disk, a read-only folder: not a bug to show a traceback for
        where = Path(exc.filename).parent if isinstance(exc.filename, str) else work_parent
        raise DatasetNotWritten(work_parent if where.is_relative_to(work) else where, exc) from exc
    finally:
        if pool is not None:
            pool.shutdown(cancel_futures=True)
        shutil.rmtree(work, ignore_errors=True)
        if dataset_tmp is not None:
            dataset_tmp.unlink(missing_ok=True)
    return report


class _Collected:
    """Small things remembered from the first pass (never the examples themselves)."""

    def __init__(self, work: Path) -> None:
        self.work = work  # the private temp folder
        self.uri_by_span: dict[str, str] = {}
        self.dismissed: dict[tuple[str, str], list[tuple[str, str]]] = {}
        self.applied: set[tuple[str, str]] = set()  # analyses a fix was applied from
        self.file_keys: list[tuple[str, str, str]] = []  # (own uri, parent span, name)
        self.candidates: list[tuple[Path, int]] = []  # per chunk: its file, how many


def _collect(
    chunks: list[Chunk],
    work: Path,
    report: DatasetReport,
    on_progress: Callable[[int, int], None] | None,
    pool: Executor | None,
    workers: int,
) -> _Collected:
    state = _Collected(work)
    read = otlp.ReadReport()
    formats: Counter[str] = Counter()
    progress = _progress(on_progress, sum(c.size for c in chunks))
    tasks = [
        (chunk, work / f"candidates-{i}.pickle", None if pool else progress)
        for i, chunk in enumerate(chunks)
    ]
    window = 2 * workers
    file_lines, file_requests = 0, 0
    for (chunk, candidates, _), found in zip(
        tasks, in_order(pool, collect_chunk, tasks, window), strict=True
    ):
        if chunk.start == 0:
            read.files += 1
            file_lines, file_requests = 0, 0
        _merge_read(read, found.read, file_lines)
        file_lines += found.lines
        file_requests += found.read.requests
        if chunk.end is None:
            otlp.note_file(chunk.path, read, file_lines, file_requests)
        if pool is not None and progress is not None:
            progress(chunk.size)
        for name, value in found.counts.items():
            if value:
                setattr(report, name, getattr(report, name) + value)
        formats.update(found.formats)
        state.uri_by_span.update(found.uris)
        for key, dismissal in found.dismissed:
            state.dismissed.setdefault(key, []).append(dismissal)
        state.applied.update(found.applied)
        state.file_keys.extend(found.file_keys)
        state.candidates.append((candidates, found.candidates))
    report.runs_by_format = dict(formats)
    _copy_read_report(read, report)
    return state


def _merge_read(read: otlp.ReadReport, chunk: otlp.ReadReport, lines_before: int) -> None:
    """Add a chunk's reading counts; its problems' line numbers count from the file's start."""
    read.lines += chunk.lines
    read.bytes_read += chunk.bytes_read
    read.requests += chunk.requests
    read.spans += chunk.spans
    read.skimmed += chunk.skimmed
    read.skipped.update(chunk.skipped)
    read.bad_spans += chunk.bad_spans
    for problem in chunk.problems:
        if len(read.problems) < otlp.MAX_LISTED_PROBLEMS:
            problem.line += lines_before
            read.problems.append(problem)


def _write_outputs(
    state: _Collected,
    cleaned_path: Path,
    staging: Path | None,
    counter: TokenCounter | None,
    report: DatasetReport,
    pool: Executor | None,
    workers: int,
    confirmed: Confirmed = None,
) -> None:
    """Pass 2 cleans each chunk's candidates; pass 3 drops duplicates (first one kept) into
    ``cleaned_path`` (dataset.json), puts the examples that fit ``max_seq_length`` aside in chat
    form, then copies those lines into the splits. ``counter`` None: the estimate."""
    uris = state.uri_by_span
    keys = [uri or uris.get(parent, "") or name for uri, parent, name in state.file_keys]
    tasks, first = [], 0
    for candidates, count in state.candidates:
        if count:
            chunk_keys, first = keys[first : first + count], first + count
            cleaned = candidates.with_name(candidates.stem.replace("candidates", "cleaned"))
            options = (report.redaction, cleaned, counter, report.max_seq_length, confirmed)
            tasks.append((candidates, chunk_keys, state.dismissed, *options))
    window = 2 * workers
    fitting: list[str] = []  # per example put aside: its source file
    seen: set[str] = set()
    aside = (
        cleaned_path.parent / "fitting.jsonl"
        if staging is None
        else staging.with_name("fitting.jsonl")
    )
    # The lines are copied as the workers wrote them (UTF-8, LF ends), by the kernel where
    # it can: this process only decides which byte ranges go where.
    with private_fd(cleaned_path) as out, private_fd(aside) as fits_out:
        for done in in_order(pool, clean_chunk, tasks, window):
            for name, value in done.counts.items():
                if value:
                    setattr(report, name, getattr(report, name) + value)
            kept, fits = ByteRanges(), ByteRanges()
            example_at, chat_at = 0, 0
            for digest, tokens, key, example_bytes, chat_bytes, chats in done.rows:
                if digest in seen:
                    report.duplicates += 1
                else:
                    seen.add(digest)
                    report.examples += 1
                    kept.add(example_at, example_bytes)
                    report.longest_tokens = max(report.longest_tokens, tokens)
                    if tokens > report.max_seq_length:
                        report.over_max_seq_length += 1
                        report.cropped += 1 if chats else 0
                        report.crop_windows += chats
                        report.too_long_to_crop += 0 if chats else 1
                    fitting.extend([key] * chats)
                    fits.add(chat_at, chat_bytes)
                example_at += example_bytes
                chat_at += chat_bytes
            kept.copy(done.examples, out)
            fits.copy(done.chats, fits_out)
    split_per_line, report.split_note = split_examples(fitting)
    files_in: dict[str, set[str]] = {s: set() for s in SPLITS}
    for key, split in zip(fitting, split_per_line, strict=True):
        report.splits[split] += 1
        files_in[split].add(key)
    report.split_files = {s: len(files_in[s]) for s in SPLITS}
    if staging is None:
        return
    staging.mkdir(mode=0o700)
    with contextlib.ExitStack() as stack:
        split_out = {
            split: stack.enter_context(private_binary_writer(staging / name))
            for split, name in SPLIT_FILES.items()
        }
        with aside.open("rb") as lines:
            for split, line in zip(split_per_line, lines, strict=True):
                split_out[split].write(line)


def _write_json(path: Path, value: Any) -> None:
    with atomic_writer(path) as handle:
        json.dump(value, handle, indent=2)
        handle.write("\n")


def _check_output_dir(output_dir: Path) -> None:
    if output_dir.exists() and not output_dir.is_dir():
        raise ValueError(f"--output-dir {output_dir} is a file; pass a folder name")
    if output_dir.is_dir():
        foreign = sorted(p.name for p in output_dir.iterdir() if p.name not in _OUR_FILES)
        if foreign:
            raise ValueError(
                f"--output-dir {output_dir} holds other files ({', '.join(foreign[:3])}); "
                "it is replaced as a whole, so pass a new or dataset-only folder"
            )


def _check_output_file(output_file: Path) -> None:
    if output_file.is_dir():
        raise ValueError(f"--output-file {output_file} is a folder; pass a file name")
    if output_file.exists() and not output_file.is_file():
        raise ValueError(
            f"--output-file {output_file} is not a regular file (a device or a pipe); "
            "pass a file name"
        )


_WORK_PREFIX = ".ai-lsp-dataset."  # a run's private temp folder, beside the outputs


def _progress(
    on_progress: Callable[[int, int], None] | None, total: int
) -> Callable[[int], None] | None:
    if on_progress is None:
        return None
    done = 0

    def advance(raw_bytes: int) -> None:
        nonlocal done
        done += raw_bytes
        on_progress(done, total)

    return advance


def _copy_read_report(read: otlp.ReadReport, report: DatasetReport) -> None:
    report.files = read.files
    report.bytes_read = read.bytes_read
    report.lines = read.lines
    report.requests = read.requests
    report.lines_skimmed = read.skimmed
    report.spans = read.spans
    report.skipped_lines = dict(read.skipped)
    report.malformed_spans = read.bad_spans
    report.problems = [str(p) for p in read.problems]
    report.unusable_files = read.unusable_files
