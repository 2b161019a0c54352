"""The VS Code extension's manifest as a user meets it: the Settings UI's groups and order, the
command palette, and the extension README naming the same commands."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

EXTENSION = Path(__file__).resolve().parents[1] / "editors" / "vscode"
PACKAGE = json.loads((EXTENSION / "package.json").read_text())
CATEGORIES: list[dict[str, Any]] = PACKAGE["contributes"]["configuration"]
PROPERTIES = {key: prop for category in CATEGORIES for key, prop in category["properties"].items()}
COMMANDS = {c["command"]: c for c in PACKAGE["contributes"]["commands"]}


def test_settings_come_in_groups_the_model_first_and_multi_machine_last() -> None:
    titles = [c["title"] for c in sorted(CATEGORIES, key=lambda c: c["order"])]
    assert titles == ["Model", "Analysis", "Fine-tune", "Advanced / multi-machine"]
    first = min(CATEGORIES[0]["properties"].items(), key=lambda kv: kv[1]["order"])
    assert first[0] == "aiLsp.model"
    advanced = CATEGORIES[-1]["properties"]
    assert {"aiLsp.finetune.hosts", "aiLsp.finetune.hostfile", "aiLsp.finetune.backend"} <= set(
        advanced
    )


def test_every_setting_has_an_order_and_a_markdown_description() -> None:
    for category in CATEGORIES:
        orders = [prop["order"] for prop in category["properties"].values()]
        assert sorted(orders) == list(range(1, len(orders) + 1)), category["title"]
    for key, prop in PROPERTIES.items():
        assert prop.get("markdownDescription") and "description" not in prop, key


def test_no_setting_offers_null_and_text_settings_are_editable_in_the_settings_ui() -> None:
    for key, prop in PROPERTIES.items():
        assert None not in prop.get("enum", []), key
        if key in ("aiLsp.finetune.baseModel", "aiLsp.traceFile", "aiLsp.finetune.hostfile"):
            assert prop["type"] == "string", key  # ["string", "null"]: "Edit in settings.json"
    backend = PROPERTIES["aiLsp.finetune.backend"]
    assert backend["default"] == "" and backend["enumItemLabels"][0] == "automatic"


def test_telemetry_says_it_is_the_local_traces_you_fine_tune_on() -> None:
    text = PROPERTIES["aiLsp.telemetry"]["markdownDescription"]
    assert "local trace" in text and "Fine-tune on my traces" in text and "this machine" in text


def test_stop_is_offered_only_while_a_fine_tune_runs() -> None:
    menu = PACKAGE["contributes"]["menus"]["commandPalette"]
    palette = {m["command"]: m.get("when") for m in menu}
    assert palette["aiLsp.finetuneCancel"] == "aiLsp.finetuneRunning"
    source = (EXTENSION / "src").glob("*.ts")
    assert any("'aiLsp.finetuneRunning'" in path.read_text() for path in source)


def test_the_readme_names_the_palette_commands_as_the_palette_does() -> None:
    readme = (EXTENSION / "README.md").read_text()
    named = set(re.findall(r"^\| AI LSP: ([^|]+?) \|", readme, flags=re.MULTILINE))
    assert named == {c["title"] for c in COMMANDS.values()}
