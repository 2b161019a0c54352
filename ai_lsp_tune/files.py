"""Files that matter are written to a temp path in the same folder, then renamed."""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import signal
import tempfile
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import IO

PRIVATE_FILE_MODE = 0o600  # traces and datasets hold source code
PRIVATE_DIR_MODE = 0o700


@contextlib.contextmanager
def atomic_writer(path: Path, *, mode: int = PRIVATE_FILE_MODE) -> Iterator[IO[str]]:
    """Open a temp file beside ``path`` for text; on success it replaces ``path`` atomically."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    tmp = Path(tmp_name)
    try:
        os.fchmod(fd, mode)
        with os.fdopen(fd, "w", encoding="utf-8", newline="\n") as handle:
            yield handle
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def atomic_write_text(path: Path, text: str, *, mode: int = PRIVATE_FILE_MODE) -> None:
    """Write ``text`` to ``path`` through a temp file and a rename."""
    with atomic_writer(path, mode=mode) as handle:
        handle.write(text)


def publish_dir(staging: Path, target: Path) -> None:
    """Move a fully built ``staging`` folder to ``target``, replacing any older one.

    The old folder is first renamed aside, so ``target`` is never half written; at worst,
    after a crash between the two renames, it is briefly absent and the old one is kept.
    """
    target.parent.mkdir(parents=True, exist_ok=True)
    old: Path | None = None
    if target.exists():
        old = target.with_name(f".{target.name}.old-{os.getpid()}")
        shutil.rmtree(old, ignore_errors=True)
        os.replace(target, old)
    os.replace(staging, target)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


class ByteRanges:
    """Byte ranges of one file, joined where they touch, to be copied to another."""

    def __init__(self) -> None:
        self.ranges: list[list[int]] = []  # [start, length]

    def add(self, start: int, length: int) -> None:
        if self.ranges and sum(self.ranges[-1]) == start:
            self.ranges[-1][1] += length
        else:
            self.ranges.append([start, length])

    def copy(self, source: Path, out: int) -> None:
        """Append the ranges of ``source`` to the file open for writing as ``out``."""
        if not self.ranges:
            return
        with source.open("rb") as handle:
            for start, length in self.ranges:
                copy_range(handle.fileno(), out, start, length)


def copy_range(source: int, out: int, offset: int, length: int) -> None:
    """Append ``length`` bytes of ``source`` from ``offset`` to ``out`` (both open file
    descriptors): by the kernel where it can (``os.copy_file_range``), else through memory."""
    kernel = hasattr(os, "copy_file_range")
    while length > 0:
        copied = 0
        if kernel:
            try:
                copied = os.copy_file_range(source, out, length, offset)
            except OSError:  # not supported between these files: copy through memory
                kernel = False
                continue
        else:
            data = os.pread(source, min(length, 1 << 20), offset)
            copied = os.write(out, data) if data else 0
        if copied <= 0:
            raise OSError(f"could not copy {length} bytes from offset {offset}: file cut short")
        offset += copied
        length -= copied


def temp_prefix(prefix: str) -> str:
    """``prefix`` and this process's id: a later run can tell a killed run's leftovers."""
    return f"{prefix}{os.getpid()}-"


def remove_stale_temps(folder: Path, prefix: str) -> None:
    """Remove our temp files and folders in ``folder`` whose process is gone.

    A run killed outright (SIGKILL, a power cut) cannot clean up after itself; its leftovers
    hold source code. Only names we make (``prefix<pid>-<mkstemp's 8 characters>``) are
    touched, never those of a run still going, here or in another process.
    """
    ours = re.compile(re.escape(prefix) + r"(\d+)-[a-z0-9_]{8}")
    with contextlib.suppress(OSError):
        for entry in folder.iterdir():
            match = ours.fullmatch(entry.name)
            if match is None or _running(int(match[1])):
                continue
            if entry.is_dir() and not entry.is_symlink():
                shutil.rmtree(entry, ignore_errors=True)
            else:
                with contextlib.suppress(OSError):
                    entry.unlink()


def _running(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process
        return True
    except (OverflowError, ValueError):  # no process can have that id
        return False
    return True


@contextlib.contextmanager
def sigterm_cleans_up() -> Iterator[None]:
    """Within this block SIGTERM raises SystemExit(143), so temp files are removed on the way out.

    SIGTERM's default action ends the process at once, leaving them behind. For the entry points
    (the CLI, the server's preparation process); only the main thread can set a handler, so
    elsewhere the block changes nothing. A second SIGTERM ends the process at once.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def stop(signum: int, frame: object) -> None:
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        raise SystemExit(128 + signum)

    previous = signal.signal(signal.SIGTERM, stop)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, signal.SIG_DFL if previous is None else previous)


def _create_private(path: Path) -> int:
    """``path`` created 0600 (it holds source code) or truncated, open for writing."""
    return os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, PRIVATE_FILE_MODE)


@contextlib.contextmanager
def private_fd(path: Path) -> Iterator[int]:
    """A private file open for writing, as a file descriptor (for ``copy_range``)."""
    fd = _create_private(path)
    try:
        yield fd
    finally:
        os.close(fd)


@contextlib.contextmanager
def private_binary_writer(path: Path) -> Iterator[IO[bytes]]:
    """A private file open for writing bytes."""
    with os.fdopen(_create_private(path), "wb") as handle:
        yield handle


def make_private(folder: Path) -> None:
    """``folder`` and everything in it readable by the owner only (0700 folders, 0600 files),
    for trees that libraries wrote with the default umask; links are left alone."""
    for root, dirs, files in os.walk(folder):
        os.chmod(root, PRIVATE_DIR_MODE)
        for name in files:
            path = os.path.join(root, name)
            if not os.path.islink(path):
                os.chmod(path, PRIVATE_FILE_MODE)
        dirs[:] = [d for d in dirs if not os.path.islink(os.path.join(root, d))]
