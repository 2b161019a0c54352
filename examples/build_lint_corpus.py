"""Record the distillation corpus: real third-party code, answered by the lint teacher.

    uv run python examples/build_lint_corpus.py [--files 80] [--output PATH]

Python files of packages installed in the venv (not this project's code or tests) are cut into
the windows the server analyses and answered by ``ai_lsp_tune.dataset.teacher`` (ruff with its
RULES). Each answer is recorded as our analysis span, through the OpenTelemetry SDK and our
exporter, as the remote backend records one. About a third of the windows have no issue.
Writes examples/traces/lint-teacher-otel.jsonl (replacing it). ``--local 120`` records the
corpus of line-local rules (``teacher.LOCAL_RULES``, windows cut for a local model's prompt, each
rule capped) that bench/quality_curve.py measures; ``ai-lsp demo``'s corpus,
ai_lsp_tune/cli/corpus/lint-demo-otel.jsonl, is ``cli.review_demo.RECORD_COMMAND`` (13 of those
rules, flagged windows only, 40/4/14 by prepare-dataset's split, the rule code as message).
"""

from __future__ import annotations

import argparse
import hashlib
import random
import sysconfig
from collections.abc import Mapping, Sequence
from pathlib import Path

from ai_lsp_tune.dataset.reader import assign_splits
from ai_lsp_tune.dataset.teacher import (
    LOCAL_RULES,
    TEACHER_MODEL,
    TeacherAnalysis,
    analyses,
    ruff_findings,
)
from ai_lsp_tune.prompts import LOCAL_SYSTEM_PROMPT

TRACES = Path(__file__).resolve().parent / "traces"
# Third-party packages of the venv, read as a user's code would be: libraries, not test suites.
PACKAGES = [
    "anyio", "attr", "cattrs", "click", "filelock", "fsspec", "h11", "httpcore", "httpx",
    "huggingface_hub", "jinja2", "markdown_it", "mlx_lm", "openai", "packaging", "pygls",
    "pygments", "pydantic_ai", "requests", "rich", "tenacity", "tqdm", "transformers",
    "typer", "urllib3", "yaml",
]  # fmt: skip
_NOT_LIBRARY = {"tests", "test", "testing", "_vendor", "vendor"}
BUDGET = 700  # estimated prompt tokens per window: the system prompt and about 20 lines of code
MAX_WINDOWS_PER_FILE = 5


def source_files(root: Path) -> list[Path]:
    """Library modules of PACKAGES under ``root`` (site-packages), without tests."""
    files = []
    for package in PACKAGES:
        for path in sorted((root / package).rglob("*.py")):
            parts = set(path.relative_to(root).parts)
            if not parts & _NOT_LIBRARY and path.stat().st_size:
                files.append(path)
    return files


