"""The small JSON files a workspace keeps its state in (model registry, last run): read so that no
file, however damaged, can stop the server, and none is wiped without a copy.

Binary, truncated, of another schema, a folder, a FIFO, unreadable: the reader gets
``UnreadableStateFile`` naming the file and where a copy of it was kept, and starts afresh.
A FIFO is never opened (opening one for reading blocks until a writer comes).
"""

from __future__ import annotations

import os
import shutil
import stat
import time
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

T = TypeVar("T")
MAX_STATE_BYTES = 32 * 2**20  # a registry of thousands of models is well under 1 MiB


class UnreadableStateFile(ValueError):
    """A state file that cannot be used; the message says which, why, and where its copy is."""


def read_state_file(path: Path, parse: Callable[[str], T]) -> T | None:
    """``parse`` of the file's text, or None when there is no file.

    Raises UnreadableStateFile when it cannot be read or parsed (``parse`` raising ValueError,
    which pydantic's ValidationError is); what was there is kept beside it first.
    """
    try:
        info = os.stat(path)
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise UnreadableStateFile(f"{path} cannot be read ({exc.strerror})") from exc
    if stat.S_ISDIR(info.st_mode):
        raise UnreadableStateFile(f"{path} is a folder, not a file; move it away")
    if not stat.S_ISREG(info.st_mode):
        kept = _move_aside(path)
        raise UnreadableStateFile(f"{path} is not a regular file; it was moved to {kept}")
    try:
        # O_NONBLOCK: should a FIFO take the file's place after the check, open does not block.
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK)
        with os.fdopen(fd, "rb") as handle:
            data = handle.read(MAX_STATE_BYTES + 1)
        if len(data) > MAX_STATE_BYTES:
            raise ValueError(f"over {MAX_STATE_BYTES // 2**20} MiB")
        return parse(data.decode("utf-8"))
    except (OSError, ValueError) as exc:
        reason = str(exc).splitlines()[0][:120] if str(exc) else type(exc).__name__
        kept = _keep_copy(path)
        raise UnreadableStateFile(
            f"{path} could not be read ({type(exc).__name__}: {reason}); "
            + (f"a copy is kept at {kept}" if kept else "no copy could be made")
        ) from exc


def backup_name(path: Path) -> Path:
    """A free name beside ``path`` for a copy of it, with the time it was set aside."""
    stamp = time.strftime("%Y%m%d-%H%M%S")
    for n in range(1000):
        candidate = path.with_name(f"{path.name}.unreadable-{stamp}" + (f"-{n}" if n else ""))
        if not os.path.lexists(candidate):
            return candidate
    raise FileExistsError(f"no free backup name beside {path}")


def _keep_copy(path: Path) -> Path | None:
    """A private copy of ``path`` beside it (state files name the user's folders)."""
    try:
        kept = backup_name(path)
        source = os.open(path, os.O_RDONLY | os.O_NONBLOCK)
        with os.fdopen(source, "rb") as reader:
            target = os.open(kept, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(target, "wb") as writer:
                shutil.copyfileobj(reader, writer)
    except OSError:
        return None
    return kept


def _move_aside(path: Path) -> Path | None:
    try:
        kept = backup_name(path)
        os.replace(path, kept)
    except OSError:
        return None
    return kept
