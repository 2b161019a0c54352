"""A disk that fills up during a run (issue 24 item 13): one line naming the folder and "no
space left", and the run's partial folder removed, not left on the full disk."""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from ai_lsp_tune.training.protocol import ErrorEvent
from ai_lsp_tune.training.runner import run_training
from tests.helpers.training import fast_request, write_splits


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    """A 700 KiB file system: a checkpoint of the tiny model fills it."""
    disk = tmp_path / "disk"
    disk.mkdir()
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=700k", "tmpfs", str(disk)],
        capture_output=True,
        text=True,
        check=False,
    )
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a small tmpfs here (needs root): {mounted.stderr.strip()}")
    try:
        yield disk
    finally:
        subprocess.run(["umount", "--lazy", str(disk)], check=False)


@pytest.mark.training
@pytest.mark.slow
def test_a_full_disk_says_so_and_leaves_no_partial_run(
    tiny_model: Path, tmp_path: Path, small_disk: Path
) -> None:
    dataset = write_splits(tmp_path / "splits", 16, 2, 2)
    request = fast_request(
        tiny_model, small_disk, dataset, num_epochs=1, eval_max_examples=2, eval_max_tokens=16
    )
    outcome = run_training(request)
    assert outcome.status == "error" and isinstance(outcome.event, ErrorEvent)
    message = outcome.event.message
    assert outcome.event.kind == "disk_full", message
    assert "no space left" in message.lower() and str(small_disk) in message
    assert "\n" not in message and len(message) < 300
    assert not request.partial_dir.exists()
    assert not (small_disk / "out").exists()
