"""Each hyper-parameter is defined once (``Hyperparameters``) and reads the same everywhere a
user meets it: the CLI's options and --help, the editor settings (and VS Code's package.json),
and the training request, each refusing a bad value with the name the user typed."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from ai_lsp_tune.cli.app import app
from ai_lsp_tune.hyperparams import (
    NAMES,
    Hyperparameters,
    bounds,
    commands,
    editor_default,
    flag,
    refusal,
    setting,
)
from ai_lsp_tune.server.finetune.context import FinetuneOptions
from ai_lsp_tune.server.finetune.states import changed_inputs, run_inputs
from ai_lsp_tune.server.settings import FinetuneSettings, validate_settings
from ai_lsp_tune.training.protocol import TrainRequest

VSCODE = Path(__file__).resolve().parents[1] / "editors" / "vscode"
PACKAGE = VSCODE / "package.json"
PROPERTIES: dict[str, dict[str, Any]] = {
    key: value
    for category in json.loads(PACKAGE.read_text())["contributes"]["configuration"]
    for key, value in category["properties"].items()
}
JSON_TYPES = {int: "integer", float: "number", bool: "boolean", str: "string"}
BOUNDED = [name for name in NAMES if bounds(name) != (None, None, None)]
COMMANDS = ("prepare-dataset", "train", "pipeline")


def _field(name: str) -> Any:
    return Hyperparameters.model_fields[name]


def _json_types(annotation: Any) -> str | list[str]:
    """``int`` -> ``"integer"``; ``int | None`` -> ``["integer", "null"]``."""
    args = getattr(annotation, "__args__", None)
    if args is None:
        return JSON_TYPES[annotation]
    return [JSON_TYPES[a] if a is not type(None) else "null" for a in args]


def _outside(name: str) -> Any:
    """A value just outside the lower bound (or the upper one when there is none)."""
    bound = bounds(name)
    if bound.ge is not None:
        return bound.ge - 1
    if bound.gt is not None:
        return bound.gt
    assert bound.le is not None
    return bound.le + 1


def _type(name: str) -> Any:
    """``int`` for ``int`` and for ``int | None``."""
    annotation = _field(name).annotation
    args = [a for a in getattr(annotation, "__args__", ()) if a is not type(None)]
    return args[0] if args else annotation


def _another(name: str) -> Any:
    """A valid value that is not the default."""
    default, bound = _field(name).default, bounds(name)
    if isinstance(default, bool):
        return not default
    for value in (bound.ge, bound.le):
        if value is not None and value != default:
            return _type(name)(value)
    return (default or 0) + 1


def _help(command: str) -> str:
    result = CliRunner().invoke(app, ["finetune", command, "--help"], env={"COLUMNS": "400"})
    assert result.exit_code == 0, result.output
    return " ".join(result.output.split())


@pytest.mark.parametrize("name", NAMES)
def test_vscode_declares_each_hyper_parameter_as_the_model_does(name: str) -> None:
    field, bound = _field(name), bounds(name)
    declared = PROPERTIES.get(setting(name))
    assert declared is not None, f"{setting(name)} missing from editors/vscode/package.json"
    assert declared["type"] == _json_types(field.annotation)
    assert declared["default"] == editor_default(name)  # the editor's own where it differs
    assert declared.get("minimum") == bound.ge
    assert declared.get("exclusiveMinimum") == bound.gt
    assert declared.get("maximum") == bound.le
    assert declared.get("markdownDescription", declared.get("description")) == field.description
    forwarded = (VSCODE / "src" / "settings.ts").read_text().split("FINETUNE_SETTINGS = [")[1]
    assert f"'{setting(name).split('.')[-1]}'" in forwarded.split("]")[0], "add it to settings.ts"


@pytest.mark.parametrize("command", COMMANDS)
def test_the_cli_help_shows_each_hyper_parameter_with_its_default_and_bounds(
    command: str,
) -> None:
    shown = _help(command)
    for name in NAMES:
        if command not in commands(name):
            assert flag(name) + " " not in shown
            continue
        field, bound = _field(name), bounds(name)
        assert flag(name) in shown
        assert " ".join(str(field.description).split()) in shown
        if isinstance(field.default, bool):
            expected = flag(name)[2:] if field.default else "no-" + flag(name)[2:]
            assert f"[default: {expected}]" in shown
        elif field.default is not None:  # None: the help text says what applies
            assert f"[default: {field.default}]" in shown
        assert _range(bound.ge, bound.le) in shown


def _range(low: float | None, high: float | None) -> str:
    """How click shows a range: ``[1<=x<=4096]``, ``[x>=0]``, ``[x<=1]``; ``""`` for none."""
    low_s, high_s = (None if v is None else str(int(v) if v == int(v) else v) for v in (low, high))
    if low_s and high_s:
        return f"[{low_s}<=x<={high_s}]"
    return f"[x>={low_s}]" if low_s else f"[x<={high_s}]" if high_s else ""


def test_train_and_pipeline_keep_the_original_tools_options_and_defaults() -> None:
    """The original ai-lsp's `finetune train` options, as its guide lists them."""
    original = {
        "--model-name": "mlx-community/gemma-2-2b-it-4bit",
        "--output-dir": "finetuned-model",
        "--num-epochs": "3",
        "--batch-size": "2",
        "--learning-rate": "1e-05",
        "--max-seq-length": "2048",
        "--lora-rank": "8",
        "--num-layers": "16",
    }
    for command in ("train", "pipeline"):
        shown = _help(command)
        for option, default in original.items():
            after = shown.split(option + " ", 1)[1]
            assert after.split("[default: ", 1)[1].startswith(default + "]"), (command, option)


