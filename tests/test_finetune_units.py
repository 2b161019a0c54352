"""The fine-tune job's pure parts: progress mapping and text, argument paths, states, records."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from ai_lsp_tune.server.finetune.context import PathNotAllowed, resolve_allowed_path
from ai_lsp_tune.server.finetune.progress import (
    ProgressMeter,
    ProgressStep,
    describe_change,
    format_progress,
)
from ai_lsp_tune.server.finetune.states import (
    FinetuneStatus,
    InvalidTransition,
    JobState,
    RecordFile,
    RunRecord,
    check_transition,
    load_record,
    save_record,
)
from ai_lsp_tune.training.readout import format_eta, format_rate

PHASES = ["loading", "evaluating", "training", "evaluating", "fusing"]


@st.composite
def worker_runs(draw: st.DrawFn) -> list[ProgressStep]:
    """Worker event sequences as B's worker may send them: any phase order, noisy counters."""
    steps = []
    for phase in draw(st.lists(st.sampled_from(PHASES), min_size=1, max_size=8)):
        total = draw(st.integers(1, 50))
        for it in draw(st.lists(st.integers(0, total), max_size=6)):
            with_fraction = draw(st.booleans())
            fraction = draw(st.floats(0, 1)) if with_fraction else None
            steps.append(ProgressStep(phase, iteration=it, total=total, fraction=fraction))
    return steps


@given(worker_runs())
def test_percentage_never_goes_back_and_ends_at_100(steps: list[ProgressStep]) -> None:
    meter = ProgressMeter()
    seen = [meter.preparing(0.0), meter.preparing(1.0)]
    seen += [meter.worker(step) for step in steps]
    seen += [meter.swapping(0.0), meter.swapping(1.0), meter.finish()]
    assert seen == sorted(seen)
    assert all(0 <= p <= 100 for p in seen)
    assert seen[-1] == 100 and max(seen[:-1]) < 100  # 100% only when it is really done


def test_training_fills_most_of_the_bar() -> None:
    meter = ProgressMeter()
    start = meter.worker(ProgressStep("training", iteration=0, total=60))
    half = meter.worker(ProgressStep("training", iteration=30, total=60))
    end = meter.worker(ProgressStep("training", iteration=60, total=60))
    assert start < half < end
    assert end - start >= 50


def test_worker_fraction_wins_over_phase_guess() -> None:
    meter = ProgressMeter()
    assert meter.worker(ProgressStep("evaluating", fraction=0.5)) == 47  # 5 + 85 * 0.5


@pytest.mark.parametrize(
    ("seconds", "text"),
    [(0, "ETA 0 s"), (41.2, "ETA 42 s"), (180, "ETA 3 min"), (3900, "ETA 1 h 5 min")],
)
def test_eta_reads_like_a_person_says_it(seconds: float, text: str) -> None:
    assert format_eta(seconds) == text


@pytest.mark.parametrize(("rate", "text"), [(850.4, "850 tok/s"), (1234.0, "1.2k tok/s")])
def test_rate(rate: float, text: str) -> None:
    assert format_rate(rate) == text


def test_progress_message_carries_the_percentage_first() -> None:
    step = ProgressStep(
        "training", iteration=2, total=3, train_loss=0.843, tokens_per_sec=1200, eta_s=170
    )
    assert format_progress(42, step) == "42% · training 2/3 · loss 0.84 · 1.2k tok/s · ETA 3 min"
    assert format_progress(3, ProgressStep("preparing", note="12 examples")) == (
        "3% · preparing · 12 examples"
    )


