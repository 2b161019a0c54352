"""Data-parallel training across ranks started by ``mlx.launch`` (ring, MPI, NCCL).

Every rank reads the same dataset and model; each takes its shard of every length-grouped
batch (``shard``), mlx-lm averages the gradients. Rank 0 (the leader) validates, evaluates,
checkpoints and publishes; the other ranks never write to the output. The parent side
(``launch_command``) needs no MLX: it only builds the ``mlx.launch`` command line.
"""

from __future__ import annotations

import atexit
import io
import json
import os
import re
import shutil
import tarfile
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, TypeVar

if TYPE_CHECKING:
    import mlx.core as mx

Backend = Literal["ring", "mpi", "nccl"]
BACKENDS: tuple[Backend, ...] = ("ring", "mpi", "nccl")
# Set by ``launch_command`` for every rank: what run.json records (hostnames, not only IPs).
HOSTS_ENV, BACKEND_ENV = "AI_LSP_DIST_HOSTS", "AI_LSP_DIST_BACKEND"
EXIT_CANCELLED = 3  # the worker's exit code when it stopped on request
PEER_LOST = "connection to a peer was lost"
_RANK_FAILED = re.compile(r"Node with rank (\d+) (was killed|exited with code -?\d+)")
T = TypeVar("T")


@dataclass(frozen=True)
class World:
    """This process's place in the run: rank, world size, backend and hosts (run.json)."""

    rank: int = 0
    size: int = 1
    backend: str = "none"
    hosts: list[str] = field(default_factory=list)
    group: Any = None  # mx.distributed.Group when size > 1

    @property
    def leader(self) -> bool:
        """Rank 0 validates, evaluates, checkpoints and publishes; the others only train."""
        return self.rank == 0

    def host_of(self, rank: int) -> str:
        return self.hosts[rank] if rank < len(self.hosts) else f"rank {rank}"

    def record(self) -> dict[str, Any]:
        """run.json's ``distributed`` entry."""
        return {"world_size": self.size, "backend": self.backend, "hosts": self.hosts}


def launched_rank() -> int | None:
    """This process's rank when ``mlx.launch`` started it (no MLX import), else None."""
    for name in ("MLX_RANK", "OMPI_COMM_WORLD_RANK", "PMI_RANK"):
        if os.environ.get(name, "").isdigit():
            return int(os.environ[name])
    return None


def _backend_from_env() -> str:
    if os.environ.get(BACKEND_ENV):
        return os.environ[BACKEND_ENV]
    if os.environ.get("MLX_HOSTFILE"):
        return "ring"
    if os.environ.get("MLX_WORLD_SIZE"):
        return "nccl"
    if "OMPI_COMM_WORLD_RANK" in os.environ or "PMI_RANK" in os.environ:
        return "mpi"
    return "none"


def _hosts_from_env() -> list[str]:
    if os.environ.get(HOSTS_ENV):
        return os.environ[HOSTS_ENV].split(",")
    try:  # the ring backend's hostfile: one list of "ip:port" per rank
        ring = json.loads(Path(os.environ["MLX_HOSTFILE"]).read_text())
        return [str(node[0]).rsplit(":", 1)[0] for node in ring]
    except (KeyError, OSError, ValueError, IndexError, TypeError):
        return []  # MPI or NCCL started by hand: the launcher does not say


def join() -> World:
    """Join the ranks ``mlx.launch`` started (or be a world of one); call before training."""
    if launched_rank() is None:
        return World()
    import mlx.core as mx

    group = mx.distributed.init()
    if group.size() == 1:
        return World()
    return World(
        rank=group.rank(),
        size=group.size(),
        backend=_backend_from_env(),
        hosts=_hosts_from_env(),
        group=group,
    )


def shard(items: list[T], rank: int, size: int) -> list[T]:
    """This rank's part of one batch; a batch smaller than the world repeats an item so
    every rank still takes a step (the gradients are averaged over the ranks)."""
    mine = items[rank::size]
    return mine or [items[rank % len(items)]]


