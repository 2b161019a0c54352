"""``aiLsp.finetune.fuse`` false: a fine-tune publishes its LoRA adapter only, and the running
model host serves base + adapter; nothing the size of the model is written.

The real server over stdio, the tiny local model, the teacher's traces: the same story as a fused
fine-tune (it learns the teacher's answer), then rollback to the base and ``ai-lsp.model.use`` of
the adapter entry, all in the one host that was started first.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from ai_lsp_tune.server import commands
from tests.helpers.finetune_story import (
    FLAW,
    LEARN,
    Student,
    analysis_models,
    serving,
    source_file,
    start_student,
)
from tests.helpers.lsp_session import stop_session

pytestmark = [pytest.mark.training, pytest.mark.model]


async def flags_the_flaw(student: Student, n: int) -> bool:
    """Whether the served model flags what the teacher flagged in a module it has not seen."""
    probe = student.session.open(f"mod_{n}.py", source_file(n))
    found = await student.session.wait_for_diagnostics(probe, timeout_s=60)
    lines = source_file(n).splitlines()
    return any(
        lines[d.range.start.line][d.range.start.character : d.range.end.character] == FLAW
        for d in found
    )


async def test_without_fusing_a_fine_tune_serves_base_plus_adapter_in_the_running_host(
    taught_workspace: Path, isolated_home: Path, tiny_model: Path
) -> None:
    workspace = taught_workspace
    student = await start_student(workspace, isolated_home, tiny_model, **LEARN, fuse=False)
    try:
        served, hosts = await serving(student)
        assert served == str(tiny_model) and len(hosts) == 1
        started = await student.command(commands.FINETUNE)
        reports = await student.wait_ended(started["progressToken"], timeout_s=300)
        assert "now serving the fine-tuned model" in reports[-1].message, reports[-1]
        status = await student.status()
        run = status["lastRun"]
        adapter = Path(run["candidateModel"])
        assert adapter.name == "adapters" and status["servedModel"] == str(adapter)
        assert (await serving(student))[1] == hosts  # in place: the same host, no second one

        # Nothing but the adapter and the metadata: no model/ folder, no fused weights.
        output = adapter.parent
        assert not (output / "model").exists()
        weights = sorted(p.name for p in output.rglob("*.safetensors"))
        assert weights == ["adapters.safetensors"]
        written = sum(p.stat().st_size for p in output.rglob("*") if p.is_file())
        model_size = sum(p.stat().st_size for p in tiny_model.glob("*.safetensors"))
        assert written < model_size  # a fused copy alone would be the model's size

        # It learned: base + adapter flags what the teacher flagged, which the base did not.
        assert (run["metricsBefore"]["snippet_f1"], run["metricsAfter"]["snippet_f1"]) == (0, 1)
        assert await flags_the_flaw(student, 98)

        listed = (await student.command(commands.MODEL_LIST))["models"]
        assert [(r["path"], r["serving"]) for r in listed] == [
            (str(tiny_model), False),
            (str(adapter), True),
        ]
        assert listed[1]["baseModel"] == str(tiny_model) and listed[1]["metrics"]["n"] >= 1

        rolled = await student.command(commands.MODEL_ROLLBACK)
        assert rolled["servedModel"] == str(tiny_model)  # the adapter's layers come off
        assert (await serving(student))[1] == hosts
        used = await student.command(commands.MODEL_USE, str(adapter))
        assert used["servedModel"] == str(adapter)  # and go on again
        assert await flags_the_flaw(student, 97)
        assert (await serving(student))[1] == hosts
    finally:
        await stop_session(student.session)
    assert analysis_models(workspace)[-1] == str(adapter)  # the path reported everywhere
