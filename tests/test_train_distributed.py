"""Data-parallel training on two ranks of this machine (mlx.launch, ring backend over TCP).

Each rank is one process with one compute thread (MLX's CPU stream, the reference BLAS it
ships, OMP/OpenBLAS/tokenizers set to one thread), so two ranks fit the two-core machine.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
from pathlib import Path
from typing import Any

import pytest

from ai_lsp_tune.training.distributed import Launch
from ai_lsp_tune.training.protocol import (
    ErrorEvent,
    FinalEvent,
    TrainingEvent,
    TrainRequest,
    WorkerEvent,
)
from ai_lsp_tune.training.runner import run_training
from tests.helpers.training import BIN, ONE_THREAD, free_ports, write_splits

pytestmark = pytest.mark.training

# Global batch 4: one rank takes all 4 examples of a length group, two ranks take 2 each.
OPTIONS = {"batch_size": 4, "learning_rate": 5e-4, "num_layers": -1, "num_epochs": 4, "seed": 3}
# Two ranks make the same updates as one rank on the whole batch (the loss is divided by all
# ranks' answer tokens), up to float32 summation order: each rank sums its half before the
# all-sum. Measured: equal to run.json's 5 decimals after 16 steps. 1e-3 leaves room for other
# BLAS builds and thread counts; averaging the halves' means instead was 4.7% off here.
EQUIVALENCE_REL_TOLERANCE = 1e-3


def rank_env() -> dict[str, str]:
    return {**os.environ, **ONE_THREAD}


def cli_options(tiny_model: Path, output_dir: Path) -> list[str]:
    options = ["--model-name", str(tiny_model), "--output-dir", str(output_dir)]
    for name, value in OPTIONS.items():
        options += ["--" + name.replace("_", "-"), str(value)]
    return options


def worker_pid(rank: int, output_dir: Path) -> int | None:
    """The training worker of ``rank`` writing ``output_dir`` (found in /proc)."""
    for proc in Path("/proc").iterdir():
        try:
            command = (proc / "cmdline").read_bytes()
            environ = (proc / "environ").read_bytes()
        except OSError:
            continue
        if (
            b"ai_lsp_tune.training.worker" in command
            and str(output_dir).encode() in command
            and f"MLX_RANK={rank}\0".encode() in environ
        ):
            return int(proc.name)
    return None


def test_two_ranks_under_mlx_launch_publish_once_and_match_one_rank(
    tiny_model: Path, tmp_path: Path
) -> None:
    dataset = write_splits(tmp_path / "data", 16, 4, 2)
    two = tmp_path / "two"
    launcher = [str(BIN / "mlx.launch"), "--backend", "ring", "-n", "2", "-p", str(free_ports())]
    train = [str(BIN / "ai-lsp"), "finetune", "train", str(dataset)]
    launched = subprocess.run(
        [*launcher, "--", *train, *cli_options(tiny_model, two)],
        capture_output=True,
        text=True,
        env=rank_env(),
        timeout=600,
    )
    output = launched.stdout + launched.stderr
    assert "error" not in output.lower(), output[-3000:]
    assert output.count("Fused model:") == 1  # rank 0 published; rank 1 only says so
    assert "Rank 1 of 2 done; rank 0 publishes the model." in output
    assert sorted(os.listdir(two)) == ["adapters", "model", "run.json"]
    assert not any(p.name.startswith(".two") and p.is_dir() for p in tmp_path.iterdir())
    run = json.loads((two / "run.json").read_text())
    assert run["distributed"] == {
        "world_size": 2,
        "backend": "ring",
        "hosts": ["127.0.0.1", "127.0.0.1"],
    }
    assert run["iterations"] == 16  # the global batch, not each rank's half
    from mlx_lm import load

    load(str(two / "model"))

    one = tmp_path / "one"
    request = TrainRequest.model_validate(
        {"dataset": dataset, "model_name": str(tiny_model), "output_dir": one, **OPTIONS}
    )
    outcome = run_training(request)
    assert outcome.status == "done", outcome.event
    single = json.loads((one / "run.json").read_text())
    assert single["distributed"] == {"world_size": 1, "backend": "none", "hosts": []}
    final_two, final_one = run["val_loss_history"][-1][1], single["val_loss_history"][-1][1]
    assert final_two == pytest.approx(final_one, rel=EQUIVALENCE_REL_TOLERANCE)
    assert final_one < single["val_loss_history"][0][1]  # it did train


def _launched_run(
    tiny_model: Path, tmp_path: Path, *, resume: bool = False, signal_rank_1: int | None = None
) -> tuple[Any, list[WorkerEvent]]:
    """A run through ``--hosts 127.0.0.1,127.0.0.1`` that sends rank 1 ``signal_rank_1``
    once training has begun."""
    output_dir = tmp_path / "out"
    quick = {"num_epochs": 10, "checkpoint_every_s": 0.5, "eval_max_examples": 1}
    request = TrainRequest.model_validate(
        {
            "dataset": tmp_path / "data",
            "model_name": str(tiny_model),
            "output_dir": output_dir,
            **OPTIONS,
            **quick,
            "eval_max_tokens": 16,
            "resume": resume,
        }
    )
    events: list[WorkerEvent] = []

    def on_event(event: WorkerEvent) -> None:
        events.append(event)
        if signal_rank_1 and isinstance(event, TrainingEvent) and event.iteration == 3:
            pid = worker_pid(1, output_dir)
            assert pid is not None
            os.kill(pid, signal_rank_1)

    launch = Launch(hosts=["127.0.0.1", "127.0.0.1"], backend="ring")
    return run_training(request, on_event, launch=launch), events


def test_stopping_one_rank_stops_both_and_resume_finishes_distributed(
    tiny_model: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name, value in ONE_THREAD.items():
        monkeypatch.setenv(name, value)
    write_splits(tmp_path / "data", 8, 4, 1)
    outcome, _ = _launched_run(tiny_model, tmp_path, signal_rank_1=signal.SIGTERM)
    assert outcome.status == "cancelled", outcome.event
    assert outcome.event.checkpoint_iteration is not None
    assert (tmp_path / ".out.partial" / "checkpoint" / "state.json").exists()
    assert not (tmp_path / "out").exists()

    resumed, events = _launched_run(tiny_model, tmp_path, resume=True)
    assert resumed.status == "done", resumed.event
    iterations = [e.iteration for e in events if isinstance(e, TrainingEvent)]
    assert iterations[0] >= outcome.event.checkpoint_iteration and iterations[-1] == 20
    run = json.loads((tmp_path / "out" / "run.json").read_text())
    assert run["distributed"]["world_size"] == 2 and run["iterations"] == 20


def test_a_killed_rank_is_one_clear_error_naming_its_host(
    tiny_model: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name, value in ONE_THREAD.items():
        monkeypatch.setenv(name, value)
    write_splits(tmp_path / "data", 8, 4, 1)
    outcome, events = _launched_run(tiny_model, tmp_path, signal_rank_1=signal.SIGKILL)
    finals = [e for e in events if isinstance(e, FinalEvent)]
    assert finals == [outcome.event]
    assert isinstance(outcome.event, ErrorEvent) and outcome.event.kind == "distributed"
    assert outcome.event.message.startswith("Rank 1 on 127.0.0.1 exited with code -9")
    assert not (tmp_path / "out").exists()
