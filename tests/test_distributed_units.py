"""Distributed training without training: options, shards, launch errors a user can read."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from ai_lsp_tune.cli.app import app
from ai_lsp_tune.training.distributed import (
    Launch,
    hostfile_hosts,
    launch_command,
    launch_refusal,
    rank_failure,
    shard,
)


@pytest.mark.parametrize(
    ("options", "message"),
    [
        (["--backend", "gloo", "--hosts", "10.0.0.1"], "invalid --backend 'gloo'"),
        (["--backend", "ring"], "--backend needs --hosts or --hostfile"),
        (["--hosts", "10.0.0.1", "--hostfile", "hosts.json"], "--hosts or --hostfile, not both"),
        (["--hostfile", "missing.json"], "invalid --hostfile missing.json"),
    ],
)
def test_bad_distributed_options_are_refused_before_anything_runs(
    tmp_path: Path, options: list[str], message: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "dataset.json").write_text("")
    result = CliRunner().invoke(app, ["finetune", "train", "dataset.json", *options])
    assert result.exit_code == 2
    assert message in result.output


def test_help_says_what_every_host_needs() -> None:
    result = CliRunner().invoke(app, ["finetune", "train", "--help"], env={"COLUMNS": "300"})
    assert "same Python environment" in result.output
    assert "dataset at the same path" in result.output


@pytest.mark.parametrize(
    ("items", "size", "expected"),
    [
        ([10, 11, 12, 13], 2, [[10, 12], [11, 13]]),
        ([10, 11, 12], 2, [[10, 12], [11]]),
        ([10], 2, [[10], [10]]),  # every rank takes a step, even on a one-example batch
    ],
)
def test_every_rank_takes_its_shard_of_the_same_batch(
    items: list[int], size: int, expected: list[list[int]]
) -> None:
    assert [shard(items, rank, size) for rank in range(size)] == expected


def test_a_hostfile_names_the_hosts_that_run_json_records(tmp_path: Path) -> None:
    hostfile = tmp_path / "hosts.json"
    hosts = [{"ssh": "mac-1", "ips": ["10.0.0.1"]}, {"ssh": "mac-2", "ips": ["10.0.0.2"]}]
    hostfile.write_text(json.dumps({"backend": "ring", "hosts": hosts}))
    assert hostfile_hosts(hostfile) == ["mac-1", "mac-2"]
    command = launch_command("py", ["-m", "w"], hostfile=hostfile, backend="ring")
    assert command[-4:] == ["--", "py", "-m", "w"]
    assert "AI_LSP_DIST_HOSTS=mac-1,mac-2" in command


@pytest.mark.parametrize(
    ("hosts", "expected"),
    [
        (["127.0.0.1", "127.0.0.1"], ["--hosts", "127.0.0.1", "-n", "2"]),  # one GPU per rank
        (["10.0.0.1", "10.0.0.2"], ["--hosts", "10.0.0.1,10.0.0.2"]),
    ],
)
def test_hosts_become_mlx_launch_options(hosts: list[str], expected: list[str]) -> None:
    command = launch_command("py", ["w"], hosts=hosts, backend="nccl")
    at = command.index("--hosts")
    assert command[at : at + len(expected)] == expected
    assert command[command.index("--backend") + 1] == "nccl"


def test_launch_failures_name_the_host() -> None:
    launch = Launch(hosts=["10.0.0.1", "10.0.0.2"])
    notes = ["[WARN] Node with rank 1 exited with code 255", "[WARN] Node with rank 0 was killed"]
    assert (rank_failure(notes, launch) or "").startswith("Rank 1 on 10.0.0.2 exited with code 255")
    assert rank_failure(["[WARN] Node with rank 1 exited with code 3"], launch) is None  # a stop
    refusal = ["mlx.launch: error: The ring backend requires IPs to be provided instead of ",
               "hostnames"]  # fmt: skip
    assert launch_refusal(refusal, Launch(hosts=["mac-1"])) == (
        "mlx.launch refused the hosts mac-1: The ring backend requires IPs to be provided "
        "instead of hostnames; fix --hosts or --hostfile."
    )


RANK_SCRIPT = """
import json
from ai_lsp_tune.training import distributed
world = distributed.join()
versions = {"mlx": "0.32.4", "mlx-lm": "0.32.2" if world.rank == 0 else "0.31.0"}
print(json.dumps({"rank": world.rank, "message": distributed.check_versions(versions, world)}))
"""


def test_ranks_with_other_package_versions_are_refused_naming_the_host() -> None:
    from tests.helpers.training import BIN, ONE_THREAD, free_ports

    launcher = [str(BIN / "mlx.launch"), "--backend", "ring", "-n", "2", "-p", str(free_ports())]
    launched = subprocess.run(
        [*launcher, "--", sys.executable, "-c", RANK_SCRIPT],
        capture_output=True,
        text=True,
        env={**os.environ, **ONE_THREAD},
        timeout=120,
    )
    answers = [json.loads(line) for line in launched.stdout.splitlines() if line.startswith("{")]
    assert sorted(a["rank"] for a in answers) == [0, 1], launched.stderr
    expected = (
        "Rank 1 on 127.0.0.1 runs other package versions than rank 0 (mlx 0.32.4, mlx-lm "
        "0.32.2); install the same environment on every host (`uv sync --locked`)."
    )
    assert [a["message"] for a in answers] == [expected, expected]


async def test_a_host_that_cannot_be_reached_is_named_before_anything_starts(
    tiny_model: Path, tmp_path: Path
) -> None:
    from ai_lsp_tune.training.runner import TrainingRunner
    from tests.helpers.training import fast_request, write_splits

    # 127.0.0.2 is this machine's loopback too, but no ssh answers there: refused at once.
    launch = Launch(hosts=["127.0.0.1", "127.0.0.2"])
    request = fast_request(tiny_model, tmp_path, write_splits(tmp_path / "data", 4, 1, 1))
    seen: list[object] = []
    outcome = await TrainingRunner(request, seen.append, launch=launch).run()
    assert outcome.status == "error" and outcome.returncode is None  # nothing was started
    assert outcome.event.message.startswith("Host 127.0.0.2 cannot be reached over ssh")
    assert "fix --hosts or --hostfile" in outcome.event.message
    assert seen == [outcome.event]
    assert not (tmp_path / "out").exists()