def _all_sum(values: mx.array, world: World) -> mx.array:
    import mlx.core as mx

    return mx.distributed.all_sum(values, group=world.group, stream=mx.cpu)


def sum_over_ranks(values: list[float], world: World) -> list[float]:
    """``values`` summed element-wise over the ranks (each rank's own where it is alone)."""
    if world.size == 1:
        return values
    import mlx.core as mx
    import numpy as np

    return [float(v) for v in np.array(_all_sum(mx.array(values, dtype=mx.float32), world))]


def any_stopped(stop: bool, world: World) -> bool:
    """Whether any rank was asked to stop: all ranks then stop at the same step."""
    if world.size == 1:
        return stop
    import mlx.core as mx

    return bool(_all_sum(mx.array([1 if stop else 0], dtype=mx.int32), world).item())


def broadcast_bytes(data: bytes, world: World) -> bytes:
    """Rank 0's ``data`` on every rank (the others pass b"")."""
    if world.size == 1:
        return data
    import mlx.core as mx
    import numpy as np

    size = int(np.array(_all_sum(mx.array([len(data) if world.leader else 0]), world))[0])
    if not size:
        return b""
    mine = np.frombuffer(data, np.uint8) if world.leader else np.zeros(size, np.uint8)
    return bytes(np.array(_all_sum(mx.array(mine), world), copy=False).astype(np.uint8))


def shared_checkpoint(folder: Path, world: World) -> Path:
    """The leader's checkpoint folder, copied for the other ranks into a private temp dir
    (they never read or write the output, which may be on another host)."""
    if world.size == 1:
        return folder
    data = b""
    if world.leader and (folder / "state.json").exists():
        buffer = io.BytesIO()
        with tarfile.open(fileobj=buffer, mode="w") as tar:
            tar.add(folder, arcname="checkpoint")
        data = buffer.getvalue()
    data = broadcast_bytes(data, world)
    if world.leader:
        return folder
    copy = Path(tempfile.mkdtemp(prefix="ai-lsp-rank-")) / "checkpoint"
    atexit.register(shutil.rmtree, copy.parent, True)
    if data:
        with tarfile.open(fileobj=io.BytesIO(data)) as tar:
            tar.extractall(copy.parent, filter="data")
    return copy


def check_versions(versions: dict[str, str], world: World) -> str | None:
    """A message naming the first rank (and host) whose package versions differ from rank 0's."""
    if world.size == 1:
        return None
    import mlx.core as mx
    import numpy as np

    mine = json.dumps(versions, sort_keys=True).encode()
    leaders = broadcast_bytes(mine if world.leader else b"", world)
    flags = [0] * world.size
    flags[world.rank] = int(mine != leaders)
    differs = [int(x) for x in np.array(_all_sum(mx.array(flags, dtype=mx.int32), world))]
    if not any(differs):
        return None
    rank = differs.index(1)
    expected = ", ".join(f"{k} {v}" for k, v in json.loads(leaders).items())
    return (
        f"Rank {rank} on {world.host_of(rank)} runs other package versions than rank 0 "
        f"({expected}); install the same environment on every host (`uv sync --locked`)."
    )


def peer_lost_message(exc: BaseException, world: World) -> str | None:
    """One line for a rank that lost its peers (another rank died or a host went away)."""
    if PEER_LOST not in str(exc) and "[ring]" not in str(exc) and "NCCL" not in str(exc):
        return None
    others = ", ".join(world.host_of(r) for r in range(world.size) if r != world.rank)
    return (
        f"Rank {world.rank} lost the connection to the other ranks ({others or 'unknown'}): "
        "one of them stopped or its host became unreachable; see its log. Nothing was "
        "published."
    )


@dataclass(frozen=True)
class Launch:
    """Where to run the worker through ``mlx.launch``: hosts (or a hostfile) and a backend."""

    hosts: list[str] = field(default_factory=list)
    hostfile: Path | None = None
    backend: str | None = None
    where: str = "--hosts or --hostfile"  # what the user changes: CLI options or settings

    def host_names(self) -> list[str]:
        if self.hostfile is None:
            return self.hosts or ["127.0.0.1"]
        try:
            return hostfile_hosts(self.hostfile)
        except (OSError, ValueError, AttributeError):
            return [str(self.hostfile)]


