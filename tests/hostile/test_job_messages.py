"""What Cancel and a second Fine-tune say while a run is cancelling or swapping (issue 24
item 15): not "No fine-tune is running", not "cancel it first" when it cannot be cancelled."""

from __future__ import annotations

import time
from types import SimpleNamespace
from typing import Any

import pytest

from ai_lsp_tune.server.finetune import handlers
from ai_lsp_tune.server.finetune.context import JobBusy
from ai_lsp_tune.server.finetune.job import FinetuneJob
from ai_lsp_tune.server.finetune.states import JobState, RunRecord


def _job_in(state: JobState) -> FinetuneJob:
    job = FinetuneJob.__new__(FinetuneJob)  # only its record: the state the commands read
    job.record = RunRecord(
        run_id="20260101-000000-abc", state=state, started_at=time.time(), run_dir="/r",
        base_model="/m",
    )  # fmt: skip
    job._message = None
    return job


def _server_with(job: FinetuneJob) -> Any:
    return SimpleNamespace(state=SimpleNamespace(job=job), window_log_message=lambda _: None)


@pytest.mark.parametrize(
    ("state", "says"),
    [
        (JobState.CANCELLING, "already being cancelled"),
        (JobState.SWAPPING, "cannot be cancelled"),
        (JobState.SUCCEEDED, "No fine-tune is running"),
    ],
)
def test_cancel_says_why_it_cannot(state: JobState, says: str) -> None:
    answer = handlers.cancel(_server_with(_job_in(state)))
    assert answer["cancelled"] is False and says in answer["message"], answer


@pytest.mark.parametrize("state", [JobState.SWAPPING, JobState.CANCELLING])
def test_a_second_fine_tune_during_a_swap_or_a_cancel_is_told_to_wait(state: JobState) -> None:
    with pytest.raises(JobBusy) as refused:
        _job_in(state).start(SimpleNamespace())  # type: ignore[arg-type]
    assert "wait for it to finish" in str(refused.value)
    assert "cancel it first" not in str(refused.value)
