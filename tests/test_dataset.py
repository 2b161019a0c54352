"""prepare-dataset: from the server's own spans (and the real trace file) to a split dataset."""

from __future__ import annotations

import json
import stat
from pathlib import Path

import pytest
from typer.testing import CliRunner

from ai_lsp_tune.cli.app import app
from ai_lsp_tune.dataset.example import Example
from ai_lsp_tune.dataset.prepare import NoUsableTraces, prepare_dataset
from ai_lsp_tune.dataset.reader import assign_splits, load_examples
from ai_lsp_tune.prompts import LOCAL_SYSTEM_PROMPT, SYSTEM_PROMPT, parse_user_prompt, user_prompt
from ai_lsp_tune.traces.otlp import ReadReport, read_spans
from tests.helpers.recorded_traces import TraceFacts
from tests.helpers.trace_recorder import (
    CODE,
    FAR_APART,
    FAR_APART_ANSWER,
    Recorder,
    answer,
    issue,
)

AWS_KEY = "AKIAIOSFODNN7EXAMPLE"
PASSWORD = "s3cr3t-hunter2"


@pytest.fixture
def recorder(tmp_path: Path):
    rec = Recorder(tmp_path / "traces" / "ai-lsp-otel.jsonl")
    yield rec
    rec.close()


def prepare(tmp_path: Path, **kwargs) -> tuple:
    report = prepare_dataset(
        [tmp_path / "traces"],
        output_file=tmp_path / "out" / "dataset.json",
        output_dir=tmp_path / "out" / "dataset",
        **kwargs,
    )
    rows = [json.loads(line) for line in (tmp_path / "out" / "dataset.json").open()]
    return report, rows


def test_cleaning_steps_each_counted(tmp_path: Path, recorder: Recorder) -> None:
    recorder.analysis(output=answer(issue("len(xs)")))  # kept as is
    recorder.analysis(output=None)  # cancelled while the user typed
    recorder.analysis(output=answer(issue("len(xs)")), failed=True)
    recorder.analysis(output='{"issue": []}')  # not a DiagnosticResult
    mixed = recorder.analysis(
        code=CODE + "x = 1\n",
        output=answer(issue("sum(xs)"), issue("no_such_call()"), issue("x = 1")),
    )
    recorder.dismissed(mixed, "x = 1")
    recorder.analysis(code=CODE + "y = 2\n", output=answer(issue("not in the code")))
    recorder.analysis(code="pass\n", output=answer())  # no issues found: a valid lesson too

    report, rows = prepare(tmp_path)

    assert report.agent_runs == 7
    assert (report.no_final_result, report.error_status, report.invalid_result) == (1, 1, 1)
    assert report.with_final_result == 5
    assert (report.issues_dismissed, report.issues_ungrounded) == (1, 2)
    assert report.dropped_ungrounded == 1  # every issue misplaced: nothing left to learn
    assert report.examples == len(rows) == 3
    targets = [json.loads(row["assistant"])["issues"] for row in rows]
    assert targets == [[issue("len(xs)")], [issue("sum(xs)")], []]
    # recorded with the original prompt, rendered with the one a local model is served with
    assert {row["system"] for row in rows} == {LOCAL_SYSTEM_PROMPT}
    assert rows[0]["metadata"]["file"] == "file:///project/stats.py"
    stats = json.loads((tmp_path / "out" / "dataset" / "stats.json").read_text())
    assert stats["examples"] == 3 and stats["issues_ungrounded"] == 2


def test_duplicates_compare_parsed_content_not_bytes(tmp_path: Path, recorder: Recorder) -> None:
    recorder.analysis(output=answer(issue("len(xs)")))
    recorder.analysis(output=answer(issue("len(xs)"), spaced=True))  # 0.x wrote spaced JSON
    recorder.analysis(output=answer(issue("sum(xs)")))
    report, rows = prepare(tmp_path)
    assert (report.duplicates, report.examples, len(rows)) == (1, 2, 2)


def test_unpaired_surrogate_is_counted_and_the_rest_kept(
    tmp_path: Path, recorder: Recorder
) -> None:
    # "\\ud800" is valid JSON but no UTF-8 file can hold what it decodes to.
    recorder.analysis(code="x = 1  # \ud800\n", output=answer(issue("x = 1")))
    recorder.analysis(output=answer(issue("len(xs)")))
    report, rows = prepare(tmp_path)
    assert (report.invalid_text, report.usable, report.examples) == (1, 1, 1)
    assert json.loads(rows[0]["assistant"])["issues"] == [issue("len(xs)")]


