"""VS Code end to end: the packaged extension in a real VS Code (code-server + headless Chromium).

code-server runs the real VS Code workbench and extension host; a headless Chromium connects so
the extension host starts. A test-only observer extension (tests/editor/vscode_observer) acts as
the user through the VS Code API: opens a Python file, waits for the diagnostic, asks for a
fine-tune while the teacher serves (refused; the toast's "Switch to local" button, clicked on the
page, switches), sets an invalid learning rate (no run; "Open Settings" shows the setting), runs
"AI LSP: Fine-tune on my traces", edits after the swap (the fine-tuned model now flags what the
teacher flagged), then runs the swap notification's primary action ("Roll back", as a click
would). The status-bar item, the notifications' buttons, the palette and the Settings UI are read
from the page over the DevTools protocol. The LSP traffic the extension saw (aiLsp.trace.server =
verbose, in its output-channel log) shows the progress and the swap message. .ci/run installs
code-server (Node 24 from npm) and Chromium, and exports AI_LSP_CODE_SERVER and AI_LSP_CHROMIUM.
"""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import time
from pathlib import Path

import pytest

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
    missing,
    server_command,
)
from tests.helpers.finetune_story import FLAW, TEACHER_ANSWER
from tests.helpers.scripted_openai import Answer, ChatRequest, scripted_endpoint

pytestmark = [pytest.mark.editor, pytest.mark.model]

REPO = Path(__file__).resolve().parents[1]
VSIX = REPO / "editors" / "vscode" / "ai-lsp-tune.vsix"
OBSERVER = Path(__file__).parent / "editor" / "vscode_observer"


def required(env_var: str) -> str:
    value = os.environ.get(env_var)
    if not value or not Path(value).exists():
        missing(f"{env_var} is not set to an executable")
    return value


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def start(cmd: list[str], env: dict[str, str], log: Path) -> subprocess.Popen:
    """A process in its own session (process group), so the test can stop all of it."""
    handle = log.open("w")
    return subprocess.Popen(
        cmd, env=env, stdin=subprocess.DEVNULL, stdout=handle, stderr=subprocess.STDOUT,
        start_new_session=True,
    )  # fmt: skip


def stop(proc: subprocess.Popen) -> None:
    try:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=10)
    except ProcessLookupError:
        return
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=10)


def wait_http(port: int, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.2)
    pytest.fail(f"code-server did not listen on {port} within {timeout_s} s")


def lsp_trace(user_data: Path) -> str:
    """The extension's "AI LSP" output channel, as VS Code logged it."""
    logs = sorted(user_data.glob("logs/*/exthost*/**/*AI LSP*.log"))
    return "\n".join(p.read_text(errors="replace") for p in logs)


def package_observer(tmp_path: Path) -> Path:
    vsce = REPO / "editors" / "vscode" / "node_modules" / ".bin" / "vsce"
    out = tmp_path / "observer.vsix"
    subprocess.run(
        [str(vsce), "package", "--allow-missing-repository", "--skip-license", "-o", str(out)],
        cwd=OBSERVER, check=True, capture_output=True, timeout=60,
    )  # fmt: skip
    return out


def models_after(
    trace_file: Path, t: float | None, until: float | None, timeout_s: float
) -> list[str]:
    """Models of the analyses that ended after ``t`` (and before ``until``, when the story moved
    on to steps that change the model), once the server has exported any."""
    deadline = time.monotonic() + timeout_s
    end_by = until if until is not None else float("inf")
    while t is not None and time.monotonic() < deadline:
        if trace_file.exists():
            rows = analysis_rows(trace_file)
            models = [model for end, model, _ in rows if t < end < end_by]
            if models:
                return models
        time.sleep(0.5)
    return []


