"""Fine-tune on my traces, from the editor: the real server process, the tiny local model.

The story: a session with a (scripted) remote teacher records its analyses in the server's own
trace export; the user switches to the tiny local model, runs "Fine-tune on my traces", watches
the progress, and the server swaps in a model that now finds what the teacher found.
"""

from __future__ import annotations

import os
import re
import signal
from pathlib import Path
from typing import Any

import pytest
from lsprotocol import types
from pygls.exceptions import JsonRpcException
from pytest_lsp.client import DEFAULT_CLIENT_FEATURES

from ai_lsp_tune import paths
from ai_lsp_tune.server import commands
from ai_lsp_tune.traces.telemetry import TRACE_FILE_NAME
from tests.helpers.finetune_story import (
    FLAW,
    LEARN,
    QUICK,
    Student,
    analysis_models,
    source_file,
    start_student,
    student_settings,
    worker_pids,
)
from tests.helpers.lsp_session import stop_session

pytestmark = [pytest.mark.training, pytest.mark.model]
TRAINING_STEP = re.compile(r"training (\d+)/")
record_progress = DEFAULT_CLIENT_FEATURES[types.PROGRESS]


def check_progress(reports: list[Any]) -> list[int]:
    """begin -> reports -> end in order; percentages never go back; each message starts with it."""
    assert isinstance(reports[0], types.WorkDoneProgressBegin)
    assert reports[0].cancellable is True
    assert isinstance(reports[-1], types.WorkDoneProgressEnd)
    middle = reports[1:-1]
    assert middle and all(isinstance(r, types.WorkDoneProgressReport) for r in middle)
    percentages = [r.percentage for r in middle]
    assert percentages == sorted(percentages), percentages
    for report in middle:
        assert report.message.startswith(f"{report.percentage}% · "), report.message
    return percentages


async def refused(student: Student, command: str, *args: Any) -> str:
    with pytest.raises(JsonRpcException) as info:
        await student.command(command, *args)
    return str(info.value)


async def test_fine_tune_on_own_traces_swaps_in_a_model_that_learned(
    taught_workspace: Path, isolated_home: Path, tiny_model: Path
) -> None:
    workspace = taught_workspace
    student = await start_student(workspace, isolated_home, tiny_model, **LEARN)
    try:
        # (No analysis by the tiny model before the fine-tune: under the answer grammar its
        # empty answer is recorded, valid, but left out of the dataset; tested below.)
        started = await student.command(commands.FINETUNE)
        token = started["progressToken"]
        assert started["state"] == "preparing"  # answered at once; the work goes on

        during = await student.wait_status(
            lambda s: s["state"] == "training" and s["phase"] == "training",
            timeout_s=120,
            what="training to start",
        )
        assert during["progress"]["message"].startswith(f"{during['progress']['percentage']}%")
        assert during["progress"]["fields"]["phase"] == "training"
        assert "in progress" in await refused(student, commands.FINETUNE)

        reports = await student.wait_ended(token, timeout_s=240)
        percentages = check_progress(reports)
        assert any("training" in r.message and "loss" in r.message for r in reports[1:-1])
        assert percentages[-1] >= 90
        assert "now serving the fine-tuned model" in reports[-1].message
        # The same facts as fields, which the editors show without reading the message.
        sent = student.session.progress_values[token]
        fields = [value["aiLsp"] for value in sent]
        assert [f["percent"] for f in fields[1:-1]] == percentages
        assert all(f["message"] == v["message"] for f, v in zip(fields, sent, strict=True))
        training = [f for f in fields if f["phase"] == "training" and "step" in f]
        assert training and all(f["totalSteps"] >= f["step"] for f in training)
        assert any("loss" in f for f in training)
        assert fields[-1]["outcome"] == "now serving the fine-tuned model"
        # Cancel is offered while it can stop the run, not during the swap.
        swapping = [r for r in reports[1:-1] if "swapping" in r.message]
        assert swapping and all(r.cancellable is False for r in swapping)
        assert all(r.cancellable for r in reports[1:-1] if "swapping" not in r.message)

        status = await student.status()
        run = status["lastRun"]
        assert status["state"] == "succeeded" and run["swapped"] is True
        # The swap's summary outlives its toast: the status (VS Code's status-bar click) has it.
        assert "snippet F1 0.00 → 1.00" in status["message"] and "snippet F1" in run["summary"]
        assert status["servedModel"] == run["candidateModel"] != str(tiny_model)
        assert status["previousModel"] == str(tiny_model)
        before, after = run["metricsBefore"], run["metricsAfter"]
        # Decoded as served, under the answer grammar: valid before (an empty answer) and after.
        assert before["schema_valid_rate"] == after["schema_valid_rate"] == 1.0
        assert (before["snippet_f1"], after["snippet_f1"]) == (0.0, 1.0)  # it learned the answer
        # On its own, without the grammar, the untrained model wrote no JSON at all.
        assert before["unconstrained_valid_json_rate"] == 0.0
        assert after["unconstrained_valid_json_rate"] is not None

        await student.session.wait_for(lambda: student.requests, what="the what-changed message")
        (told,) = student.requests
        assert "snippet F1 0.00 → 1.00" in told.message
        assert f"({run['testExamples']} test example" in told.message
        assert [a.title for a in told.actions or []] == ["Roll back"]

        # Diagnostics now come from the new model: it flags what the teacher flagged.
        # A new module of the project (named like its others: the tiny model reads the name).
        probe = student.session.open("mod_98.py", source_file(98))
        (diagnostic,) = await student.session.wait_for_diagnostics(probe, timeout_s=60)
        start, end = diagnostic.range.start, diagnostic.range.end
        assert source_file(98).splitlines()[start.line][start.character : end.character] == FLAW
    finally:
        await stop_session(student.session)
    models = analysis_models(workspace)
    assert models[-1] == run["candidateModel"] and str(tiny_model) not in models

    # A restarted server serves the swapped model, and can still roll back.
    student = await start_student(workspace, isolated_home, tiny_model, **LEARN)
    try:
        status = await student.wait_status(
            lambda s: s["servedModel"] is not None, timeout_s=60, what="the model host to start"
        )
        assert status["servedModel"] == run["candidateModel"]
        assert status["lastRun"]["runId"] == started["runId"]
        rolled = await student.command(commands.MODEL_ROLLBACK)
        assert rolled["servedModel"] == str(tiny_model)
        assert rolled["previousModel"] is None  # the base: nothing older to roll back to
        assert rolled["message"] == f"Rolled back to {tiny_model.name} (base model)"
    finally:
        await stop_session(student.session)


