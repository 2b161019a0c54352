"""Files that matter are written to a temp path in the same folder, then renamed."""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import IO

PRIVATE_FILE_MODE = 0o600  # traces and datasets hold source code


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