@pytest.mark.parametrize("name", BOUNDED)
def test_the_editor_setting_refuses_a_value_out_of_bounds_by_its_setting_name(name: str) -> None:
    settings, problems = validate_settings(
        {"finetune": {setting(name).split(".")[-1]: _outside(name)}}
    )
    assert len(problems) == 1 and problems[0].startswith(f"{setting(name)}: ")
    assert getattr(settings.finetune, name) == editor_default(name)  # the default applies


@pytest.mark.parametrize("name", BOUNDED)
def test_the_editor_setting_accepts_its_bounds(name: str) -> None:
    bound = bounds(name)
    for value in (bound.ge, bound.le):
        if value is None:
            continue
        value = _type(name)(value)
        settings, problems = validate_settings({"finetune": {setting(name).split(".")[-1]: value}})
        assert problems == [] and getattr(settings.finetune, name) == value


@pytest.mark.parametrize("name", BOUNDED)
def test_the_train_request_refuses_a_value_out_of_bounds_by_its_flag(name: str) -> None:
    with pytest.raises(ValueError) as caught:
        TrainRequest.model_validate({"dataset": "d.json", name: _outside(name)})
    line = refusal(caught.value.errors()[0], flag)  # type: ignore[attr-defined]
    assert line.startswith(f"invalid {flag(name)} {_outside(name)}: "), line


@pytest.mark.parametrize(
    ("option", "value", "says"),
    [
        ("--num-layers", "0", "invalid --num-layers 0: must be at least 1, or -1 for all layers"),
        ("--learning-rate", "0", "invalid --learning-rate 0.0: Input should be greater than 0"),
        ("--learning-rate", "inf", "--learning-rate"),
        ("--seed", "-1", "--seed"),
    ],
)
def test_the_cli_refuses_a_bad_value_in_one_line_naming_the_flag(
    tmp_path: Path, option: str, value: str, says: str
) -> None:
    (tmp_path / "dataset.json").write_text("")
    result = CliRunner().invoke(
        app, ["finetune", "train", str(tmp_path / "dataset.json"), option, value]
    )
    assert result.exit_code == 2
    assert says in " ".join(result.output.split())
    assert "Traceback" not in result.output and "aiLsp." not in result.output


def test_the_server_trains_with_every_hyper_parameter_the_editor_set() -> None:
    """What the job sends the worker: ``TrainRequest(**settings.hyperparameters(), ...)``."""
    expected = {name: _another(name) for name in NAMES}
    settings = FinetuneSettings.model_validate(
        {setting(name).split(".")[-1]: value for name, value in expected.items()}
    )
    assert settings.hyperparameters() == expected  # each setting is read
    request = TrainRequest(**settings.hyperparameters(), dataset=Path("d"))
    assert request.hyperparameters() == expected  # and reaches the worker


@pytest.mark.parametrize(
    ("changed", "says"),
    [
        ({"seed": 7}, "seed 0 → 7"),
        ({"loraRank": 4}, "loraRank 16 → 4"),
        ({"gradCheckpoint": True}, ""),
    ],
)
def test_a_cancelled_run_resumes_only_when_the_hyper_parameters_that_shape_it_match(
    changed: dict[str, Any], says: str
) -> None:
    """gradCheckpoint trains the same model with less memory: its checkpoint still fits."""

    def inputs(settings: dict[str, Any]) -> dict[str, Any]:
        options = FinetuneOptions(settings=FinetuneSettings.model_validate(settings))
        return run_inputs(options, "base")

    assert changed_inputs(inputs({}), inputs(changed)) == says


def test_a_run_recorded_before_a_hyper_parameter_existed_ran_with_its_default() -> None:
    options = FinetuneOptions(settings=FinetuneSettings.model_validate({}))
    older = {k: v for k, v in run_inputs(options, "base").items() if k != "seed"}
    assert changed_inputs(older, run_inputs(options, "base")) == ""
    seeded = FinetuneOptions(settings=FinetuneSettings.model_validate({"seed": 3}))
    assert changed_inputs(older, run_inputs(seeded, "base")) == "seed 0 → 3"


@pytest.mark.parametrize(
    ("client", "shown"),
    [
        ("Visual Studio Code", "set aiLsp.finetune.minTestExamples or aiLsp.model"),
        ("code-server", "set aiLsp.finetune.minTestExamples or aiLsp.model"),
        ("Neovim", "set settings.finetune.minTestExamples or settings.model"),
    ],
)
def test_messages_name_settings_as_each_editor_writes_them(client: str, shown: str) -> None:
    from ai_lsp_tune.server.settings import in_client_terms

    assert in_client_terms("set aiLsp.finetune.minTestExamples or aiLsp.model", client) == shown


def test_a_bare_settings_table_beside_the_plugins_section_still_counts() -> None:
    """Neovim merges `vim.lsp.config('ai_lsp', { settings = { model = ... } })` with the
    plugin's default `{ aiLsp = {} }`: the model is not lost."""
    from ai_lsp_tune.server.settings import unwrap_section

    wire = {"aiLsp": {"finetune": {"numEpochs": 2}}, "model": "/m", "finetune": {"force": True}}
    assert unwrap_section(wire) == {"model": "/m", "finetune": {"force": True, "numEpochs": 2}}
