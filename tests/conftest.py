"""Shared fixtures: an isolated AI_LSP_HOME, no hub access, and the tiny local model."""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

import ai_lsp_tune  # noqa: F401 (first: loads OpenBLAS before any test module imports mlx)

if TYPE_CHECKING:
    from tests.helpers.recorded_traces import TraceFacts

# Nothing in the test suite may reach a model hub.
os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["TRANSFORMERS_OFFLINE"] = "1"

SHARED = Path(__file__).resolve().parents[2] / "shared"
REAL_TRACE_FILE = SHARED / "traces" / "ai-lsp-otel.jsonl"


@pytest.fixture(scope="session")
def recorded_trace_file(tmp_path_factory: pytest.TempPathFactory) -> TraceFacts:
    """A trace file shaped like the real one, recorded once per session by real pydantic-ai."""
    from tests.helpers.recorded_traces import record_trace_file

    return record_trace_file(tmp_path_factory.mktemp("recorded-traces") / "ai-lsp-otel.jsonl")


@pytest.fixture(params=["recorded", "real"])
def trace_file(request: pytest.FixtureRequest) -> TraceFacts:
    """The recorded trace file, and the real one (``../shared``) when it is there."""
    if request.param == "recorded":
        facts: TraceFacts = request.getfixturevalue("recorded_trace_file")
        return facts
    if not REAL_TRACE_FILE.exists():
        pytest.skip("the real trace file is not here (../shared/traces/ai-lsp-otel.jsonl)")
    from tests.helpers.recorded_traces import real_file_facts

    return real_file_facts(REAL_TRACE_FILE)


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A random-init llama-type MLX model + BPE tokenizer, built locally once per session."""
    from ai_lsp_tune.cli.tiny_model import ensure_tiny_model

    return ensure_tiny_model(tmp_path_factory.mktemp("tiny-model-cache"))


@pytest.fixture(scope="session")
def tiny_model_word_split(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny model with a tokenizer built as real ones are (words split before merging)."""
    from ai_lsp_tune.cli.tiny_model import ensure_tiny_model

    return ensure_tiny_model(tmp_path_factory.mktemp("tiny-model-cache"), word_split=True)


@pytest.fixture(scope="session")
def teacher_traces(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One teacher session's trace export (16 files, a scripted remote model), recorded once
    per session over stdio and copied into the workspaces that learn from it."""
    import asyncio

    from tests.helpers.finetune_story import record_teacher_traces

    root = tmp_path_factory.mktemp("teacher")
    (root / "ws").mkdir()
    return asyncio.run(record_teacher_traces(root / "ws", root / "home", files=16))


@pytest.fixture
def taught_workspace(tmp_path: Path, teacher_traces: Path) -> Path:
    """A fresh project whose trace export already holds the teacher's session."""
    from tests.helpers.finetune_story import place_traces

    workspace = tmp_path / "project"
    workspace.mkdir()
    place_traces(teacher_traces, workspace)
    return workspace


@pytest.fixture(autouse=True)
def isolated_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Every test gets its own data and cache dirs (never the user's)."""
    home = tmp_path / "ai-lsp-home"
    monkeypatch.setenv("AI_LSP_HOME", str(home))
    return home


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """A test that starts a model host or trains is ``slow`` too, so the fast tier
    (``-m "not slow and not editor"``) never waits on a model; editor tests run last."""
    for item in items:
        if item.get_closest_marker("model") or item.get_closest_marker("training"):
            item.add_marker(pytest.mark.slow)
    items.sort(key=lambda item: item.get_closest_marker("editor") is not None)