def test_progress_goes_out_as_fields_beside_its_line() -> None:
    """The editors show ``value.aiLsp``; none reads "2/3" or "0.84" back out of the message."""
    from types import SimpleNamespace

    from ai_lsp_tune.server.finetune.progress import ProgressChannel, progress_fields

    step = ProgressStep(
        "training", iteration=2, total=3, train_loss=0.843, tokens_per_sec=1200, eta_s=170
    )
    message = format_progress(42, step)
    sent: list[object] = []
    progress = SimpleNamespace(report=lambda token, value: sent.append(value))
    channel = ProgressChannel(SimpleNamespace(work_done_progress=progress), "t", "Fine-tune")
    channel.uses_work_done_progress = True
    fields = progress_fields(42, step, message)
    channel.report(42, message, phase="training", fields=fields, cancellable=False)
    assert sent == [
        {
            "kind": "report",
            "message": message,
            "percentage": 42,
            "cancellable": False,
            "aiLsp": {
                "phase": "training",
                "percent": 42,
                "step": 2,
                "totalSteps": 3,
                "loss": 0.843,
                "tokensPerSecond": 1200,
                "etaSeconds": 170,
                "message": message,
            },
        }
    ]
    preparing = progress_fields(3, ProgressStep("preparing", note="12 examples"), "3% · …")
    assert preparing == {
        "phase": "preparing",
        "percent": 3,
        "note": "12 examples",
        "message": "3% · …",
    }


def test_no_eta_once_training_reached_its_last_step() -> None:
    step = ProgressStep("training", iteration=112, total=112, train_loss=0.1, eta_s=23)
    assert format_progress(85, step) == "85% · training 112/112 · loss 0.10"


def test_metrics_change_is_described_before_to_after() -> None:
    before = {"valid_json_rate": 0.0, "snippet_f1": 0.1, "val_loss": 6.0, "n": 8}
    after = {"valid_json_rate": 0.95, "snippet_f1": 0.72, "val_loss": 1.25, "n": 8}
    text = describe_change(before, after)
    assert "valid JSON 0% → 95%" in text
    assert "snippet F1 0.10 → 0.72" in text
    assert "val loss 6.00 → 1.25" in text
    assert text.endswith("(8 test examples)")
    assert describe_change(None, None) == "No evaluation metrics were recorded."


# --- argument paths --------------------------------------------------------------------------
@pytest.fixture
def roots(tmp_path: Path) -> tuple[Path, Path]:
    workspace, data = tmp_path / "ws", tmp_path / "data"
    (workspace / "traces").mkdir(parents=True)
    data.mkdir()
    return workspace, data


@pytest.mark.parametrize(
    "arg",
    ["traces/a.jsonl", "{ws}/traces/a.jsonl", "file://{ws}/traces/a%20b.jsonl", "{data}/m"],
)
def test_paths_inside_workspace_or_data_dir_are_accepted(
    roots: tuple[Path, Path], arg: str
) -> None:
    workspace, data = roots
    raw = arg.format(ws=workspace, data=data)
    path = resolve_allowed_path(raw, roots=[workspace, data], base=workspace)
    assert path.is_absolute()
    assert path.is_relative_to(workspace.resolve()) or path.is_relative_to(data.resolve())


@pytest.mark.parametrize("arg", ["/etc/passwd", "../outside.jsonl", "traces/../../x", "~/x", ""])
def test_paths_elsewhere_are_refused_with_the_reason(roots: tuple[Path, Path], arg: str) -> None:
    workspace, data = roots
    with pytest.raises(PathNotAllowed, match=r"outside the workspace|empty"):
        resolve_allowed_path(arg, roots=[workspace, data], base=workspace)


def test_a_trace_file_outside_the_workspace_is_refused_naming_the_setting_that_takes_it(
    roots: tuple[Path, Path],
) -> None:
    """A command's paths are confined; the refusal says how to use the file anyway."""
    from ai_lsp_tune.server.settings import in_client_terms

    workspace, data = roots
    hint = "list it in aiLsp.finetune.extraTraces"
    with pytest.raises(PathNotAllowed) as refused:
        resolve_allowed_path(
            "/tmp/t.jsonl", roots=[workspace, data], base=workspace, elsewhere=hint
        )
    said = str(refused.value)
    assert f"is outside the workspace and the server's data dir; {hint}, or use a path" in said
    assert "list it in settings.finetune.extraTraces" in in_client_terms(said, "Neovim")


def test_a_symlink_out_of_the_workspace_is_refused(roots: tuple[Path, Path]) -> None:
    workspace, data = roots
    os.symlink("/etc", workspace / "etc-link")
    with pytest.raises(PathNotAllowed):
        resolve_allowed_path("etc-link/passwd", roots=[workspace, data], base=workspace)


