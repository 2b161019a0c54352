"""Fine-tune on my traces, from the editor, on two ranks: ``aiLsp.finetune.hosts``."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from ai_lsp_tune.server import commands
from tests.helpers.finetune_story import start_student
from tests.helpers.lsp_session import stop_session
from tests.helpers.training import ONE_THREAD

pytestmark = [pytest.mark.training, pytest.mark.model]

QUICK = {"numEpochs": 1, "batchSize": 4, "learningRate": 5e-4, "loraRank": 4}


async def test_finetune_hosts_setting_trains_on_two_ranks_and_swaps(
    taught_workspace: Path, isolated_home: Path, tiny_model: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name, value in ONE_THREAD.items():
        monkeypatch.setenv(name, value)
    workspace = taught_workspace
    hosts = ["127.0.0.1", "127.0.0.1"]
    student = await start_student(
        workspace, isolated_home, tiny_model, **QUICK, force=True, hosts=hosts, backend="ring"
    )
    try:
        started = await student.command(commands.FINETUNE)
        reports = await student.wait_ended(
            started["progressToken"], timeout_s=600
        )  # 2 ranks, 2 cores
        assert any("training" in (r.message or "") for r in reports[1:-1])  # rank 0's events
        assert "now serving the fine-tuned model" in reports[-1].message
        status = await student.status()
        assert status["state"] == "succeeded" and status["lastRun"]["swapped"] is True
        run_json = Path(status["servedModel"]).parent / "run.json"
        distributed = json.loads(run_json.read_text())["distributed"]
        assert distributed == {"world_size": 2, "backend": "ring", "hosts": hosts}
    finally:
        await stop_session(student.session)