async def test_too_few_test_examples_are_no_reason_to_swap_but_the_user_may(
    taught_workspace: Path, isolated_home: Path, tiny_model: Path
) -> None:
    student = await start_student(
        taught_workspace, isolated_home, tiny_model, **{**LEARN, "minTestExamples": 1000}
    )
    student.answer = "Use it anyway"
    try:
        started = await student.command(commands.FINETUNE)
        reports = await student.wait_ended(started["progressToken"], timeout_s=300)
        status = await student.status()
        run = status["lastRun"]
        assert status["state"] == "rejected" and run["gate"] == "too few test examples", run
        count = run["testExamples"]
        assert count == run["metricsAfter"]["n"] and 1 <= count < 1000
        assert f"only {count} test example" in reports[-1].message
        assert "minTestExamples is 1000" in reports[-1].message
        assert run["summary"] == reports[-1].message

        (offer,) = await student.session.wait_for(
            lambda: student.requests, timeout_s=30, what="the offer to use it anyway"
        )
        assert [a.title for a in offer.actions or []] == ["Use it anyway"]
        # One line: the decision and the metric that decided (every metric is in the log)
        assert offer.message.startswith(f"Not swapped in: only {count} test example")
        assert "issue F1" in offer.message and "\n" not in offer.message, offer.message
        chosen = await student.wait_status(
            lambda s: s["servedModel"] == run["candidateModel"] and s["lastRun"]["swapped"],
            timeout_s=60,
            what="the model the user chose to serve",
        )
        # The status says so (not "rejected: Kept the current model"), and the follow-up has
        # the metrics and a "Roll back" action.
        assert chosen["state"] == "succeeded" and chosen["lastRun"]["swapped"] is True, chosen
        assert chosen["lastRun"]["gate"] == "used anyway" and "used anyway" in chosen["message"]
        _, follow_up = await student.session.wait_for(
            lambda: len(student.requests) >= 2 and student.requests,
            timeout_s=30,
            what="the follow-up with Roll back",
        )
        assert [a.title for a in follow_up.actions or []] == ["Roll back"]
        assert "Fine-tuned model now serving" in follow_up.message and "→" in follow_up.message
    finally:
        await stop_session(student.session)


