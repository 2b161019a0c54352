"""The VS Code extension: its settings match the server's, and its own unit tests pass.

The extension's logic (settings -> initializationOptions, palette -> workspace/executeCommand,
work-done progress -> notification + status bar) is tested with node's test runner against a
stand-in `vscode` module (editors/vscode/test); .ci/run builds it (npm ci, tsc, vsce package).
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
from pydantic.alias_generators import to_camel

from ai_lsp_tune.hyperparams import NAMES, bounds
from ai_lsp_tune.server import commands
from ai_lsp_tune.server.settings import DEFAULT_LANGUAGES, FinetuneSettings, Settings
from tests.helpers.editors import missing

EXTENSION = Path(__file__).resolve().parents[1] / "editors" / "vscode"
PACKAGE = json.loads((EXTENSION / "package.json").read_text())
CATEGORIES: list[dict[str, Any]] = PACKAGE["contributes"]["configuration"]
PROPERTIES: dict[str, dict[str, Any]] = {
    key: value for category in CATEGORIES for key, value in category["properties"].items()
}


def _declared(model: type[Settings] | type[FinetuneSettings], prefix: str) -> list[tuple]:
    rows = []
    for name, field in model.model_fields.items():
        if name == "finetune":
            continue
        default = field.get_default(call_default_factory=True)
        rows.append((f"{prefix}{to_camel(name)}", default))
    return rows


@pytest.mark.parametrize(
    ("key", "default"),
    _declared(Settings, "aiLsp.") + _declared(FinetuneSettings, "aiLsp.finetune."),
)
def test_every_server_setting_is_a_vscode_setting_with_the_same_default(
    key: str, default: Any
) -> None:
    assert key in PROPERTIES, f"{key} missing from editors/vscode/package.json"
    declared = PROPERTIES[key]["default"]
    # An optional text setting is a plain string in VS Code (editable in the Settings UI); the
    # extension sends "" as null, the server's default.
    assert declared == default or (default is None and declared == "" and _sent_blank(key))
    assert PROPERTIES[key].get("description") or PROPERTIES[key].get("markdownDescription")


def _sent_blank(key: str) -> bool:
    return (
        PROPERTIES[key]["type"] == "string"
        and "blankToNull" in (EXTENSION / "src" / "settings.ts").read_text()
    )


@pytest.mark.parametrize(
    "client_source",
    [EXTENSION / "src" / "commands.ts", EXTENSION.parent / "nvim" / "lua" / "ai_lsp" / "init.lua"],
    ids=["vscode", "nvim"],
)
def test_both_clients_know_exactly_the_server_command_ids(client_source: Path) -> None:
    ids = set(re.findall(r"'(ai-lsp\.[\w.]+)'", client_source.read_text()))
    assert ids == set(commands.ALL_COMMANDS)


def test_both_clients_attach_to_the_languages_the_server_analyses_by_default() -> None:
    """A client must attach before the server answers, so each keeps its ids of the server's
    list (VS Code's language ids, Neovim's filetypes); the server decides what is analysed."""
    settings_ts = (EXTENSION / "src" / "settings.ts").read_text()
    init_lua = (EXTENSION.parent / "nvim" / "lua" / "ai_lsp" / "init.lua").read_text()
    vscode_list = re.search(r"DEFAULT_LANGUAGES = \[(.*?)\];", settings_ts, re.S)
    nvim_list = re.search(r"filetypes = \{(.*?)\}", init_lua, re.S)
    assert vscode_list and nvim_list
    vscode, nvim = (set(re.findall(r"'([\w-]+)'", m.group(1))) for m in (vscode_list, nvim_list))
    assert vscode <= set(DEFAULT_LANGUAGES) and nvim <= set(DEFAULT_LANGUAGES)
    assert vscode | nvim == set(DEFAULT_LANGUAGES)


@pytest.mark.editor  # Node.js and the built extension
def test_extension_unit_tests_pass() -> None:
    node = shutil.which("node")
    if node is None:
        missing("node not found: the VS Code extension's tests need Node.js >= 20")
    if not (EXTENSION / "out" / "src" / "extension.js").exists():
        missing("the VS Code extension is not built (editors/vscode: npm ci && npm run compile)")
    tests = sorted(str(p) for p in (EXTENSION / "out" / "test").glob("*.test.js"))
    assert tests, "no compiled extension tests in editors/vscode/out/test"
    proc = subprocess.run(
        [node, "--test", *tests],
        cwd=EXTENSION,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-2000:]
    assert "# fail 0" in proc.stdout


@pytest.mark.editor  # the packaged extension
def test_the_vsix_was_packaged() -> None:
    vsix = EXTENSION / "ai-lsp-tune.vsix"
    if not vsix.exists():
        missing("no .vsix (cd editors/vscode && npx vsce package --out ai-lsp-tune.vsix)")
    import zipfile

    with zipfile.ZipFile(vsix) as archive:
        names = set(archive.namelist())
    assert "extension/package.json" in names
    assert "extension/out/src/extension.js" in names
    assert any(n.startswith("extension/node_modules/vscode-languageclient/") for n in names)


@pytest.mark.parametrize("field", NAMES)
def test_hyper_parameter_bounds_are_the_same_in_vscode_settings_and_the_server(
    field: str,
) -> None:
    bound = bounds(field)
    declared = PROPERTIES[f"aiLsp.finetune.{to_camel(field)}"]
    assert declared.get("minimum") == bound.ge
    assert declared.get("exclusiveMinimum") == bound.gt
    assert declared.get("maximum") == bound.le


def test_vscode_asks_the_gate_question_by_the_offered_action_id_not_its_title() -> None:
    from ai_lsp_tune.server.finetune.messages import USE_ANYWAY

    assert USE_ANYWAY.id == commands.MODEL_USE
    source = (EXTENSION / "src" / "messages.ts").read_text()
    assert "a.id === ServerCommand.use" in source and f"'{USE_ANYWAY.title}'" not in source
