"""Neovim, as a user at its own message area: the gate's decision waits without a prompt.

A real headless Neovim with the plugin, the real server and the tiny local model, on a project
whose traces hold a teacher's analyses. A trace file outside the project, named on
`:AiLspFinetune`, is refused naming the setting that takes it (`settings.finetune.extraTraces`).
The fine-tune then has too few test examples for the gate, which keeps the old model and offers
"Use it anyway": a one-line notice naming `:AiLspUseAnyway` (no `inputlist` that stops typing,
no hit-enter prompt); the command serves the fine-tune, and the follow-up names
`:AiLspRollback`. The actions are recognised by their ids, never by their English titles.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from ai_lsp_tune import paths
from ai_lsp_tune.server import commands
from ai_lsp_tune.traces.telemetry import TRACE_FILE_NAME
from tests.helpers.editors import isolated_env, run_nvim_script, server_command
from tests.helpers.finetune_story import QUICK, TEACHER_ANSWER, source_file
from tests.helpers.trace_recorder import Recorder

pytestmark = [pytest.mark.editor, pytest.mark.training, pytest.mark.model, pytest.mark.slow]

SCRIPT = Path(__file__).parent / "editor" / "nvim_decisions.lua"
PLUGIN_DIR = Path(__file__).resolve().parents[1] / "editors" / "nvim"


def test_the_gates_offer_waits_for_a_command_not_a_prompt(
    tmp_path: Path, isolated_home: Path, tiny_model: Path
) -> None:
    workspace = tmp_path / "project"
    (workspace / ".git").mkdir(parents=True)
    (workspace / "mod_99.py").write_text(source_file(99))
    recorder = Recorder(paths.workspace_dir(workspace) / "traces" / TRACE_FILE_NAME)
    for n in range(8):  # the teacher's analyses, as the remote backend records them
        recorder.analysis(source_file(n), TEACHER_ANSWER, uri=(workspace / f"mod_{n}.py").as_uri())
    recorder.close()
    outside = tmp_path / "elsewhere" / "traces.jsonl"
    outside.parent.mkdir()
    outside.write_text("")
    plan = {
        "plugin_dir": str(PLUGIN_DIR),
        "file": str(workspace / "mod_99.py"),
        "out": str(tmp_path / "observed.json"),
        "cmd": server_command(),
        "outside_trace": str(outside),
        "settings": {
            "backend": "local",
            "model": str(tiny_model),
            "debounceMs": 50,
            "maxTokens": 96,
            "finetune": {**QUICK, "minTestExamples": 1000},
        },
        "timeout_ms": 400_000,
        "start_timeout_ms": 60_000,
        "finetune_timeout_ms": 300_000,
    }
    (tmp_path / "plan.json").write_text(json.dumps(plan))
    env = isolated_env(tmp_path, AI_LSP_E2E_CONFIG=str(tmp_path / "plan.json"))
    env["AI_LSP_HOME"] = str(isolated_home)
    seen = run_nvim_script(SCRIPT, env, workspace, Path(plan["out"]), timeout_s=460)
    assert seen["exit_code"] == 0, (seen["exit_reason"], seen.get("error"), seen["history"][-5:])

    # Named as a Neovim user writes it in their config, not VS Code's aiLsp.finetune....
    assert "settings.finetune.extraTraces" in seen["refusal"], seen["refusal"]
    assert "aiLsp." not in seen["refusal"]

    # The offer: a notice that names the command first and shows the metric that decides; it
    # never asked through a prompt that stops typing.
    assert seen["offer"].startswith("ai-lsp: :AiLspUseAnyway swaps it in · "), seen["offer"]
    assert "issue F1" in seen["offer"] and "settings.finetune.minTestExamples" in seen["offer"]
    assert seen["prompts"] == [] and seen["selects"] == [], (seen["prompts"], seen["selects"])
    # Each message is one line of the message area: no hit-enter prompt.
    lines = [line for line in seen["screen"].splitlines() if "ai-lsp" in line]
    assert lines and all(len(line) <= max(seen["echospace"], 40) for line in lines), lines
    assert seen["results"]["before"]["state"] == "rejected"

    # Chosen by :AiLspUseAnyway: the fine-tune serves, the status says so, the follow-up offers
    # :AiLspRollback. Both offers carried their action's id.
    after = seen["results"]["after"]
    assert after["state"] == "succeeded" and after["lastRun"]["gate"] == "used anyway"
    assert "Fine-tuned model now serving" in seen["follow_up"]
    assert [o["ids"] for o in seen["offers"]] == [[commands.MODEL_USE], [commands.MODEL_ROLLBACK]]