def _stable(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


def choose(root: Path, files: int, seed: int) -> list[TeacherAnalysis]:
    """Windows of ``files`` files that have findings: flagged windows and a third clean ones."""
    paths = source_files(root)
    findings = ruff_findings(paths)
    flagged = sorted((p for p in paths if findings[p.resolve()]), key=lambda p: _stable(str(p)))
    rng = random.Random(seed)
    chosen: list[TeacherAnalysis] = []
    for path in flagged[:files]:
        name = str(path.relative_to(root))
        code = path.read_text(encoding="utf-8", errors="replace")
        windows = analyses(name, code, findings[path.resolve()], budget=BUDGET)
        with_issues = [w for w in windows if w.answer.issues]
        clean = [w for w in windows if not w.answer.issues]
        take = with_issues[: MAX_WINDOWS_PER_FILE - 1]
        wanted_clean = max(1, len(take) // 2)  # a third of the file's windows are clean
        take += rng.sample(clean, min(wanted_clean, len(clean)))
        chosen += take
    return chosen


def choose_local(
    root: Path,
    windows: int,
    *,
    budget: int = 300,
    cap: int = 12,
    per_file: int = 3,
    rules: Sequence[str] | None = None,
    quota: Mapping[str, int] | None = None,
    clean_windows: bool = True,
) -> list[TeacherAnalysis]:
    """``windows`` windows with findings of LOCAL_RULES (each rule in at most ``cap`` of them,
    at most ``per_file`` per file, so no rule dominates) and half as many clean windows of the
    same files, cut as the server cuts them for a local model (LOCAL_SYSTEM_PROMPT, ``budget``
    estimated tokens). Files in a stable pseudo-random order; whole windows, never edited.
    ``rules``: a subset of LOCAL_RULES (the teacher checks only these). ``quota``: instead of
    ``windows``, flagged windows per split of the product (``assign_splits`` of the files' URIs,
    what ``prepare-dataset`` splits on), e.g. enough held-out files for a small demo."""
    paths = source_files(root)
    chosen = {r: s for r, s in LOCAL_RULES.items() if rules is None or r in rules}
    findings = ruff_findings(paths, chosen)
    order = sorted((p for p in paths if findings[p.resolve()]), key=lambda p: _stable(str(p)))
    rng = random.Random(0)
    split_of = assign_splits({uri(str(p.relative_to(root))) for p in order})
    wanted = dict(quota) if quota else {"all": windows}
    per_rule: dict[str, int] = {}
    flagged: list[TeacherAnalysis] = []
    clean: list[TeacherAnalysis] = []
    for path in order:
        if all(n <= 0 for n in wanted.values()):
            break
        name = str(path.relative_to(root))
        split = split_of[uri(name)] if quota else "all"
        if wanted.get(split, 0) <= 0:
            continue
        code = path.read_text(encoding="utf-8", errors="replace")
        found = findings[path.resolve()]
        cut = analyses(name, code, found, budget=budget, system=LOCAL_SYSTEM_PROMPT)
        taken = 0
        for window in cut:
            codes = {c for c in _codes(window) if c}
            if not codes or taken >= per_file or any(per_rule.get(c, 0) >= cap for c in codes):
                continue
            if wanted[split] <= 0:
                break
            wanted[split] -= 1
            for c in codes:
                per_rule[c] = per_rule.get(c, 0) + 1
            flagged.append(window)
            taken += 1
        empty = [w for w in cut if not w.answer.issues]
        if taken and empty and clean_windows:
            clean += rng.sample(empty, min(len(empty), max(1, taken // 2)))
    return flagged + clean[: (len(flagged) if quota else windows) // 2]


def uri(name: str) -> str:
    """The document URI an analysis of ``name`` is recorded with (the split's key)."""
    return f"file:///site-packages/{name}"


def rule_code_messages(window: TeacherAnalysis) -> TeacherAnalysis:
    """The window with each issue's message shortened to its rule code (``B905``): shorter
    answers to learn and to decode, as bench/quality_curve.py measured; snippets unchanged."""
    issues = [
        issue.model_copy(update={"message": code, "suggested_fixes": None})
        for issue, code in zip(window.answer.issues, _codes(window), strict=True)
    ]
    answer = window.answer.model_copy(update={"issues": issues})
    return TeacherAnalysis(window.name, window.system, window.user, answer)


def _codes(window: TeacherAnalysis) -> list[str]:
    """The rule codes of a window's answer (each message ends with ``(CODE)``)."""
    return [i.message.rsplit("(", 1)[-1].rstrip(")") for i in window.answer.issues]


def record(path: Path, chosen: list[TeacherAnalysis]) -> None:
    """Each analysis as our span, via the OTel SDK and our file exporter."""
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor

    from ai_lsp_tune.traces import genai
    from ai_lsp_tune.traces.exporter import OtlpJsonFileSpanExporter

    provider = TracerProvider(resource=Resource.create({"service.name": "ai-lsp-lint-teacher"}))
    provider.add_span_processor(BatchSpanProcessor(OtlpJsonFileSpanExporter(path)))
    tracer = provider.get_tracer(genai.INSTRUMENTATION_SCOPE)
    for analysis in chosen:
        attributes = genai.analysis_attributes(
            genai.AnalysisRecord(
                model=TEACHER_MODEL,
                provider="ruff",
                system=analysis.system,
                user=analysis.user,
                output=analysis.answer.to_json(),
                valid=True,
                document_uri=uri(analysis.name),
                language="python",
                document_name=analysis.name,
            )
        )
        with tracer.start_as_current_span(genai.ANALYSIS_SPAN_NAME, attributes=attributes):
            pass
    provider.shutdown()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--files", type=int, default=80, help="files with findings to use")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--local",
        type=int,
        metavar="WINDOWS",
        help="instead: WINDOWS flagged windows of LOCAL_RULES (balanced) and half as many clean",
    )
    parser.add_argument("--cap", type=int, default=12, help="--local: windows per rule")
    parser.add_argument("--rules", help="--local: a comma-separated subset of LOCAL_RULES")
    parser.add_argument(
        "--quota",
        metavar="TRAIN,VALID,TEST",
        help="--local: instead of WINDOWS, flagged windows per split of prepare-dataset",
    )
    parser.add_argument("--per-file", type=int, default=3, help="--local: flagged windows a file")
    parser.add_argument("--no-clean", action="store_true", help="--local: flagged windows only")
    parser.add_argument(
        "--rule-code-messages", action="store_true", help="--local: each message its rule code"
    )
    parser.add_argument("--output", type=Path, default=TRACES / "lint-teacher-otel.jsonl")
    args = parser.parse_args()
    root = Path(sysconfig.get_paths()["purelib"])
    rules = args.rules.split(",") if args.rules else None
    quota = None
    if args.quota:
        quota = dict(zip(("train", "valid", "test"), map(int, args.quota.split(",")), strict=True))
    chosen = (
        choose_local(
            root,
            args.local,
            cap=args.cap,
            per_file=args.per_file,
            rules=rules,
            quota=quota,
            clean_windows=not args.no_clean,
        )
        if args.local
        else choose(root, args.files, args.seed)
    )
    if args.rule_code_messages:
        chosen = [rule_code_messages(window) for window in chosen]
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.unlink(missing_ok=True)  # the exporter appends
    record(args.output, chosen)
    files = len({a.name for a in chosen})
    clean = sum(not a.answer.issues for a in chosen)
    issues = sum(len(a.answer.issues) for a in chosen)
    print(
        f"wrote {len(chosen)} analyses of {files} files ({clean} with no issue, "
        f"{issues} issues) to {args.output}"
    )


if __name__ == "__main__":
    main()
