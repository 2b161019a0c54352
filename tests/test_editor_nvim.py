"""Neovim end to end: the real plugin in a real headless Neovim, driving the real server.

A user works on a Python file and gets diagnostics from the teacher (a scripted OpenAI-compatible
endpoint on loopback: the one fake, a remote provider), switches to the local tiny model (which
finds nothing), runs :AiLspFinetune on the server's own traces, watches the progress, gets the swap
message, and the next diagnostic comes from the fine-tuned model: it flags what the teacher flagged
(the recipe of tests/helpers/finetune_story.py). The Lua side records what it saw to JSON; this
file asserts on it.
"""

from __future__ import annotations

import json
import subprocess
import time
from pathlib import Path

import pytest

from ai_lsp_tune import blas
from tests.helpers.editors import (
    AFTER_SWAP,
    BASE_PROBE,
    CHANGE_SAID,
    CHANGED,
    EDITOR_FINETUNE,
    EDITS,
    LONG_RUN,
    SOURCE,
    TEACHER_MESSAGE,
    analysis_rows,
    isolated_env,
    nvim_binary,
    server_command,
)
from tests.helpers.finetune_story import FLAW, TEACHER_ANSWER
from tests.helpers.scripted_openai import Answer, ChatRequest, scripted_endpoint

pytestmark = [pytest.mark.editor, pytest.mark.model]

REPO = Path(__file__).resolve().parents[1]
PLUGIN_DIR = REPO / "editors" / "nvim"
E2E_SCRIPT = Path(__file__).parent / "editor" / "nvim_e2e.lua"


def snippet(text: str, item: dict) -> str:
    """The text a diagnostic's range covers (single-line ranges)."""
    assert item["lnum"] == item["end_lnum"], item
    return text.splitlines()[item["lnum"]][item["col"] : item["end_col"]]


def run_nvim(tmp_path: Path, plan: dict, env: dict[str, str], timeout_s: float) -> dict:
    """Run the e2e script; return its observations (always written, even on a timeout)."""
    plan_path = tmp_path / "plan.json"
    plan_path.write_text(json.dumps(plan))
    env = {**env, "AI_LSP_E2E_CONFIG": str(plan_path)}
    proc = subprocess.run(
        [nvim_binary(), "--headless", "-u", str(E2E_SCRIPT)],
        env=env,
        cwd=plan["workspace"],
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=timeout_s,
    )
    out = Path(plan["out"])
    assert out.exists(), f"nvim wrote no observations (rc={proc.returncode}): {proc.stderr[-2000:]}"
    observed = json.loads(out.read_text())
    observed["returncode"] = proc.returncode
    observed["stderr"] = proc.stderr[-4000:]
    return observed


