"""After a fine-tune, the running model host serves the new model: no second host is started.

The real server over stdio, the tiny local model: a fine-tune's model has the served model's
architecture, so the swap loads its weights into the host that already runs; a model of another
architecture (the user's ``model`` setting) still gets a host of its own.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from lsprotocol import types

from ai_lsp_tune.server import commands
from tests.helpers.finetune_story import (
    QUICK,
    analysis_models,
    host_pids,
    serving,
    source_file,
    start_student,
)
from tests.helpers.lsp_session import stop_session
from tests.helpers.models import three_layer_model

pytestmark = [pytest.mark.training, pytest.mark.model]


async def test_a_fine_tune_is_served_by_the_running_host_and_another_architecture_by_a_new_one(
    tmp_path: Path, taught_workspace: Path, isolated_home: Path, tiny_model: Path
) -> None:
    workspace = taught_workspace
    other = three_layer_model(tmp_path / "three-layers")
    student = await start_student(workspace, isolated_home, tiny_model, **QUICK, force=True)
    try:
        served, hosts = await serving(student)
        assert served == str(tiny_model) and len(hosts) == 1

        started = await student.command(commands.FINETUNE)
        reports = await student.wait_ended(started["progressToken"], timeout_s=300)
        assert "now serving the fine-tuned model" in reports[-1].message, reports[-1]
        candidate = (await student.status())["lastRun"]["candidateModel"]
        served, after = await serving(student)
        assert served == candidate and after == hosts  # the same host process, no second one

        probe = student.session.open("mod_98.py", source_file(98))
        await student.session.wait_for_diagnostics(probe, timeout_s=60)

        rolled = await student.command(commands.MODEL_ROLLBACK)
        assert rolled["servedModel"] == str(tiny_model)
        assert (await serving(student))[1] == hosts  # a rollback is the same operation

        student.client.workspace_did_change_configuration(
            types.DidChangeConfigurationParams(settings={"aiLsp": {"model": str(other)}})
        )
        await student.session.wait_for(
            lambda: any(f"now serving {other}" in m.message for m in student.client.messages),
            timeout_s=60,
            what="the other model to be served",
        )
        assert (await student.status())["servedModel"] == str(other)
        server_pid = student.client._server.pid  # type: ignore[union-attr]
        moved = await student.session.wait_for(
            lambda: (pids := host_pids(server_pid)) and hosts[0] not in pids and pids,
            timeout_s=30,
            what="the old model host to stop",
        )
        assert len(moved) == 1  # a host of its own; the old one stopped once drained
    finally:
        await stop_session(student.session)
    # The probe after the swap was answered by the fine-tune (later changes of model re-analyse
    # the open files, so it is not the last analysis).
    assert candidate in analysis_models(workspace)