def test_fenced_answer_becomes_a_plain_json_target(tmp_path: Path, recorder: Recorder) -> None:
    # A local model may wrap its JSON in a ```json fence; the server accepts that, and so does
    # the dataset, teaching the bare JSON.
    recorder.analysis(output="```json\n" + answer(issue("len(xs)"), spaced=True) + "\n```")
    report, rows = prepare(tmp_path)
    assert (report.invalid_result, report.examples) == (0, 1)
    assert rows[0]["assistant"] == answer(issue("len(xs)"))


def test_dataset_lines_are_json_as_pydantic_writes_it(tmp_path: Path, recorder: Recorder) -> None:
    # Quotes, backslashes, control characters, accents, emoji, a line separator, DEL.
    code = 'msg = "tab\there \\ é ● 😀 \u2028 \x7f \x1f"\nx = 1\n'
    recorder.analysis(code=code, output=answer(issue("x = 1", 'Say "why" ●')))
    prepare(tmp_path)
    line = (tmp_path / "out" / "dataset.json").read_text(encoding="utf-8").split("\n")[0]
    example = Example.model_validate_json(line)
    assert code in example.user
    assert example.model_dump_json() == line
    chat = (tmp_path / "out" / "dataset" / "train.jsonl").read_text(encoding="utf-8")
    assert chat == json.dumps({"messages": example.messages()}, ensure_ascii=False) + "\n"


def test_secrets_redacted_the_same_in_prompt_and_answer(tmp_path: Path, recorder: Recorder) -> None:
    code = f'AWS_KEY = "{AWS_KEY}"\ndb_password = "{PASSWORD}"\nconnect(AWS_KEY, db_password)\n'
    recorder.analysis(
        code=code,
        output=answer(issue(PASSWORD, f"Hard-coded password {PASSWORD}."), issue(AWS_KEY)),
    )

    report, rows = prepare(tmp_path)

    assert (report.secrets_redacted, report.examples_redacted) == (2, 1)
    (row,) = rows
    snippets = [i["issue_snippet"] for i in json.loads(row["assistant"])["issues"]]
    assert len(snippets) == 2  # both still grounded: the same placeholder in code and answer
    assert all(s.startswith("REDACTED_") and s in row["user"] for s in snippets)
    for path in (tmp_path / "out").rglob("*"):
        if path.is_file():
            text = path.read_text()
            assert AWS_KEY not in text and PASSWORD not in text, path

    report, rows = prepare(tmp_path, redact=False)
    assert report.secrets_redacted == 0 and PASSWORD in rows[0]["user"]


def test_split_by_source_file_is_deterministic_and_disjoint(
    tmp_path: Path, recorder: Recorder
) -> None:
    for n in range(40):
        for variant in range(3):
            code = f"def f{n}_{variant}(xs):\n    return sum(xs) / len(xs)\n"
            recorder.analysis(code=code, output=answer(issue("len(xs)")), uri=f"file:///p/m{n}.py")

    report, _ = prepare(tmp_path)
    first = {s: (tmp_path / "out" / "dataset" / f"{s}.jsonl").read_bytes() for s in report.splits}
    report_again, _ = prepare(tmp_path)
    again = {s: (tmp_path / "out" / "dataset" / f"{s}.jsonl").read_bytes() for s in report.splits}

    assert first == again and report.splits == report_again.splits
    assert sum(report.splits.values()) == 120 and all(report.splits.values())
    files_by_split = {
        split: {ex.user.rsplit("File: ", 1)[1] for ex in examples}
        for split, examples in load_examples(tmp_path / "out" / "dataset").items()
    }
    assert not files_by_split["train"] & files_by_split["valid"]
    assert not files_by_split["train"] & files_by_split["test"]
    assert not files_by_split["valid"] & files_by_split["test"]
    # dataset.json splits the same way when `train` is given the original format.
    from_json = load_examples(tmp_path / "out" / "dataset.json")
    assert {s: len(v) for s, v in from_json.items()} == report.splits


def test_split_of_a_file_does_not_move_when_other_files_arrive() -> None:
    files = {f"file:///p/m{n}.py" for n in range(50)}
    before = assign_splits(files)
    after = assign_splits(files | {f"file:///p/new{n}.py" for n in range(50)})
    assert all(after[f] == before[f] for f in files)
    assert set(assign_splits({"a.py", "b.py"}).values()) == {"train", "valid"}


def split_rows(tmp_path: Path) -> list[dict]:
    folder = tmp_path / "out" / "dataset"
    return [
        {m["role"]: m["content"] for m in json.loads(line)["messages"]}
        for name in ("train.jsonl", "valid.jsonl", "test.jsonl")
        for line in (folder / name).open()
    ]