def test_finetune_on_my_traces_from_neovim(tmp_path: Path, tiny_model: Path) -> None:
    workspace = tmp_path / "project"
    (workspace / ".git").mkdir(parents=True)
    source_path = workspace / "loader.py"
    source_path.write_text(SOURCE)
    trace_file = tmp_path / "traces" / "ai-lsp-otel.jsonl"
    teacher_calls: list[float] = []

    def teacher(request: ChatRequest) -> Answer:
        teacher_calls.append(time.time())
        return Answer(TEACHER_ANSWER)

    with scripted_endpoint(teacher) as endpoint:
        plan = {
            "plugin_dir": str(PLUGIN_DIR),
            "workspace": str(workspace),
            "file": str(source_path),
            "out": str(tmp_path / "observed.json"),
            "cmd": server_command(),
            "settings": {
                "backend": "remote",
                "remoteModel": "openai-chat:teacher",
                "model": str(tiny_model),
                "debounceMs": 50,
                "maxTokens": 96,
                "traceFile": str(trace_file),
                "finetune": {"baseModel": str(tiny_model), **EDITOR_FINETUNE},
            },
            # More analyses, more traces: each edit is a distinct training example.
            "edits": EDITS,
            "before_finetune_settings": {"backend": "local"},
            "base_probe_text": BASE_PROBE,
            "after_swap_text": AFTER_SWAP,
            "expect_items_after_swap": True,
            "timeout_ms": 420_000,
            "start_timeout_ms": 60_000,
            "diagnostic_timeout_ms": 60_000,
            "finetune_timeout_ms": 180_000,
            "after_swap_timeout_ms": 30_000,  # the fine-tuned model answers in ~1 s
            "message_timeout_ms": 30_000,
            "lineage": {
                "long_settings": LONG_RUN,
                "changed_settings": CHANGED,
                "timeout_ms": 120_000,
            },
        }
        env = isolated_env(
            tmp_path, OPENAI_BASE_URL=endpoint.base_url, OPENAI_API_KEY="test-key-not-used"
        )
        observed = run_nvim(tmp_path, plan, env, timeout_s=480)

    steps = [s["name"] for s in observed["steps"]]
    assert observed["exit_code"] == 0, (
        f"{observed.get('exit_reason')}; steps {steps}; error {observed.get('error')}; "
        f"notifications {observed['notifications'][-5:]}; "
        f"diagnostics {observed['diagnostics'][-3:]}; stderr {observed['stderr']}"
    )
    assert observed["returncode"] == 0

    # The server advertised the commands the user commands forward to.
    commands = next(s["data"]["commands"] for s in observed["steps"] if s["name"] == "initialized")
    assert {"ai-lsp.finetune", "ai-lsp.finetune.status", "ai-lsp.model.rollback"} <= set(commands)

    # A diagnostic from the real server (the teacher), placed on the flagged snippet.
    first = next(d for d in observed["diagnostics"] if d["items"])
    item = first["items"][0]
    assert item["message"] == TEACHER_MESSAGE and item["source"] == "ai-lsp"
    assert snippet(SOURCE, item) == FLAW

    # Before fine-tuning, the local base model finds nothing in the same kind of code.
    base_at = observed["base_probe_at"]
    assert next(d for d in observed["diagnostics"] if d["t"] > base_at)["items"] == []

    # Progress: one token per run, begin -> report(s) -> end, percentages never going back.
    token = observed["progress"][0]["token"]
    first_run = [p for p in observed["progress"] if p["token"] == token]
    kinds = [p["kind"] for p in first_run]
    assert kinds[0] == "begin" and kinds[-1] == "end" and "report" in kinds
    assert all(p["t"] > first_run[-1]["t"] for p in observed["progress"] if p["token"] != token)
    percentages = [p["percentage"] for p in first_run if "percentage" in p]
    assert percentages == sorted(percentages) and percentages[-1] >= 90
    assert any(s.startswith("AI ") and "%" in s for s in observed["statusline"])

    # The swap message, with a "Roll back" action: a notice (it stays in :messages) that names
    # :AiLspRollback, not a modal prompt that loses its metrics once dismissed.
    swap = observed["messages"][0]
    assert "Roll back" in swap["actions"]
    assert not any("Roll back" in s["items"] for s in observed["selects"])
    assert any(
        "Fine-tuned model now serving" in n["msg"] and ":AiLspRollback" in n["msg"]
        for n in observed["notifications"]
    )
    status = observed["results"]["status_after_swap"]
    assert status["state"] == "succeeded" and status["lastRun"]["swapped"] is True
    new_model = status["servedModel"]
    assert new_model and Path(new_model) != tiny_model

    # Later diagnostics come from the new model: it flags what the teacher flagged, as the teacher
    # worded it, with no teacher call since, and the server's own trace says which model answered.
    swapped_at = observed["swapped_at"]
    after_swap = next(s["data"] for s in observed["steps"] if s["name"] == "diagnostics_after_swap")
    assert after_swap["t"] > swapped_at
    (item,) = after_swap["items"]
    assert item["message"] == TEACHER_MESSAGE and snippet(AFTER_SWAP, item) == FLAW
    assert not [t for t in teacher_calls if t > base_at]
    # (Until the lineage steps: each later change of model analyses the open file again.)
    cancel_at = observed["cancel_at"]
    after = [m for end, m, _ in analysis_rows(trace_file) if swapped_at < end < cancel_at]
    assert after and all(Path(model) == Path(new_model) for model in after)

    # Lineage. A long run cancelled mid-training shows its end state: the server's message as a
    # notice, and the statusline's last words (not an item that just vanishes).
    assert any(
        "Fine-tune cancelled at" in n["msg"] and "next run resumes from its checkpoint" in n["msg"]
        for n in observed["notifications"]
        if n["t"] > cancel_at
    ), observed["notifications"][-5:]
    assert "Fine-tune cancelled at" in observed["statusline_at_end"][observed["cancelled_token"]]

    # The next run, after changing settings, starts fresh and says so (notice and progress).
    fresh_at = observed["fresh_at"]
    started = [n["msg"] for n in observed["notifications"] if n["t"] > fresh_at]
    assert any("starting fresh" in m and CHANGE_SAID in m for m in started), started
    fresh = [p for p in observed["progress"] if p["token"] == observed["fresh_token"]]
    assert "starting fresh" in fresh[0]["message"] and CHANGE_SAID in fresh[0]["message"]

    # It trained from the base, not from the fine-tune being served.
    second = observed["results"]["status_after_second_swap"]
    assert second["lastRun"]["baseModel"] == str(tiny_model)
    assert second["lastRun"]["swapped"] is True
    second_model = second["servedModel"]
    assert second_model not in (new_model, str(tiny_model))

    # :checkhealth ai_lsp names the model being served, and that it is not the configured one.
    health = "\n".join(observed["health"])
    # the settings in effect, not those at start-up
    assert f'"learningRate":{CHANGED["finetune"]["learningRate"]:g}' in health
    assert f"serving {second_model} (a fine-tune; the model setting is {tiny_model})" in health
    assert f"BLAS: {blas.status().name}" in health  # OpenBLAS on a Linux CPU

    # :AiLspModels: the base first, then both fine-tunes, each from the base; each line is the
    # server's name and detail (F1, val loss; the base's measured when it served), no
    # "schema-valid 100%" (constrained decoding), and two fine-tunes never read the same.
    models = observed["selects"][-1]
    rows, lines = models["rows"], models["items"]
    assert [r["path"] for r in rows] == [str(tiny_model), new_model, second_model]
    assert [r["baseModel"] for r in rows[1:]] == [str(tiny_model)] * 2
    assert [r["serving"] for r in rows] == [False, False, True]
    assert lines[2].startswith("● ") and not lines[0].startswith("● ")
    for row, line in zip(rows, lines, strict=True):
        assert line[2:] == f"{row['label']} · {row['detail']}", line
        assert "issue F1" in line and "val loss" in line and "schema-valid" not in line, line
    assert rows[0]["label"] == f"{tiny_model.name} (base model)"
    assert lines[1][2:] != lines[2][2:]

    # The first fine-tune picked again, then "Roll back": its parent, the base (not the second
    # fine-tune served in between), named where it landed; at the base a rollback is news (INFO).
    results = observed["results"]
    assert results["status_after_rollback_1"]["servedModel"] == str(tiny_model)
    landed = [n["msg"] for n in observed["notifications"] if "Rolled back to" in n["msg"]]
    assert landed == [f"ai-lsp: Rolled back to {rows[0]['label']}"], landed
    (nothing,) = [n for n in observed["notifications"] if "No previous model" in n["msg"]]
    assert nothing["level"] == 2  # vim.log.levels.INFO
    assert results["status_after_rollback_2"]["servedModel"] == str(tiny_model)