async def training_started(student: Student) -> dict:
    """Start a fine-tune and wait until it has trained two steps; the command's answer."""
    first = await student.command(commands.FINETUNE)
    token = first["progressToken"]

    def steps() -> list[int]:  # reports are coalesced: any step from the second on counts
        messages = student.messages(token)
        return [int(m.group(1)) for text in messages if (m := TRAINING_STEP.search(text))]

    await student.session.wait_for(
        lambda: any(step >= 2 for step in steps()), timeout_s=120, what="two training steps"
    )
    return first


async def test_cancel_keeps_the_served_model_and_the_next_run_resumes(
    taught_workspace: Path, isolated_home: Path, tiny_model: Path
) -> None:
    student = await start_student(
        taught_workspace, isolated_home, tiny_model, **{**QUICK, "numEpochs": 4}
    )
    try:
        first = await training_started(student)
        token = first["progressToken"]
        student.client.window_work_done_progress_cancel(
            types.WorkDoneProgressCancelParams(token=token)
        )
        reports = await student.wait_ended(token, timeout_s=15)
        check_progress(reports)
        ended = reports[-1].message
        assert "cancelled" in ended and "the next run resumes from its checkpoint" in ended
        await student.session.wait_for(  # shown too, not only the bar's end
            lambda: [
                m
                for m in student.client.messages
                if "the next run resumes from its checkpoint" in m.message
            ],
            timeout_s=10,
            what="the cancel's end state shown as a message",
        )
        status = await student.status()
        assert status["state"] == "cancelled" and status["lastRun"]["resumable"] is True
        assert status["servedModel"] == str(tiny_model)

        again = await student.command(commands.FINETUNE)
        assert again["runId"] == first["runId"]  # the same run, resumed from its checkpoint
        assert again["message"].startswith("Resuming fine-tune")
        token2 = again["progressToken"]
        assert token2 != token
        reports = await student.wait_ended(token2, timeout_s=240)
        check_progress(reports)
        assert "resuming" in reports[1].message
        steps = [int(m.group(1)) for r in reports[1:-1] if (m := TRAINING_STEP.search(r.message))]
        assert steps and steps[0] >= 2, steps  # training went on from the checkpoint
        status = await student.status()
        assert status["state"] in ("succeeded", "rejected"), status
    finally:
        await stop_session(student.session)


async def test_a_run_after_changing_settings_starts_fresh_and_says_so(
    taught_workspace: Path, isolated_home: Path, tiny_model: Path
) -> None:
    student = await start_student(
        taught_workspace, isolated_home, tiny_model, **{**QUICK, "numEpochs": 50}
    )
    try:
        first = await training_started(student)
        token = first["progressToken"]
        cancelled = await student.command(commands.FINETUNE_CANCEL)
        assert cancelled["cancelled"] is True and "checkpoint" in cancelled["message"]
        await student.wait_ended(token, timeout_s=15)
        assert (await student.status())["lastRun"]["resumable"] is True

        student.client.workspace_did_change_configuration(
            types.DidChangeConfigurationParams(settings={"aiLsp": {"finetune": {"numEpochs": 49}}})
        )
        again = await student.command(commands.FINETUNE)
        assert again["runId"] != first["runId"]  # not the cancelled run: its settings differ
        assert "starting fresh" in again["message"] and "numEpochs 50 → 49" in again["message"]
        reports = await student.session.wait_for(
            lambda: student.progress(again["progressToken"]), timeout_s=30, what="progress"
        )
        assert "starting fresh" in reports[0].message and "numEpochs 50 → 49" in reports[0].message
        await student.command(commands.FINETUNE_CANCEL)
        await student.wait_ended(again["progressToken"], timeout_s=60)
    finally:
        await stop_session(student.session)


async def test_the_local_models_own_answers_are_left_out_and_the_user_is_told(
    taught_workspace: Path, isolated_home: Path, tiny_model: Path
) -> None:
    student = await start_student(taught_workspace, isolated_home, tiny_model, **QUICK)
    try:
        # The tiny model analyses a file itself: under the answer grammar its (empty) answer is
        # valid and recorded beside the teacher's 16, but not what a fine-tune should learn.
        uri = student.session.open("mod_40.py", source_file(40))
        await student.session.wait_for_diagnostics(uri, timeout_s=60)
        started = await student.command(commands.FINETUNE)
        token = started["progressToken"]
        prepared = await student.session.wait_for(
            lambda: [m for m in student.messages(token) if "examples" in m],
            timeout_s=120,
            what="the prepared dataset's counts",
        )
        assert "16 examples" in prepared[0]  # the teacher's only
        assert (
            '1 analysis answered by the local model left out; set "aiLsp.finetune.'
            'includeLocalAnswers" to true to keep them' in prepared[0]
        )
        await student.command(commands.FINETUNE_CANCEL)
        await student.wait_ended(token, timeout_s=60)
    finally:
        await stop_session(student.session)