def rank_failure(log_lines: list[str], launch: Launch) -> str | None:
    """One line naming the host of the first rank ``mlx.launch`` saw fail, from its log."""
    found = next((m for line in log_lines if (m := _RANK_FAILED.search(line))), None)
    if found is None or found.group(2).endswith(f" {EXIT_CANCELLED}"):
        return None  # a rank that was asked to stop: the others stopped with it
    rank, names = int(found.group(1)), launch.host_names()
    host = names[rank] if rank < len(names) else f"rank {rank}"
    return (
        f"Rank {rank} on {host} {found.group(2)}; the other ranks were stopped and nothing was "
        "published. Check that the host is reachable, has the same Python environment and the "
        "dataset at the same path, and see its log."
    )


def launch_refusal(log_lines: list[str], launch: Launch) -> str | None:
    """mlx.launch's own refusal (a bad host list or hostfile), as one line naming the hosts."""
    for at, line in enumerate(log_lines):
        if "mlx.launch: error:" in line:
            reason = " ".join(part.strip() for part in log_lines[at:]).split("error:", 1)[1]
            return (
                f"mlx.launch refused the hosts {', '.join(launch.host_names())}: "
                f"{reason.strip()}; fix {launch.where}."
            )
    return None


LOCAL_HOSTS = frozenset({"127.0.0.1", "localhost", "::1"})
SSH_PORT, REACH_TIMEOUT_S = 22, 5.0


def unreachable_host(launch: Launch, timeout_s: float = REACH_TIMEOUT_S) -> str | None:
    """One line naming the first remote host whose ssh port does not answer, before anything
    starts (mlx.launch's ssh would wait for the system's TCP timeout, minutes)."""
    import socket

    local = LOCAL_HOSTS | {socket.gethostname()}
    for host in dict.fromkeys(launch.host_names()):
        name = host.rsplit("@", 1)[-1]  # a hostfile's "ssh" may be user@host
        if name in local:
            continue
        try:
            socket.create_connection((name, SSH_PORT), timeout=timeout_s).close()
        except OSError as exc:
            reason = "no answer" if isinstance(exc, TimeoutError) else str(exc) or "refused"
            return (
                f"Host {host} cannot be reached over ssh (port {SSH_PORT}: {reason}); nothing "
                f"was started. Check the host is up and reachable, or fix {launch.where}."
            )
    return None


def launch_command(
    python: str,
    worker_args: list[str],
    *,
    hosts: list[str] | None = None,
    hostfile: Path | None = None,
    backend: str | None = None,
) -> list[str]:
    """``mlx.launch`` running the worker on every host; mlx.launch itself ignores SIGTERM so
    that a cancel (SIGTERM to the process group) reaches the ranks, which stop together."""
    starter = (
        "import signal, sys; signal.signal(signal.SIGTERM, signal.SIG_IGN); "
        "from mlx._distributed_utils.launch import main; sys.argv[0] = 'mlx.launch'; main()"
    )
    command = [python, "-c", starter]
    if hostfile is not None:
        command += ["--hostfile", str(hostfile)]
        names = Launch(hostfile=hostfile).host_names()
    else:
        names = hosts or ["127.0.0.1"]
        if len(set(names)) == 1:  # N ranks on one host: with nccl, one GPU each
            command += ["--hosts", names[0], "-n", str(len(names))]
        else:
            command += ["--hosts", ",".join(names)]
    if backend:
        command += ["--backend", backend, "--env", f"{BACKEND_ENV}={backend}"]
    command += ["--env", f"{HOSTS_ENV}={','.join(names)}"]
    return [*command, "--", python, *worker_args]


def hostfile_hosts(hostfile: Path) -> list[str]:
    """The host names in an ``mlx.launch`` hostfile (a list, or {"hosts": [...]})."""
    data = json.loads(hostfile.read_text())
    entries = data.get("hosts", []) if isinstance(data, dict) else data
    return [str(e.get("ssh", "") if isinstance(e, dict) else e) for e in entries]