def test_relative_path_without_workspace_is_refused(roots: tuple[Path, Path]) -> None:
    with pytest.raises(PathNotAllowed, match="no workspace folder"):
        resolve_allowed_path("a.jsonl", roots=[roots[1]], base=None)


# --- states and records ----------------------------------------------------------------------
@pytest.mark.parametrize(
    ("old", "new"),
    [
        (JobState.IDLE, JobState.PREPARING),
        (JobState.PREPARING, JobState.TRAINING),
        (JobState.TRAINING, JobState.SWAPPING),
        (JobState.TRAINING, JobState.REJECTED),
        (JobState.TRAINING, JobState.CANCELLING),
        (JobState.CANCELLING, JobState.CANCELLED),
        (JobState.SWAPPING, JobState.SUCCEEDED),
        (JobState.SWAPPING, JobState.FAILED),
        (JobState.FAILED, JobState.PREPARING),  # the next run works after a failure
    ],
)
def test_allowed_transitions(old: JobState, new: JobState) -> None:
    check_transition(old, new)


@pytest.mark.parametrize(
    ("old", "new"),
    [
        (JobState.TRAINING, JobState.PREPARING),  # a second run while one is active
        (JobState.SWAPPING, JobState.CANCELLING),  # a swap is not cancellable
        (JobState.IDLE, JobState.SUCCEEDED),
        (JobState.PREPARING, JobState.SWAPPING),  # never swap without training + gate
    ],
)
def test_impossible_transitions_are_refused(old: JobState, new: JobState) -> None:
    with pytest.raises(InvalidTransition):
        check_transition(old, new)


def test_record_round_trips_and_status_is_camel_case(tmp_path: Path) -> None:
    record = RunRecord(
        run_id="r1",
        state=JobState.SUCCEEDED,
        started_at=1.0,
        run_dir=str(tmp_path / "r1"),
        base_model="m",
        metrics_after={"valid_json_rate": 1.0},
        swapped=True,
    )
    path = tmp_path / "finetune" / "last_run.json"
    save_record(path, record)
    assert oct(path.stat().st_mode & 0o777) == "0o600"
    assert load_record(path) == record
    wire = FinetuneStatus(state=JobState.SUCCEEDED, last_run=record, served_model="m").wire()
    assert wire["lastRun"]["metricsAfter"] == {"valid_json_rate": 1.0}
    assert wire["servedModel"] == "m" and wire["state"] == "succeeded"


def test_unreadable_record_is_set_aside_with_a_warning(tmp_path: Path) -> None:
    path = tmp_path / "last_run.json"
    path.write_text("{not json")
    warnings: list[tuple[str, str]] = []
    assert RecordFile(path, lambda *shown: warnings.append(shown)).load() is None
    assert [level for level, _ in warnings] == ["warning"] and str(path) in warnings[0][1]
    assert [p.read_text() for p in tmp_path.glob("last_run.json.unreadable-*")] == ["{not json"]
    assert load_record(tmp_path / "missing.json") is None