async def test_only_the_local_models_own_answers_fail_naming_the_setting_that_keeps_them(
    tmp_path: Path, isolated_home: Path, tiny_model: Path
) -> None:
    workspace = tmp_path / "project"
    workspace.mkdir()
    student = await start_student(workspace, isolated_home, tiny_model, **QUICK)
    try:
        uri = student.session.open("mod_41.py", source_file(41))
        await student.session.wait_for_diagnostics(uri, timeout_s=60)
        first = await student.command(commands.FINETUNE)
        reports = await student.wait_ended(first["progressToken"], timeout_s=120)
        ended = reports[-1].message
        assert ended.startswith("failed: ") and "answered by the local model" in ended, ended
        assert '"aiLsp.finetune.includeLocalAnswers" to true to keep them' in ended
        assert "--include-local-answers" not in ended  # the editor's setting, not the CLI flag
        assert (await student.status())["servedModel"] == str(tiny_model)

        student.client.workspace_did_change_configuration(
            types.DidChangeConfigurationParams(
                settings={"aiLsp": {"finetune": {"includeLocalAnswers": True}}}
            )
        )
        again = await student.command(commands.FINETUNE)
        token = again["progressToken"]
        prepared = await student.session.wait_for(
            lambda: [m for m in student.messages(token) if "examples" in m],
            timeout_s=120,
            what="the prepared dataset's counts",
        )
        assert "1 examples" in prepared[0] and "left out" not in prepared[0]
        await student.command(commands.FINETUNE_CANCEL)
        await student.wait_ended(token, timeout_s=60)
    finally:
        await stop_session(student.session)


async def test_killed_worker_and_unloadable_model_leave_the_old_model_serving(
    taught_workspace: Path, isolated_home: Path, tiny_model: Path
) -> None:
    student = await start_student(taught_workspace, isolated_home, tiny_model, **QUICK, force=True)
    server_pid = student.client._server.pid  # type: ignore[union-attr]
    try:
        first = await student.command(commands.FINETUNE)
        token = first["progressToken"]
        pids = await student.session.wait_for(
            lambda: worker_pids(server_pid), timeout_s=60, what="the training worker"
        )
        await student.wait_status(
            lambda s: s["phase"] == "training", timeout_s=120, what="training"
        )
        os.kill(pids[0], signal.SIGKILL)
        reports = await student.wait_ended(token, timeout_s=30)
        assert reports[-1].message.startswith("failed: ") and "killed" in reports[-1].message
        status = await student.status()
        assert status["state"] == "failed" and "killed" in status["lastRun"]["reason"]
        assert status["servedModel"] == str(tiny_model)
        killed_run = Path(status["lastRun"]["runDir"])
        assert (killed_run / ".output.partial").is_dir()  # a killed worker cleans nothing

        # The next run works up to the swap; its fused model is damaged before the host loads it.
        second = await student.command(commands.FINETUNE, {"resume": False})
        assert second["runId"] != first["runId"]
        token = second["progressToken"]
        model_dir = Path(status["lastRun"]["runDir"]).parent / second["runId"] / "output" / "model"

        def damage_when_swapping(params: types.ProgressParams) -> None:
            record_progress(student.client, params)
            value = student.client.progress_reports[params.token][-1]
            if "swapping" in (getattr(value, "message", None) or ""):
                (model_dir / "model.safetensors").write_bytes(b"not a safetensors file")

        student.replace_feature(types.PROGRESS, damage_when_swapping)
        reports = await student.wait_ended(token, timeout_s=240)
        check_progress(reports)
        assert "the new model failed to load" in reports[-1].message
        status = await student.status()
        assert status["state"] == "failed" and status["lastRun"]["swapped"] is False
        assert status["servedModel"] == str(tiny_model)
        # The killed run's partial outputs went when the next run started (issue 24 item 13).
        assert killed_run.is_dir() and not (killed_run / ".output.partial").exists()

        # The old model still answers.
        uri = student.session.open("after.py", source_file(7))
        assert list(await student.session.wait_for_diagnostics(uri, timeout_s=60)) == []
    finally:
        await stop_session(student.session)
    assert not worker_pids(server_pid)


