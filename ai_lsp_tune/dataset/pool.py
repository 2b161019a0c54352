"""Large trace files cut into chunks and read by worker processes that end with this one."""

from __future__ import annotations

import contextlib
import multiprocessing
import os
import signal
import sys
import threading
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Executor, Future, ProcessPoolExecutor
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any, TypeVar

from ai_lsp_tune.dataset.chunks import Chunk
from ai_lsp_tune.traces import otlp

CHUNK_BYTES = 16 * 2**20  # a worker's share of a plain file: big enough, memory still small


PARALLEL_MIN_BYTES = 48 * 2**20  # below this, starting worker processes costs more than it saves


def plan_chunks(files: list[Path]) -> list[Chunk]:
    """Whole files, except large plain ones: those are cut at line starts, CHUNK_BYTES apart."""
    chunks = []
    for path in files:
        size = file_size(path)
        if size < 2 * CHUNK_BYTES or otlp.is_gzip(path):
            chunks.append(Chunk(path, size=size))
            continue
        try:
            bounds = otlp.line_boundaries(path, CHUNK_BYTES)
        except OSError:  # reading it whole reports the problem
            chunks.append(Chunk(path, size=size))
            continue
        ends = [*bounds[1:], None]
        for start, end in zip(bounds, ends, strict=True):
            chunks.append(Chunk(path, start, end, (end or size) - start))
    return chunks


def worker_count(chunks: list[Chunk]) -> int:
    if sum(c.size for c in chunks) < PARALLEL_MIN_BYTES or len(chunks) < 2:
        return 1
    if multiprocessing.current_process().daemon:  # daemonic processes may not have children
        return 1
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return min(cpus or 1, len(chunks))


class WorkerPool(ProcessPoolExecutor):
    """Worker processes that end when this process ends, however it ends.

    Started by ``fork`` when that is safe (Linux, no other thread): forking re-imports nothing,
    so a caller's script needs no ``__main__`` guard (the CLI draws its progress bar without a
    thread for this). With a thread running, a fork could copy a held lock, and macOS frameworks
    forbid it: then a fork server, which imports the workers' module once. Either way the
    workers watch a pipe whose only write end this process holds (``exit_with_parent``), not
    who their parent is.
    """

    def __init__(self, workers: int) -> None:
        methods = multiprocessing.get_all_start_methods()
        if sys.platform == "linux" and threading.active_count() == 1:
            method = "fork"
        else:
            method = "forkserver" if "forkserver" in methods else "spawn"
        context = multiprocessing.get_context(method)
        if method == "forkserver":
            context.set_forkserver_preload(
                ["ai_lsp_tune.dataset.chunks", "ai_lsp_tune.dataset.clean"]
            )
        self._parent_alive, self._lifeline = context.Pipe(duplex=False)
        super().__init__(
            max_workers=workers,
            mp_context=context,
            initializer=exit_with_parent,
            initargs=(self._parent_alive, self._lifeline),
        )

    def shutdown(self, wait: bool = True, *, cancel_futures: bool = False) -> None:
        super().shutdown(wait, cancel_futures=cancel_futures)
        self._lifeline.close()  # any worker still there ends now
        self._parent_alive.close()


_T = TypeVar("_T")


def in_order(
    pool: Executor | None, work: Callable[..., _T], tasks: Iterable[tuple[Any, ...]], window: int
) -> Iterator[_T]:
    """``work(*task)`` for each task, in order; at most ``window`` in flight (memory stays flat)."""
    if pool is None:
        for task in tasks:
            yield work(*task)
        return
    pending: deque[Future[_T]] = deque()
    for task in tasks:
        pending.append(pool.submit(work, *task))
        if len(pending) >= window:
            yield pending.popleft().result()
    while pending:
        yield pending.popleft().result()


def file_size(path: Path) -> int:
    try:
        return path.stat().st_size
    except OSError:
        return 0


def exit_with_parent(parent_alive: Connection, lifeline: Connection) -> None:
    """A worker's initializer: end the worker when the process that owns the pool is gone.

    A killed owner never tells its pool, and a worker waiting for work would wait forever. The
    owner holds the write end of a pipe (``lifeline``) and never writes: when it ends, however
    (SIGKILL included), the read end here sees end-of-file. That holds whatever the start method
    made the worker's parent (with forkserver it is the fork server, not the owner).
    """
    lifeline.close()  # a forked worker inherited the owner's write end: only the owner keeps it
    signal.signal(signal.SIGTERM, signal.SIG_DFL)  # not the owner's cleanup handler, if forked

    def watch() -> None:
        with contextlib.suppress(EOFError, OSError):
            parent_alive.recv_bytes()  # nothing is ever sent: returns at the owner's end
        os._exit(1)

    threading.Thread(target=watch, name="exit-with-parent", daemon=True).start()