def test_a_cancelled_worker_with_slow_steps_gets_time_to_save_its_checkpoint(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """A worker whose steps take 20 s (a big model, or low priority on a busy machine) is not
    killed 5 s after Cancel, which would lose the checkpoint it is about to save."""
    from ai_lsp_tune.training import runner as runner_module
    from ai_lsp_tune.training.protocol import TrainingEvent, TrainRequest

    clock = [1000.0]
    monkeypatch.setattr(runner_module.time, "monotonic", lambda: clock[0])
    request = TrainRequest(model_name="m", dataset=tmp_path, output_dir=tmp_path / "out")
    runner = runner_module.TrainingRunner(request)
    assert runner.cancel_grace_s() == runner_module.CANCEL_GRACE_S  # nothing known yet
    for iteration in range(1, 4):
        runner._deliver(TrainingEvent(iteration=iteration, total=10))
        clock[0] += 20.0
    assert runner.cancel_grace_s() == 60.0
    for iteration in range(4, 6):  # a stall is bounded: Cancel still ends the run
        runner._deliver(TrainingEvent(iteration=iteration, total=10))
        clock[0] += 3600.0
    assert runner.cancel_grace_s() == runner_module.MAX_CANCEL_GRACE_S


def test_no_thread_of_the_training_worker_can_take_its_stop_signals() -> None:
    """A native thread started at import (OpenBLAS's pool, numpy's, MLX's) that could take
    SIGTERM would apply its default action: Cancel would kill the worker instead of letting it
    save a checkpoint. OpenBLAS is asked for two threads so that it does start a pool."""
    import os
    import subprocess
    import sys

    script = (
        "import os, ai_lsp_tune.training.worker\n"
        "for task in sorted(os.listdir('/proc/self/task')):\n"
        "    status = open(f'/proc/self/task/{task}/status').read()\n"
        "    mask = next(l.split()[1] for l in status.splitlines() if l.startswith('SigBlk'))\n"
        "    print(task == str(os.getpid()), int(mask, 16))\n"
    )
    env = {**os.environ, "OPENBLAS_NUM_THREADS": "2"}
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=env)
    assert done.returncode == 0, done.stderr
    rows = [line.split() for line in done.stdout.splitlines()]
    stops = (1 << (15 - 1)) | (1 << (2 - 1))  # SIGTERM, SIGINT
    others = [int(mask) for is_main, mask in rows if is_main == "False"]
    assert all(mask & stops == stops for mask in others), f"threads that take SIGTERM: {rows}"


async def test_a_burst_of_progress_reports_ends_with_its_last_one_on_screen() -> None:
    """Reports closer than the coalescing interval are held, not dropped: a phase's outcome
    ("16 examples; 1 analysis ... left out") that follows a reading report at once is shown."""
    import asyncio
    from types import SimpleNamespace

    from ai_lsp_tune.server.finetune.progress import ProgressChannel

    sent: list[str] = []
    progress = SimpleNamespace(report=lambda token, value: sent.append(value.message))
    channel = ProgressChannel(SimpleNamespace(work_done_progress=progress), "t", "Fine-tune")
    channel.uses_work_done_progress = True
    channel.report(5, "preparing · reading traces", phase="preparing")
    channel.report(6, "preparing · reading traces 2", phase="preparing")
    channel.report(9, "preparing · 16 examples", phase="preparing")
    for _ in range(100):
        if sent[-1:] == ["preparing · 16 examples"]:
            break
        await asyncio.sleep(0.05)
    assert sent == ["preparing · reading traces", "preparing · 16 examples"]


async def test_progress_goes_on_when_the_client_answers_the_create_request_late() -> None:
    """Neovim at a "Press ENTER" prompt answers window/workDoneProgress/create only after the
    user presses Enter: the run still shows its progress (begin, reports, end), the request is
    not cancelled, and a cancel from the client afterwards still stops the run."""
    import asyncio
    from concurrent.futures import Future
    from types import SimpleNamespace

    from ai_lsp_tune.server.finetune.progress import ProgressChannel

    answer: asyncio.Future[None] = asyncio.get_running_loop().create_future()
    sent: list[tuple[str, str | None]] = []
    tokens: dict[str, Future[None]] = {}

    async def create_async(token: str) -> None:
        await answer  # the prompt is on screen
        tokens[token] = Future()

    progress = SimpleNamespace(
        tokens=tokens,
        create_async=create_async,
        begin=lambda token, value: (
            tokens.setdefault(token, Future()),
            sent.append(("begin", value.message)),
        ),
        report=lambda token, value: sent.append(("report", value.message)),
        end=lambda token, value: sent.append(("end", value.message)),
    )
    capabilities = SimpleNamespace(window=SimpleNamespace(work_done_progress=True))
    logged: list[str] = []
    link = SimpleNamespace(
        work_done_progress=progress,
        client_capabilities=capabilities,
        window_log_message=lambda params: logged.append(params.message),
        window_show_message=lambda params: logged.append(params.message),
    )
    cancelled: list[bool] = []
    channel = ProgressChannel(link, "t", "Fine-tune", on_cancel=lambda: cancelled.append(True))
    channel.CREATE_TIMEOUT_S = 0.05
    await channel.begin("0% · preparing")
    channel.report(40, "40% · training 2/5", phase="training")
    answer.set_result(None)  # Enter: the client answers now
    await asyncio.sleep(0.05)
    assert not answer.cancelled()
    tokens["t"].cancel()  # the user cancels from the editor's progress
    channel.end("100% · done")
    assert [kind for kind, _ in sent] == ["begin", "report", "end"], (sent, logged)
    assert cancelled == [True]


