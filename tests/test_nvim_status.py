"""Neovim at a glance: the analysis sign in the statusline, :w analyses again, an issue quoted
from code that is not there is counted, and the status of a cancelled run is today's truth.

A real headless Neovim with the plugin and the real server on the remote backend (a scripted
OpenAI-compatible endpoint on loopback: the one fake). The workspace's last fine-tune was
cancelled with a checkpoint, under a learning rate the user has changed since.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from ai_lsp_tune import paths
from ai_lsp_tune.server.finetune.states import JobState, RunRecord, save_record
from tests.helpers.editors import (
    SOURCE,
    TEACHER_MESSAGE,
    isolated_env,
    run_nvim_script,
    server_command,
)
from tests.helpers.finetune_story import TEACHER_ANSWER
from tests.helpers.scripted_openai import Answer, ChatRequest, scripted_endpoint
from tests.helpers.trace_recorder import answer, issue

pytestmark = [pytest.mark.editor, pytest.mark.slow]

SCRIPT = Path(__file__).parent / "editor" / "nvim_status.lua"
PLUGIN_DIR = Path(__file__).resolve().parents[1] / "editors" / "nvim"
CLEAN = "def total(values):\n    # MARK: the teacher quotes code not here\n    return sum(values)\n"
NOT_THERE = answer(issue("eval(user_input)", "Do not eval input."))


def test_the_statusline_save_and_status_say_what_is_true_now(
    tmp_path: Path, isolated_home: Path
) -> None:
    workspace = tmp_path / "project"
    (workspace / ".git").mkdir(parents=True)
    (workspace / "loader.py").write_text(SOURCE)
    run_dir = paths.workspace_dir(workspace) / "finetune" / "runs" / "r1"
    run_dir.mkdir(parents=True)
    save_record(
        run_dir.parents[1] / "last_run.json",
        RunRecord(
            run_id="r1",
            state=JobState.CANCELLED,
            started_at=0.0,
            run_dir=str(run_dir),
            base_model="m",
            resumable=True,
            summary="Fine-tune cancelled at 40%; the next run resumes from its checkpoint",
            inputs={"learningRate": 0.001},
        ),
    )
    calls: list[str] = []

    def teacher(request: ChatRequest) -> Answer:
        prompt = "".join(request.user_texts)
        calls.append(prompt)
        return Answer(NOT_THERE if "MARK" in prompt else TEACHER_ANSWER)

    with scripted_endpoint(teacher) as endpoint:
        plan = {
            "plugin_dir": str(PLUGIN_DIR),
            "file": str(workspace / "loader.py"),
            "out": str(tmp_path / "observed.json"),
            "cmd": server_command(),
            "clean_text": CLEAN,
            "settings": {
                "backend": "remote",
                "remoteModel": "openai-chat:teacher",
                "debounceMs": 50,
                "finetune": {"learningRate": 5e-4},
            },
            "timeout_ms": 150_000,
            "diagnostic_timeout_ms": 60_000,
        }
        (tmp_path / "plan.json").write_text(json.dumps(plan))
        env = isolated_env(
            tmp_path,
            OPENAI_BASE_URL=endpoint.base_url,
            OPENAI_API_KEY="test-key-not-used",
            AI_LSP_E2E_CONFIG=str(tmp_path / "plan.json"),
            AI_LSP_HOME=str(isolated_home),
        )
        seen = run_nvim_script(SCRIPT, env, workspace, Path(plan["out"]), timeout_s=200)
    assert seen["exit_code"] == 0, (seen["exit_reason"], seen.get("error"), seen["history"][-5:])

    # The sign: starting / analysing until the server answers, then the count; again on :w.
    line = seen["statusline"]
    first = line.index("AI 1 issue")
    assert "AI analysing…" in line[:first], line
    assert set(line[:first]) <= {"", "AI starting…", "AI analysing…"}, line
    assert seen["right_after_save"] == "AI analysing…"
    assert line[-1] == "AI no issues"
    # :w asked the teacher again although nothing changed (one call each: open, save, edit).
    assert len(calls) == 3 and TEACHER_MESSAGE in TEACHER_ANSWER

    # The answer for the edit flagged code that is not there: not shown, but counted.
    assert seen["results"]["status"]["issuesNotInCode"] == {"loader.py": 1}

    # The cancelled run's checkpoint is not resumed under today's learning rate: said so.
    said = seen["status_said"]
    assert "the next run starts fresh, as the settings changed" in said, said
    assert "learningRate 0.001 → 0.0005" in said and "resumes from its checkpoint" not in said