def flat_settings(nested: dict, prefix: str = "") -> dict:
    """``{"finetune": {"numEpochs": 2}}`` as VS Code keys under aiLsp: ``finetune.numEpochs``."""
    flat = {}
    for key, value in nested.items():
        if isinstance(value, dict):
            flat.update(flat_settings(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = value
    return flat


def snippet(text: str, item: dict) -> str:
    """The text a diagnostic's (single-line) range covers."""
    assert item["line"] == item["endLine"], item
    return text.splitlines()[item["line"]][item["character"] : item["endCharacter"]]


def test_finetune_on_my_traces_from_vscode(tmp_path: Path, tiny_model: Path) -> None:
    code_server = required("AI_LSP_CODE_SERVER")
    chromium = required("AI_LSP_CHROMIUM")
    if not VSIX.exists():
        missing("no .vsix (editors/vscode: npx vsce package --out ai-lsp-tune.vsix)")
    workspace = tmp_path / "project"
    (workspace / ".git").mkdir(parents=True)
    source_path = workspace / "loader.py"
    source_path.write_text(SOURCE)
    user_data, extensions = tmp_path / "user-data", tmp_path / "extensions"
    trace_file = tmp_path / "traces" / "ai-lsp-otel.jsonl"
    settings = {
        "aiLsp.server.command": server_command(),
        "aiLsp.trace.server": "verbose",
        "aiLsp.backend": "remote",
        "aiLsp.remoteModel": "openai-chat:teacher",
        "aiLsp.model": str(tiny_model),
        "aiLsp.debounceMs": 50,
        "aiLsp.maxTokens": 96,
        "aiLsp.traceFile": str(trace_file),
        "aiLsp.finetune.baseModel": str(tiny_model),
        **{f"aiLsp.finetune.{key}": value for key, value in EDITOR_FINETUNE.items()},
        "workbench.startupEditor": "none",
        "security.workspace.trust.enabled": False,
        "extensions.autoUpdate": False,
        "telemetry.telemetryLevel": "off",
    }
    (user_data / "User").mkdir(parents=True)
    (user_data / "User" / "settings.json").write_text(json.dumps(settings, indent=2))
    plan = {
        "file": str(source_path),
        "out": str(tmp_path / "observed.json"),
        "edits": EDITS,  # each edit is analysed by the teacher: one more training example
        "refusals": True,  # fine-tune refused while the teacher serves, then an invalid setting
        "before_finetune_settings": {"backend": "local"},
        "base_probe_text": BASE_PROBE,
        "after_swap_text": AFTER_SWAP,
        "diagnostic_timeout_ms": 60_000,
        "finetune_timeout_ms": 180_000,
        "after_swap_timeout_ms": 30_000,  # the fine-tuned model answers in ~1 s
        "rollback_timeout_ms": 15_000,
        "message_timeout_ms": 30_000,
        "chromium_dir": str(tmp_path / "chromium"),
        "lineage": {
            "long_settings": flat_settings(LONG_RUN),
            "changed_settings": flat_settings(CHANGED),
            "timeout_ms": 120_000,
            "base_name": tiny_model.name,
            "base_model": str(tiny_model),
        },
    }
    (tmp_path / "plan.json").write_text(json.dumps(plan))
    teacher_calls: list[float] = []

    def teacher(request: ChatRequest) -> Answer:
        teacher_calls.append(time.time())
        return Answer(TEACHER_ANSWER)

    with scripted_endpoint(teacher) as endpoint:
        env = isolated_env(
            tmp_path,
            OPENAI_BASE_URL=endpoint.base_url,
            OPENAI_API_KEY="test-key-not-used",
            AI_LSP_E2E_CONFIG=str(tmp_path / "plan.json"),
        )
        dirs = ["--user-data-dir", str(user_data), "--extensions-dir", str(extensions)]
        for vsix in (VSIX, package_observer(tmp_path)):
            subprocess.run(
                [code_server, *dirs, "--install-extension", str(vsix)],
                env=env, check=True, capture_output=True, timeout=120,
            )  # fmt: skip
        port = free_port()
        server = start(
            [code_server, *dirs, "--auth", "none", "--bind-addr", f"127.0.0.1:{port}",
             "--disable-telemetry", "--disable-update-check", "--disable-workspace-trust",
             "--log", "trace",  # the LSP trace is logged at trace level
             str(workspace)],
            env, tmp_path / "code-server.log",
        )  # fmt: skip
        browser = None
        try:
            wait_http(port, 60)
            browser = start(
                [chromium, "--headless=new", "--no-sandbox", "--disable-gpu",
                 "--disable-dev-shm-usage", f"--user-data-dir={tmp_path / 'chromium'}",
                 "--remote-debugging-port=0",  # keeps it running; the observer reads the screen
                 "--remote-allow-origins=*",
                 f"http://127.0.0.1:{port}/?folder={workspace}"],
                env, tmp_path / "chromium.log",
            )  # fmt: skip
            out = Path(plan["out"])
            deadline = time.monotonic() + 480
            observed: dict = {}
            while time.monotonic() < deadline:
                if out.exists():
                    observed = json.loads(out.read_text() or "{}")
                    if observed.get("done") or observed.get("error"):
                        break
                time.sleep(1)
            # The analyses by the served fine-tune: from the swap until the story changes the
            # model again (the cancelled run that follows changes nothing; the file's analysis
            # after the edit may end just after its diagnostics, republished, were seen).
            until = next(
                (s["t"] for s in observed.get("steps", []) if s["name"] == "cancelled"),
                observed.get("after_swap_until"),
            )
            after_swap_models = models_after(trace_file, observed.get("swapped_at"), until, 15)
        finally:
            if browser is not None:
                stop(browser)
            stop(server)

    trace = lsp_trace(user_data)
    steps = [s["name"] for s in observed.get("steps", [])]
    assert observed.get("done"), (
        f"steps {steps}; error {observed.get('error')}; "
        f"diagnostics {observed.get('diagnostics', [])[-3:]}; "
        f"code-server log: {(tmp_path / 'code-server.log').read_text()[-3000:]}; "
        f"LSP log: {trace[-3000:]}"
    )
    data = {s["name"]: s.get("data") for s in observed["steps"]}
    status_bar = {item["what"]: item for item in observed["status_items"]}
    # While the teacher serves, the status bar says so; a fine-tune is refused naming
    # aiLsp.backend, and the toast's "Switch to local" (beside "Show log") switches.
    assert status_bar["the teacher in the status bar"]["text"].endswith("AI: teacher")
    assert observed["results"]["refused"] is None
    assert {"Switch to local", "Open Settings", "Show log"} <= set(observed["refusal_buttons"])
    assert "codicon-check" not in " ".join(status_bar["the base in the status bar"]["icons"])
    # An invalid setting starts no run; its toast's "Open Settings" shows that setting.
    assert observed["results"]["invalid"] is None
    invalid = observed["results"]["invalid_status"]
    assert invalid["after"] == invalid["before"] and invalid["state"] in ("idle", "succeeded")
    assert "Open Settings" in observed["invalid_buttons"]
    assert observed["settings_tab"] == "Settings"
    assert [row for row in observed["settings_rows"] if "Learning Rate" in row], observed[
        "settings_rows"
    ]
    # The diagnostic from the real server (the teacher), through the extension.
    (item,) = next(d for d in observed["diagnostics"] if d["items"])["items"]
    assert item["message"] == TEACHER_MESSAGE and snippet(SOURCE, item) == FLAW
    # Before fine-tuning, the local base model finds nothing in the same kind of code.
    assert data["base_probe"]["items"] == []
    base_at = data["base_probe"]["t"]
    # The palette command reached the server; its progress and the swap message came back.
    assert observed["results"]["finetune"]["runId"]
    status = observed["results"]["status_after"]
    assert status["state"] == "succeeded" and status["lastRun"]["swapped"] is True
    new_model = status["servedModel"]
    assert new_model and Path(new_model) != tiny_model
    assert "window/workDoneProgress/create" in trace
    for kind in ('"kind": "begin"', '"kind": "report"', '"kind": "end"'):
        assert kind in trace
    assert "window/showMessageRequest" in trace and "Roll back" in trace
    # After the swap the status bar names the fine-tune, with the success's check mark.
    swapped = status_bar["the fine-tune and its outcome in the status bar"]
    assert "AI: fine-tune" in swapped["text"] and "codicon-check" in " ".join(swapped["icons"])
    # Later diagnostics come from the new model: it flags what the teacher flagged, as the teacher
    # worded it; nothing went to the teacher since, and the server's trace names the new model.
    after_swap = data["diagnostics_after_swap"]
    assert after_swap["t"] > observed["swapped_at"]
    (item,) = after_swap["items"]
    assert item["message"] == TEACHER_MESSAGE and snippet(AFTER_SWAP, item) == FLAW
    assert not [t for t in teacher_calls if t > base_at]
    assert after_swap_models and all(Path(m) == Path(new_model) for m in after_swap_models)

    # Lineage. A long run cancelled mid-training shows its end state in a notification.
    results = observed["results"]
    assert results["status_after_cancel"]["state"] == "cancelled"
    # "Stop the running fine-tune" is in the palette only while a run goes.
    stop_title = "AI LSP: Stop the running fine-tune"
    assert [row for row in observed["palette_while_running"] if stop_title in row]
    assert not [row for row in observed["palette_after_cancel"] if stop_title in row]
    assert "Fine-tune cancelled at" in observed["cancel_notice"]

    # The next run, after changing settings, starts fresh and says so: in the command's answer
    # and in a notification (its toast, or its progress).
    assert "starting fresh" in results["fresh"]["message"]
    assert results["fresh"]["message"].startswith("The settings changed")  # why, first
    assert CHANGE_SAID in results["fresh"]["message"] and CHANGE_SAID in observed["fresh_notice"]

    # It trained from the base, not from the fine-tune being served.
    second = results["status_after_second_swap"]
    assert second["state"] == "succeeded" and second["lastRun"]["swapped"] is True
    assert second["lastRun"]["baseModel"] == str(tiny_model)
    second_model = second["servedModel"]
    assert second_model not in (new_model, str(tiny_model))

    # The swap notification's "Roll back" button stepped down the lineage to the base (the
    # second fine-tune's parent, not the first fine-tune served before it), and said so.
    assert results["status_after_rollback_1"]["servedModel"] == str(tiny_model)
    assert f"Rolled back to {tiny_model.name} (base model)" in observed["rollback_notices"][0]

    # "Choose a model": the base first, then both fine-tunes, each from the base; each row is the
    # server's name and detail line (F1, val loss; the base's too), the served row (the base) is
    # the active one, and no "schema-valid 100%" (constrained decoding).
    rows = results["models"]["models"]
    assert [r["path"] for r in rows] == [str(tiny_model), new_model, second_model]
    assert [r["baseModel"] for r in rows[1:]] == [str(tiny_model)] * 2
    shown = observed["model_rows"]
    assert len(shown) == 3, shown
    for row, line in zip(rows, shown, strict=True):
        assert row["label"] in line and row["detail"] in line, line
        assert "issue F1" in line and "schema-valid" not in line, line
    assert "serving" in shown[0] and "serving" not in shown[1] + shown[2]
    assert rows[0]["label"] in (observed["model_row_active"] or ""), observed["model_row_active"]

    # The palette's "Roll back model" at the base: nothing to roll back to, said as news.
    rolled_back = results["status_after_rollback_2"]
    assert rolled_back["servedModel"] == str(tiny_model)
    assert rolled_back["previousModel"] is None  # the base: rollback walks down, never forward
    assert "AI LSP: No previous model" in observed["rollback_notices"][1]
    assert "AI: base" in status_bar["the base again in the status bar"]["text"]
    assert "server restarted" in observed["restart_notice"]

    # The output channel: the server's log lines at their level, one timestamp each.
    assert not re.search(r"\] \d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3} ", trace)
    assert "cancelled cancelled" not in trace