def test_long_examples_are_cropped_to_windows_around_their_issues(
    tmp_path: Path, recorder: Recorder
) -> None:
    recorder.analysis(output=answer(issue("len(xs)")))
    recorder.analysis(code=FAR_APART, output=FAR_APART_ANSWER, uri="file:///p/long.py")
    report, rows = prepare(tmp_path, max_seq_length=1024)
    # dataset.json keeps both examples whole; the long one became two windows in the splits
    assert (report.examples, report.over_max_seq_length, len(rows)) == (2, 1, 2)
    assert (report.cropped, report.crop_windows, report.too_long_to_crop) == (1, 2, 0)
    assert sum(report.splits.values()) == 3
    assert report.longest_tokens > 1024
    windows = [r for r in split_rows(tmp_path) if "long.py" in r["user"]]
    heads = sorted(r["user"].rsplit("File: ", 1)[1] for r in windows)
    assert heads[0].startswith("long.py (lines 1-") and heads[1].endswith(" of 1805)")
    for row in windows:
        code = parse_user_prompt(row["user"]).code
        held = json.loads(row["assistant"])["issues"]
        assert len(held) == 1 and held[0]["issue_snippet"] in code
        assert code.startswith("def ")  # cut before a top-level definition


def test_an_issue_larger_than_the_limit_is_left_out_and_counted(
    tmp_path: Path, recorder: Recorder
) -> None:
    recorder.analysis(output=answer(issue("len(xs)")))
    huge = "x = [" + ", ".join(str(n) for n in range(2000)) + "]\n"
    recorder.analysis(code=huge, output=answer(issue(huge.strip())), uri="file:///p/huge.py")
    clean_long = "".join(f"v{n} = {n}\n" for n in range(2000))
    recorder.analysis(code=clean_long, output=answer(), uri="file:///p/clean.py")
    report, _ = prepare(tmp_path, max_seq_length=1024)
    assert (report.over_max_seq_length, report.cropped, report.too_long_to_crop) == (2, 1, 1)
    (clean,) = [r for r in split_rows(tmp_path) if "clean.py" in r["user"]]
    assert "File: clean.py (lines 1-" in clean["user"]  # a clean file: its first window
    assert json.loads(clean["assistant"]) == {"issues": []}


def test_exact_token_counts_with_the_models_tokenizer(
    tmp_path: Path, recorder: Recorder, tiny_model: Path
) -> None:
    recorder.analysis(output=answer(issue("len(xs)")))
    estimated, _ = prepare(tmp_path)
    exact, _ = prepare(tmp_path, tokenizer=str(tiny_model))
    assert exact.token_counter == str(tiny_model)
    assert exact.longest_tokens > 0 and exact.longest_tokens != estimated.longest_tokens


def test_outputs_private_and_a_failed_run_keeps_earlier_outputs(
    tmp_path: Path, recorder: Recorder
) -> None:
    recorder.analysis(output=answer(issue("len(xs)")))
    prepare(tmp_path)
    out = tmp_path / "out"
    for path in [out / "dataset.json", *(out / "dataset").iterdir()]:
        assert stat.S_IMODE(path.stat().st_mode) == 0o600, path
    before = {p: p.read_bytes() for p in out.rglob("*") if p.is_file()}

    (tmp_path / "traces" / "ai-lsp-otel.jsonl").write_text("garbage\n")
    with pytest.raises(NoUsableTraces, match="No OTLP trace data"):
        prepare(tmp_path)
    assert {p: p.read_bytes() for p in out.rglob("*") if p.is_file()} == before
    assert not [p for p in tmp_path.rglob(".*") if p.name != ".hypothesis"]  # no temp left


def test_refuses_to_replace_a_folder_holding_other_files(
    tmp_path: Path, recorder: Recorder
) -> None:
    recorder.analysis(output=answer(issue("len(xs)")))
    (tmp_path / "out" / "dataset").mkdir(parents=True)
    (tmp_path / "out" / "dataset" / "thesis.tex").write_text("precious")
    with pytest.raises(ValueError, match="holds other files"):
        prepare(tmp_path)
    assert (tmp_path / "out" / "dataset" / "thesis.tex").read_text() == "precious"


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b"", "No OTLP trace data found"),
        (b"id,name\n1,x\n", "No OTLP trace data found"),
        (
            b'{"resourceSpans": [{"scopeSpans": [{"spans": [{"name": "GET /"}]}]}]}\n',
            "no agent run",
        ),
    ],
)
def test_cli_exit_code_2_and_one_clear_message(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, content: bytes, message: str
) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "traces.jsonl").write_bytes(content)
    result = CliRunner().invoke(app, ["finetune", "prepare-dataset", "traces.jsonl"])
    assert result.exit_code == 2
    assert message in result.output
    assert "Traceback" not in result.output
    assert not (tmp_path / "dataset.json").exists()