NO_PROGRESS = types.ClientCapabilities(
    window=types.WindowClientCapabilities(work_done_progress=False)
)


@pytest.mark.parametrize("client_kind", ["no progress support", "refuses the token"])
async def test_clients_without_progress_get_messages_and_shutdown_stops_the_worker(
    taught_workspace: Path, isolated_home: Path, tiny_model: Path, client_kind: str
) -> None:
    capabilities = NO_PROGRESS if client_kind == "no progress support" else None
    student = await start_student(
        taught_workspace,
        isolated_home,
        tiny_model,
        capabilities=capabilities,
        **{**QUICK, "numEpochs": 50},
    )
    if client_kind == "refuses the token":

        def refuse(params: types.WorkDoneProgressCreateParams) -> None:
            raise RuntimeError("this client shows no progress bars")

        student.replace_feature(types.WINDOW_WORK_DONE_PROGRESS_CREATE, refuse)

    server_pid = student.client._server.pid  # type: ignore[union-attr]
    await student.command(commands.FINETUNE)
    shown = await student.session.wait_for(
        lambda: [m for m in student.client.messages if "Fine-tune on my traces" in m.message],
        timeout_s=30,
        what="a message that the fine-tune started",
    )
    assert "0%" in shown[0].message
    logged = await student.session.wait_for(
        lambda: [m for m in student.client.log_messages if "% · training" in m.message],
        timeout_s=120,
        what="training progress in the log",
    )
    assert logged
    pids = worker_pids(server_pid)
    assert pids
    await stop_session(student.session)  # shutdown + exit while the worker trains
    for pid in pids:
        assert not Path(f"/proc/{pid}").exists(), "the training worker outlived the server"


async def test_a_lora_rank_the_model_cannot_take_is_refused_before_the_dataset_is_prepared(
    taught_workspace: Path, isolated_home: Path, tiny_model: Path
) -> None:
    student = await start_student(taught_workspace, isolated_home, tiny_model, loraRank=512)
    try:
        message = await refused(student, commands.FINETUNE)
        assert "aiLsp.finetune.loraRank 512 is more than the hidden size 96 of" in message
        assert "set aiLsp.finetune.loraRank to 96 or less" in message and "--" not in message
        status = await student.status()
        assert status["state"] == "idle" and status["lastRun"] is None
        runs = paths.workspace_dir(taught_workspace) / "finetune" / "runs"
        assert not runs.exists() or not any(runs.iterdir())  # no dataset prepared
    finally:
        await stop_session(student.session)


async def test_an_invalid_finetune_setting_refuses_the_run_instead_of_using_the_default(
    taught_workspace: Path, isolated_home: Path, tiny_model: Path
) -> None:
    student = await start_student(taught_workspace, isolated_home, tiny_model, learningRate=-1)
    try:
        message = await refused(student, commands.FINETUNE)
        assert message.startswith("invalid setting aiLsp.finetune.learningRate:"), message
        assert "(got -1)" in message
        # Fixed; now a base model folder that is not there: refused at once, naming the setting.
        missing = str(taught_workspace / "no-such-model")
        student.client.workspace_did_change_configuration(
            types.DidChangeConfigurationParams(
                settings={"aiLsp": student_settings(tiny_model, baseModel=missing)}
            )
        )
        message = await refused(student, commands.FINETUNE)
        assert message.startswith(f"aiLsp.finetune.baseModel: no model folder at {missing}")
        status = await student.status()
        assert status["state"] == "idle" and status["lastRun"] is None
    finally:
        await stop_session(student.session)


