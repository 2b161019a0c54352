"""Turn the model name a user gave (hub name, model folder, GGUF file) into a loadable folder.

A GGUF file is converted once into an mlx-lm folder under the data dir, keyed by its content:
size + mtime find the content hash fast; a changed stat hashes the file to confirm. The folder is
built beside its final place and renamed in, so the cache never holds half a model.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import tempfile
from pathlib import Path

from ai_lsp_tune.models.errors import ModelError
from ai_lsp_tune.paths import data_dir

log = logging.getLogger(__name__)
SOURCE_FILE = "gguf_source.json"  # beside the converted model: which GGUF it came from


def gguf_cache_dir() -> Path:
    return data_dir() / "models" / "gguf"


def is_gguf(path: Path) -> bool:
    """Whether ``path`` is meant as a GGUF file (by name, or by its first four bytes)."""
    if path.suffix.lower() == ".gguf":
        return True
    try:
        with path.open("rb") as file:
            return file.read(4) == b"GGUF"
    except OSError:
        return False


def _looks_like_path(name: str) -> bool:
    return name.startswith(("/", ".", "~")) or name.count("/") != 1 or os.sep != "/"


def resolve_model(name: str) -> Path:
    """A local folder for ``name``: the folder itself, a GGUF's converted folder, or the hub
    snapshot (cached or fetched)."""
    path = Path(name).expanduser()
    if path.is_file() and is_gguf(path):
        return gguf_folder(path)
    if path.exists():
        if not path.is_dir():
            raise ModelError(
                "bad_model", f"Model {name} is a file; pass the model's folder or a .gguf file."
            )
        return path
    if _looks_like_path(name):
        raise ModelError(
            "model_not_found",
            f"No model at {path}; pass an MLX model folder, a .gguf file or a Hugging Face "
            "name such as mlx-community/gemma-2-2b-it-4bit.",
        )
    return _hub_snapshot(name)


def _hub_snapshot(name: str) -> Path:
    from huggingface_hub import snapshot_download
    from mlx_lm.utils import DEFAULT_ALLOW_PATTERNS

    try:
        return Path(snapshot_download(name, allow_patterns=DEFAULT_ALLOW_PATTERNS))
    except Exception as exc:
        raise ModelError(
            "model_not_found",
            f"Model {name} is not a local folder and could not be downloaded from the Hugging "
            f"Face Hub ({_hub_failure(exc)}); download it once while online "
            f"(`hf download {name}`) or pass a local folder or .gguf file with "
            "--model-name /path/to/model.",
        ) from exc


def _hub_failure(exc: Exception) -> str:
    """Why a hub download failed, in a few words."""
    name = type(exc).__name__
    if name in ("LocalEntryNotFoundError", "OfflineModeIsEnabled"):
        return "offline, and it is not in the local Hugging Face cache"
    if name in ("RepositoryNotFoundError", "GatedRepoError"):
        return "no such repository, or it needs a login"
    if "connect" in str(exc).lower() or "resolve" in str(exc).lower():
        return "no network connection to the hub"
    return name


def _content_hash(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as file:
        while chunk := file.read(1 << 22):
            digest.update(chunk)
    return digest.hexdigest()


def _stat_key(path: Path) -> str:
    stat = path.stat()
    return hashlib.sha256(
        f"{path.resolve()}|{stat.st_size}|{stat.st_mtime_ns}".encode()
    ).hexdigest()


def gguf_folder(source: Path) -> Path:
    """The converted mlx-lm folder of GGUF file ``source``, converting it on first use."""
    cache = gguf_cache_dir()
    try:
        stat_file = cache / "by-stat" / _stat_key(source)
        digest = stat_file.read_text().strip() if stat_file.is_file() else _content_hash(source)
        folder = cache / digest[:32]
        if not (folder / "config.json").is_file():
            _convert_into(source, folder)
        stat_file.parent.mkdir(parents=True, exist_ok=True)
        _write_atomic(stat_file, digest)
    except OSError as exc:
        raise ModelError(
            "bad_model",
            f"Cannot use the GGUF model cache {cache} for {source.name} ({exc.strerror}); "
            "make it writable or free disk space (AI_LSP_HOME moves it).",
        ) from exc
    return folder


def _write_atomic(path: Path, text: str) -> None:
    temp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    temp.write_text(text)
    os.replace(temp, path)


def _convert_into(source: Path, folder: Path) -> None:
    from ai_lsp_tune.models.gguf_convert import convert_gguf

    folder.parent.mkdir(parents=True, exist_ok=True)
    temp = Path(tempfile.mkdtemp(prefix=".converting-", dir=folder.parent))
    try:
        note = convert_gguf(source, temp)
        if note:
            log.warning("%s: %s", source.name, note)
        (temp / SOURCE_FILE).write_text(json.dumps({"file": str(source), "note": note}))
        try:
            temp.rename(folder)
        except OSError:
            if not (folder / "config.json").is_file():  # not another process's finished copy
                raise
    finally:
        shutil.rmtree(temp, ignore_errors=True)


def gguf_source(folder: Path) -> str | None:
    """The GGUF file a converted folder came from, for naming it as the user did."""
    try:
        return str(json.loads((folder / SOURCE_FILE).read_text())["file"])
    except (OSError, ValueError, KeyError, TypeError):
        return None


def cached_gguf_folder(source: Path) -> Path | None:
    """The converted folder of ``source`` if it is in the cache already (no hashing, no work)."""
    try:
        digest = (gguf_cache_dir() / "by-stat" / _stat_key(source)).read_text().strip()
    except OSError:
        return None
    folder = gguf_cache_dir() / digest[:32]
    return folder if (folder / "config.json").is_file() else None


def gguf_note(source: Path, folder: Path | None = None) -> str | None:
    """One line for the user on a converted GGUF: the memory its dequantized (K-quant) tensors
    cost, and a missing chat template; None when there is nothing to say or it is not converted."""
    folder = folder or cached_gguf_folder(source)
    if folder is None:
        return None
    notes = []
    try:
        stored = json.loads((folder / SOURCE_FILE).read_text()).get("note")
        settings = json.loads((folder / "tokenizer_config.json").read_text())
    except (OSError, ValueError, AttributeError):
        return None
    if isinstance(stored, str) and stored:
        notes.append(stored.rstrip("."))
    if not settings.get("chat_template") and not (folder / "chat_template.jinja").is_file():
        notes.append(
            "it has no chat template (tokenizer.chat_template), so prompts are sent to it as "
            "plain text and its answers may be poor; an instruction-tuned GGUF has one"
        )
    return f"{source.name}: {'; '.join(notes)}." if notes else None