def test_cli_leaves_out_the_local_models_own_answers_unless_a_fix_from_them_was_applied(
    tmp_path: Path, recorder: Recorder, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    recorder.analysis(output=answer(issue("len(xs)")))  # the teacher (remote backend)
    own = {"provider": "mlx"}  # what this server records for its local model host
    recorder.analysis(code="pass\n", output=answer(), uri="file:///project/empty.py", **own)
    unconfirmed = CODE + "x = 1\n"
    recorder.analysis(code=unconfirmed, output=answer(issue("x = 1")), uri="file:///p/x.py", **own)
    confirmed = recorder.analysis(
        code=CODE + "y = 2\n", output=answer(issue("y = 2")), uri="file:///project/y.py", **own
    )
    recorder.fix_applied(confirmed, "y = 2")  # the user took its quick fix

    def run(*flags: str) -> tuple[str, list[dict]]:
        result = CliRunner().invoke(app, ["finetune", "prepare-dataset", "traces", *flags])
        assert result.exit_code == 0, result.output
        rows = [json.loads(line) for line in (tmp_path / "dataset.json").open()]
        return " ".join(result.output.split()), rows

    said, rows = run()
    assert (
        "2 analyses answered by the local model left out; pass --include-local-answers to "
        "keep them" in said
    )
    assert [json.loads(r["assistant"])["issues"] for r in rows] == [
        [issue("len(xs)")],  # the teacher's answer
        [issue("y = 2")],  # the local model's, confirmed by the fix applied
    ]
    stats = json.loads((tmp_path / "dataset" / "stats.json").read_text())
    assert (stats["local_answers_left_out"], stats["local_answers_confirmed"]) == (2, 1)

    said, rows = run("--include-local-answers")
    assert len(rows) == 4 and "left out;" not in said

    # Only the local model's own answers: nothing to learn, and the error says why and how.
    own_only = Recorder(tmp_path / "own" / "ai-lsp-otel.jsonl")
    own_only.analysis(output=answer(), **own)
    own_only.close()
    result = CliRunner().invoke(app, ["finetune", "prepare-dataset", "own"])
    assert result.exit_code == 2
    said = " ".join(result.output.split())
    assert "All 1 usable analyses were answered by the local model" in said
    assert "pass --include-local-answers to keep them" in said
    assert "Traceback" not in result.output


def test_cli_missing_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    result = CliRunner().invoke(app, ["finetune", "prepare-dataset", "nope.jsonl"])
    assert result.exit_code == 2
    assert "trace file not found: nope.jsonl" in result.output


def test_trace_file_through_the_cli(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, trace_file: TraceFacts
) -> None:
    from ai_lsp_tune.dataset import pool

    # Cut into chunks read by worker processes, as a large file is.
    monkeypatch.setattr(pool, "CHUNK_BYTES", trace_file.chunk_bytes)
    monkeypatch.setattr(pool, "PARALLEL_MIN_BYTES", 0)
    monkeypatch.chdir(tmp_path)
    result = CliRunner().invoke(
        app, ["finetune", "prepare-dataset", str(trace_file.path), "--no-redact"]
    )
    assert result.exit_code == 0, result.output
    stats = json.loads((tmp_path / "dataset" / "stats.json").read_text())
    assert stats["agent_runs"] == trace_file.agent_runs
    assert stats["no_final_result"] == trace_file.agent_runs - trace_file.finished  # cancelled
    assert stats["with_final_result"] == trace_file.finished
    assert stats["scrubbed"] == trace_file.scrubbed  # logfire replaced a whole prompt
    # the original LSP logged "Could not find snippet" twice
    assert stats["issues_ungrounded"] == trace_file.ungrounded
    assert stats["examples"] == trace_file.examples
    assert f"{trace_file.agent_runs}" in result.output and "agent runs" in result.output
    # Each target is the span's final_result, less the issues the LSP could not place.
    spans = {s.span_id: s for s in read_spans([trace_file.path], ReadReport())}
    exact = 0
    for line in (tmp_path / "dataset.json").open():
        row = json.loads(line)
        final = json.loads(spans[row["metadata"]["span_id"]].attributes["final_result"])
        target = json.loads(row["assistant"])
        assert all(i in final["issues"] for i in target["issues"])
        exact += target == final
    assert exact == trace_file.exact


def test_original_tools_dataset_json_splits_by_file_name(tmp_path: Path) -> None:
    rows = [
        {
            "system": SYSTEM_PROMPT,
            "user": user_prompt("python", CODE, f"m{n % 7}.py"),
            "assistant": answer(),
        }
        for n in range(30)
    ]
    path = tmp_path / "dataset.json"
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    splits = load_examples(path)
    assert splits == load_examples(path)
    assert sum(len(v) for v in splits.values()) == 30 and splits["train"] and splits["valid"]
    names = {s: {e.source_file() for e in v} for s, v in splits.items()}
    assert not names["train"] & names["valid"] and not names["train"] & names["test"]