async def test_arguments_outside_the_workspace_are_refused(
    tmp_path: Path, isolated_home: Path, tiny_model: Path
) -> None:
    workspace = tmp_path / "project"
    (workspace / "not-a-model").mkdir(parents=True)
    student = await start_student(workspace, isolated_home, tiny_model)
    try:
        message = await refused(student, commands.FINETUNE, {"traces": ["/etc/passwd"]})
        assert "outside the workspace" in message and "aiLsp.finetune.extraTraces" in message
        message = await refused(student, commands.MODEL_USE, str(tmp_path))
        assert "outside the workspace" in message
        message = await refused(student, commands.MODEL_USE, str(workspace / "not-a-model"))
        assert "not one of this workspace's models" in message and commands.MODEL_LIST in message
        message = await refused(student, commands.MODEL_USE, "not-a-model")
        assert "not one of this workspace's models" in message
        message = await refused(student, commands.MODEL_USE)
        assert "takes [modelPath]" in message
        message = await refused(student, commands.MODEL_LIST, "extra")
        assert "takes no arguments" in message
        listed = await student.command(commands.MODEL_LIST)
        assert listed["models"] == [
            {
                "path": str(tiny_model),
                "runId": None,
                "baseModel": None,
                "createdAt": None,
                "examples": None,
                "metrics": None,
                "gate": None,
                "serving": True,
                "label": f"{tiny_model.name} (base model)",
                "detail": "not evaluated yet",
            }
        ]
        assert listed["message"] == f"1 model; serving {tiny_model.name} (base model)"
        used = await student.command(commands.MODEL_USE, str(tiny_model))
        assert used["servedModel"] == str(tiny_model) and used["message"].startswith("Now serving")
        message = await refused(student, commands.FINETUNE, {"epochs": 3})
        assert "unknown argument" in message
        message = await refused(student, commands.FINETUNE)
        assert "no traces to learn from yet" in message
        status = await student.status()
        assert status["state"] == "idle" and status["servedModel"] == str(tiny_model)
        assert status["message"].startswith("No fine-tune yet; serving")
        assert (status["backend"], status["configuredModel"]) == ("local", str(tiny_model))
        assert status["traceFile"].endswith(TRACE_FILE_NAME)
        # Server logs reach the editor's log at their own level (not stderr, read as errors).
        logged = {(m.type, m.message) for m in student.client.log_messages}
        assert (types.MessageType.Info, f"ai_lsp_tune.server.state: serving {tiny_model}") in logged
    finally:
        await stop_session(student.session)


async def test_two_fine_tunes_both_start_from_the_base_and_rollback_walks_back_to_it(
    taught_workspace: Path, isolated_home: Path, tiny_model: Path
) -> None:
    # numLayers 16 (the default) on a 2-layer model: all layers are adapted, and it says so.
    student = await start_student(
        taught_workspace, isolated_home, tiny_model, **QUICK, force=True, numLayers=16
    )
    try:
        candidates = []
        for attempt in range(2):
            started = await student.command(commands.FINETUNE, {"resume": False})
            assert str(tiny_model) in started["message"] or "from" in started["message"]
            reports = await student.wait_ended(started["progressToken"], timeout_s=300)
            assert "now serving the fine-tuned model" in reports[-1].message, reports[-1]
            status = await student.status()
            run = status["lastRun"]
            assert run["baseModel"] == str(tiny_model), attempt  # never the previous fine-tune
            assert status["servedModel"] == run["candidateModel"]
            assert run["summary"] == reports[-1].message
            assert any("adapting all 2 layers" in note for note in run["notes"]), run["notes"]
            candidates.append(run["candidateModel"])
        assert any("adapting all 2 layers" in m.message for m in student.client.log_messages)

        listed = await student.command(commands.MODEL_LIST)
        rows = listed["models"]
        assert [r["path"] for r in rows] == [str(tiny_model), *candidates]
        assert [r["serving"] for r in rows] == [False, False, True]
        for row in rows[1:]:
            assert row["baseModel"] == str(tiny_model) and row["runId"] and row["createdAt"]
            assert row["metrics"]["n"] >= 1 and row["examples"]["train"] >= 1

        # Both were made from the base: a rollback steps down the lineage, to the base.
        rolled = await student.command(commands.MODEL_ROLLBACK)
        assert rolled["servedModel"] == str(tiny_model) and "Rolled back to" in rolled["message"]
        rolled = await student.command(commands.MODEL_ROLLBACK)
        assert rolled["message"].startswith("No previous model to roll back to")

        not_listed = str(taught_workspace)
        assert "not one of this workspace's models" in await refused(
            student, commands.MODEL_USE, not_listed
        )
        assert (await student.status())["servedModel"] == str(tiny_model)  # nothing changed
        used = await student.command(commands.MODEL_USE, candidates[1])
        assert used["servedModel"] == candidates[1]
    finally:
        await stop_session(student.session)