def test_the_status_of_a_run_whose_model_was_rolled_back_does_not_say_it_serves() -> None:
    from ai_lsp_tune.server.finetune.messages import status_line
    from ai_lsp_tune.server.finetune.states import JobState, RunRecord

    record = RunRecord(
        run_id="r1",
        state=JobState.SUCCEEDED,
        started_at=0.0,
        run_dir="/runs/r1",
        base_model="/models/base",
        candidate_model="/runs/r1/model",
        swapped=True,
        summary="100% · now serving the fine-tuned model (F1 0.10 → 0.50)",
    )
    serving_it = status_line(record, active=False, progress=None, serving="/runs/r1/model")
    assert "now serving the fine-tuned model" in serving_it
    after = status_line(record, active=False, progress=None, serving="/models/base")
    assert "now serving the fine-tuned model" not in after, after
    assert "no longer serves" in after and after.endswith("serving /models/base")


def test_the_status_of_a_cancelled_run_says_a_changed_setting_starts_the_next_fresh() -> None:
    """After a restart with other settings, the checkpoint is not resumed: the status says so
    (not "resumes from its checkpoint"), and names models, not their paths."""
    from ai_lsp_tune.server.finetune.messages import status_line

    record = RunRecord(
        run_id="r1",
        state=JobState.CANCELLED,
        started_at=0.0,
        run_dir="/runs/r1",
        base_model="/models/base",
        resumable=True,
        summary="Fine-tune cancelled at 40%; the next run resumes from its checkpoint",
    )
    names = {"/models/base": "base (base model)"}.get
    kept = status_line(record, False, None, "/models/base", lambda p: names(p) or "?")
    assert "resumes from its checkpoint" in kept and kept.endswith("serving base (base model)")
    changed = "the settings changed since the cancelled run (learningRate 0.001 → 0.0005)"
    fresh = status_line(record, False, None, "/models/base", starts_fresh=changed)
    assert "resumes from its checkpoint" not in fresh
    assert f"cancelled: the next run starts fresh, as {changed}" in fresh


def test_why_a_run_starts_fresh_comes_before_its_run_id_and_path(tmp_path: Path) -> None:
    from ai_lsp_tune.server.finetune.messages import started_message

    record = RunRecord(
        run_id="20261203-080102-3fa2", state=JobState.PREPARING, started_at=1.0,
        run_dir=str(tmp_path / "r2"), base_model="/models/tiny-model",
    )  # fmt: skip
    why = "the settings changed since the cancelled run (numLayers 16 → 2)"
    fresh = started_message(record, resumed=False, fresh_because=why)
    assert fresh.startswith("The settings changed since the cancelled run (numLayers 16 → 2), ")
    assert "starting fresh" in fresh and fresh.index("starting fresh") < fresh.index(record.run_id)
    resumed = started_message(record, resumed=True, fresh_because=None)
    assert resumed.startswith(f"Resuming fine-tune {record.run_id} from ")


def test_the_gate_names_the_metric_that_decided_with_its_interval() -> None:
    from ai_lsp_tune.server.finetune.messages import deciding_metric

    after = {
        "issue_f1": 0.35, "f1_difference": -0.05, "f1_difference_low": -0.12,
        "f1_difference_high": 0.02, "snippet_f1": 0.5, "val_loss": 1.2,
    }  # fmt: skip
    assert deciding_metric(after) == "issue F1 0.35 (change -0.05, 95% CI -0.12..+0.02)"
    assert deciding_metric({"issue_f1": 0.6}) == "issue F1 0.60"
    assert deciding_metric(None) == "no issue F1 measured"
