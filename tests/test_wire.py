"""A peer from another version of the package, on each end of each process channel.

The language server and its model host, a fine-tune and its training worker, the server and its
dataset preparation talk in versioned JSON lines, and the workers get a versioned request on
their command line. When the two ends come from different versions of ai-lsp-tune (an upgrade
while the language server runs), each end says so in one line naming both versions, instead of
misreading the other's messages. The peers of another version are small scripts that write what
such a peer would; the ends under test are the real processes and clients.
"""

from __future__ import annotations

import asyncio
import json
import sys
from pathlib import Path

import pytest

from ai_lsp_tune.dataset.protocol import PROTOCOL_VERSION, PrepareRequest
from ai_lsp_tune.dataset.runner import DatasetPreparation, PreparationFailed
from ai_lsp_tune.serving import protocol
from ai_lsp_tune.serving.runner import HostClient, HostGone, ModelLoadError
from ai_lsp_tune.training.protocol import (
    EVENT_PROTOCOL_VERSION,
    REQUEST_VERSION,
    ErrorEvent,
    TrainRequest,
)
from ai_lsp_tune.training.runner import TrainingRunner

OTHER = 99  # the protocol version of a peer from some other version of the package


def other_python(folder: Path, script: str) -> str:
    """An executable standing in for ``python``: whatever it is asked to run, it runs ``script``
    (a peer of another version), with the arguments it was given in ``sys.argv``."""
    path = folder / "python-of-another-version"
    path.write_text(f"#!{sys.executable}\nimport json, os, sys, time\n{script}")
    path.chmod(0o755)
    return str(path)


def mismatch(sender: str, ours: int) -> str:
    return f"{sender} speaks protocol v{OTHER}, this side v{ours}"


# --- the model host ---------------------------------------------------------------------------
async def test_the_server_refuses_a_model_host_of_another_version(tmp_path: Path) -> None:
    ready = {"v": OTHER, "type": "ready", "model": "m", "load_s": 0.1, "prompt_cache_tokens": 1}
    host = other_python(
        tmp_path, f"print(json.dumps({ready!r}), flush=True)\nsys.stdin.read()\ntime.sleep(60)"
    )
    with pytest.raises(ModelLoadError) as info:
        await HostClient.start("m", python=host, load_timeout_s=60)
    assert info.value.message.startswith(mismatch("the model host", protocol.PROTOCOL_VERSION))
    assert "restart it after an upgrade" in info.value.message


@pytest.mark.model
async def test_the_model_host_refuses_a_server_of_another_version(
    tiny_model: Path, caplog: pytest.LogCaptureFixture
) -> None:
    host = await HostClient.start(str(tiny_model))
    try:
        assert host.process.stdin is not None
        request = {"v": OTHER, "type": "generate", "id": 1, "messages": [], "max_tokens": 5}
        host.process.stdin.write(json.dumps(request).encode() + b"\n")
        assert await asyncio.wait_for(host.process.wait(), 60) == 2
        with pytest.raises(HostGone):
            await host.generate([protocol.ChatMessage(role="user", content="x")], 5)
    finally:
        await host.close()
    log = caplog.text  # the host's stderr, relayed into the server's log at its own level
    assert mismatch("the language server", protocol.PROTOCOL_VERSION) in log
    assert "Traceback" not in log


# --- the training worker ----------------------------------------------------------------------
def _request(tmp_path: Path) -> TrainRequest:
    return TrainRequest(dataset=tmp_path / "dataset.json", output_dir=tmp_path / "out")


async def test_a_fine_tune_refuses_a_training_worker_of_another_version(tmp_path: Path) -> None:
    event = {"v": OTHER, "phase": "loading", "fraction": 0.01}
    worker = other_python(
        tmp_path,
        'fd = int(sys.argv[sys.argv.index("--events-fd") + 1])\n'
        f"os.write(fd, json.dumps({event!r}).encode() + b'\\n')\n"
        "time.sleep(60)\n",
    )
    seen: list[object] = []
    outcome = await TrainingRunner(_request(tmp_path), seen.append, python=worker).run()
    assert outcome.status == "error" and isinstance(outcome.event, ErrorEvent)
    assert outcome.event.message.startswith(mismatch("the training worker", EVENT_PROTOCOL_VERSION))
    assert seen == [outcome.event]  # nothing it said was taken for progress
    assert outcome.returncode is not None and outcome.returncode < 0  # stopped, not waited for


async def test_the_training_worker_refuses_a_request_of_another_version(tmp_path: Path) -> None:
    request = _request(tmp_path).model_copy(update={"v": OTHER})
    outcome = await TrainingRunner(request).run()
    assert outcome.status == "error" and isinstance(outcome.event, ErrorEvent)
    assert outcome.event.kind == "bad_request"
    assert outcome.event.message.startswith(mismatch("the training request", REQUEST_VERSION))
    assert "\n" not in outcome.event.message
    assert not any("Traceback" in line for line in outcome.log_tail)
    assert not (tmp_path / "out").exists()


# --- dataset preparation ----------------------------------------------------------------------
def _prepare_request(tmp_path: Path, **update: object) -> PrepareRequest:
    traces = tmp_path / "traces.jsonl"
    traces.write_text("")
    request = PrepareRequest(traces=[traces], output_dir=tmp_path / "dataset", max_seq_length=64)
    return request.model_copy(update=update)


async def test_the_server_refuses_a_dataset_preparation_of_another_version(
    tmp_path: Path,
) -> None:
    done = {"v": OTHER, "type": "done", "examples": 3, "splits": {"train": 3}}
    child = other_python(tmp_path, f"print(json.dumps({done!r}), flush=True)\ntime.sleep(60)\n")
    progress: list[float] = []
    preparation = DatasetPreparation(_prepare_request(tmp_path), progress.append, python=child)
    with pytest.raises(PreparationFailed) as info:
        await preparation.run()
    assert str(info.value).startswith(mismatch("dataset preparation", PROTOCOL_VERSION))
    assert progress == []


async def test_dataset_preparation_refuses_a_request_of_another_version(tmp_path: Path) -> None:
    request = _prepare_request(tmp_path, v=OTHER)
    with pytest.raises(PreparationFailed) as info:
        await DatasetPreparation(request, lambda _: None).run()
    assert str(info.value).startswith(mismatch("the dataset preparation request", PROTOCOL_VERSION))
    assert not (tmp_path / "dataset").exists()
