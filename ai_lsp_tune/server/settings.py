"""Server settings: a default for every field, camelCase on the wire, env vars for the CLI.

Sources, later ones winning: defaults < environment (``AI_LSP_MODEL``, ``DEBOUNCE_MS``, ...) <
``initializationOptions`` < ``workspace/didChangeConfiguration``.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError
from pydantic.alias_generators import to_camel
from pydantic.fields import FieldInfo

from ai_lsp_tune.hyperparams import DEFAULT_MODEL, EDITOR_DEFAULTS, Hyperparameters

# Analysed when ``languages`` is empty: code, not prose or data files. Language ids as VS Code
# sends them and as Neovim does (its filetype): ``shellscript``/``sh``, ``csharp``/``cs``. The
# editors attach to these (``settings.ts``, ``init.lua``; a test keeps them equal), the server
# decides: another client that attaches to every file gets the same analyses.
DEFAULT_LANGUAGES = (
    "python", "javascript", "javascriptreact", "typescript", "typescriptreact", "go", "rust",
    "lua", "c", "cpp", "java", "ruby", "php", "shellscript", "sh", "swift", "kotlin", "csharp",
    "cs",
)  # fmt: skip


class CamelModel(BaseModel):
    """snake_case in Python, camelCase on the wire: the settings editors send, the status and
    run records the server sends back."""

    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, extra="ignore")

    def wire(self) -> dict[str, Any]:
        """JSON-ready dict with camelCase keys, as the editors read it."""
        return self.model_dump(mode="json", by_alias=True)


class FinetuneSettings(CamelModel, Hyperparameters):
    """``aiLsp.finetune.*``: the hyper-parameters (``Hyperparameters``), then the job's own."""

    base_model: str | None = Field(
        None, description="Model every fine-tune starts from; default: the model setting."
    )
    continue_from_served: bool = Field(
        False, description="Train on top of the model being served instead of the base model."
    )
    extra_traces: list[str] = Field(
        default_factory=list, description="More trace files or folders to learn from."
    )
    force: bool = Field(False, description="Swap even when the new model scores worse.")
    min_test_examples: int = Field(
        5,
        ge=0,
        description="Fewer test examples, or test files, than this: ask before swapping.",
    )
    keep_models: int = Field(
        5, ge=1, description="Fine-tuned models kept on disk (the served one is always kept)."
    )
    hosts: list[str] = Field(
        default_factory=list,
        description="Train data-parallel on these hosts (IP addresses; repeat one for several "
        "ranks) through mlx.launch; each needs the same Python environment, model and data "
        "paths, and ssh without a password.",
    )
    hostfile: str | None = Field(
        None, description="An mlx.launch hostfile (JSON) instead of hosts."
    )
    backend: Literal["ring", "mpi", "nccl"] | None = Field(
        None, description="mlx.launch backend with hosts/hostfile; default: nccl with CUDA, ring."
    )


# The editor's defaults that differ from the CLI's (``hyperparams.EDITOR_DEFAULTS``).
for _name, _value in EDITOR_DEFAULTS.items():
    FinetuneSettings.model_fields[_name] = FieldInfo.merge_field_infos(
        FinetuneSettings.model_fields[_name], default=_value
    )
FinetuneSettings.model_rebuild(force=True)


class Settings(CamelModel):
    backend: Literal["local", "remote"] = Field(
        "local", description="local: an MLX model served here; remote: a pydantic-ai model."
    )
    model: str = Field(DEFAULT_MODEL, description="Local MLX model: a path or a hub name.")
    remote_model: str = Field(
        "google:gemini-2.5-flash", description="pydantic-ai model string for backend=remote."
    )
    debounce_ms: int = Field(1000, ge=0, description="Wait after the last edit before analysing.")
    max_tokens: int = Field(1024, ge=16, description="Longest answer the model may write.")
    max_input_tokens: int | None = Field(
        None,
        ge=256,
        description="Longest prompt, in tokens; a longer document is analysed in windows. "
        "Default: the local model's context length (none for a remote model).",
    )
    constrained_decoding: bool = Field(
        True, description="Local models: decode only answers that are a valid DiagnosticResult."
    )
    max_document_bytes: int = Field(
        1_000_000,
        ge=1,
        le=16_000_000,  # one message (the document, JSON-escaped) may not exceed 64 MiB (stdio.py)
        description="Larger documents are not analysed (UTF-8 bytes).",
    )
    languages: list[str] = Field(
        default_factory=list,
        description="Language ids to analyse; empty: the usual programming languages "
        "(DEFAULT_LANGUAGES).",
    )
    telemetry: bool = Field(True, description="Record analyses as OpenTelemetry spans.")
    trace_file: str | None = Field(
        None, description="Trace export file; default: in the data dir, per workspace."
    )
    finetune: FinetuneSettings = Field(default_factory=lambda: FinetuneSettings.model_validate({}))


# --- sources ---------------------------------------------------------------------------------
# Environment variables the CLI and editors may set, and the setting each one feeds.
ENV_VARS: dict[str, str] = {
    "AI_LSP_BACKEND": "backend",
    "AI_LSP_MODEL": "model",
    "AI_LSP_REMOTE_MODEL": "remoteModel",
    "DEBOUNCE_MS": "debounceMs",
    "AI_LSP_DEBOUNCE_MS": "debounceMs",
    "AI_LSP_MAX_TOKENS": "maxTokens",
    "AI_LSP_MAX_INPUT_TOKENS": "maxInputTokens",
    "AI_LSP_CONSTRAINED_DECODING": "constrainedDecoding",
    "AI_LSP_MAX_DOCUMENT_BYTES": "maxDocumentBytes",
    "AI_LSP_LANGUAGES": "languages",
    "AI_LSP_TELEMETRY": "telemetry",
    "AI_LSP_TRACE_FILE": "traceFile",
}
SETTINGS_SECTION = "aiLsp"  # the section editors use ("aiLsp": {...}) in their settings
_SETTING_NAME = re.compile(r"\baiLsp\.((?:[A-Za-z]+\.)*[A-Za-z]+)")


def in_client_terms(text: str, client_name: str | None) -> str:
    """A message with each setting named as the user writes it in their editor: VS Code's
    ``aiLsp.finetune.learningRate`` is ``settings.finetune.learningRate`` in Neovim's Lua."""
    if (client_name or "").lower() not in ("neovim", "nvim"):
        return text
    return _SETTING_NAME.sub(r"settings.\1", text)


def settings_from_env(environ: Mapping[str, str]) -> dict[str, Any]:
    """The raw (still unvalidated) settings that environment variables ask for."""
    raw: dict[str, Any] = {}
    for var, key in ENV_VARS.items():
        value = environ.get(var)
        if value is None or value == "":
            continue
        if key == "languages":
            raw[key] = [v.strip() for v in value.split(",") if v.strip()]
        else:
            raw[key] = value
    return raw


def unwrap_section(options: Any) -> dict[str, Any]:
    """Accept both ``{"aiLsp": {...}}`` and the bare settings object."""
    if not isinstance(options, dict):
        return {}
    sections = (SETTINGS_SECTION, "ai-lsp", "ai_lsp")
    for key in sections:
        if isinstance(options.get(key), dict):
            # Keys beside the section count too: Neovim merges a user's bare `settings` table
            # with the plugin's default `{ aiLsp = {} }`.
            bare = {k: v for k, v in options.items() if k not in sections}
            return merge(bare, options[key])
    return dict(options)


def merge(*layers: Mapping[str, Any]) -> dict[str, Any]:
    """Later layers win; nested objects (``finetune``) merge key by key."""
    out: dict[str, Any] = {}
    for layer in layers:
        for key, value in layer.items():
            if isinstance(value, Mapping) and isinstance(out.get(key), Mapping):
                out[key] = merge(out[key], value)
            else:
                out[key] = value
    return out


def validate_settings(raw: Mapping[str, Any]) -> tuple[Settings, list[str]]:
    """Validate settings; each invalid value is reported and replaced by its default."""
    data = dict(raw)
    problems: list[str] = []
    for _ in range(64):  # at most one pass per invalid field
        try:
            return Settings.model_validate(data), problems
        except ValidationError as exc:
            error = exc.errors()[0]
            loc = [str(p) for p in error["loc"]]
            shown = "aiLsp." + ".".join(loc) if loc else "settings"  # the editor's name
            got = error.get("input")
            problems.append(f"{shown}: {error['msg']} (got {got!r}); {_until_fixed(loc)}")
            if not loc or not _drop(data, loc):
                return Settings.model_validate({}), problems
    return Settings.model_validate({}), problems


FINETUNE_REFUSED = "fine-tunes are refused until it is fixed"


def _until_fixed(loc: list[str]) -> str:
    """What an invalid value means: a fine-tune never trains on a default the user did not
    choose; other settings fall back to their default (analysis goes on)."""
    return FINETUNE_REFUSED if loc[:1] == ["finetune"] else "using the default"


def _drop(data: dict[str, Any], loc: list[str]) -> bool:
    """Remove the top-level or nested key an error points at; False if it cannot be found."""
    key = loc[0]
    if key not in data:
        return False
    if len(loc) > 1 and isinstance(data[key], dict):
        nested = dict(data[key])
        if loc[1] in nested:
            del nested[loc[1]]
            data[key] = nested
            return True
    del data[key]
    return True
