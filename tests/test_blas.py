"""MLX on a Linux CPU computes on OpenBLAS, proven by where the dynamic linker binds libmlx's
``cblas_sgemm``, with the reference BLAS and one warning line when OpenBLAS cannot load."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import mlx.core as mx
import numpy as np
import pytest

from ai_lsp_tune import blas

pytestmark = pytest.mark.skipif(
    blas.reference_blas() is None, reason="MLX does not link the reference BLAS here (not mlx[cpu])"
)

MATMUL = """
import ai_lsp_tune, json
from ai_lsp_tune import blas
import mlx.core as mx
mx.eval(mx.ones((64, 64)) @ mx.ones((64, 64)))
print(json.dumps(blas.status().as_dict()))
"""


def run_python(code: str, tmp_path: Path, **env: str) -> subprocess.CompletedProcess[str]:
    environment = {**os.environ, "XDG_CACHE_HOME": str(tmp_path / "cache"), **env}
    environment.pop("OPENBLAS_NUM_THREADS", None)
    return subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=environment, timeout=120
    )


def libmlx_binding(log_prefix: Path, symbol: str = "cblas_sgemm") -> str:
    """The file LD_DEBUG=bindings says libmlx's ``symbol`` was bound to."""
    pattern = re.compile(
        rf"binding file \S*libmlx\.so \[\d+\] to (\S+) \[\d+\]: normal symbol `{symbol}'"
    )
    for log in log_prefix.parent.glob(f"{log_prefix.name}.*"):
        for line in log.read_text(errors="replace").splitlines():
            if found := pattern.search(line):
                return found.group(1)
    raise AssertionError(f"libmlx's {symbol} was never bound")


def test_a_fresh_machine_binds_libmlx_to_openblas(tmp_path: Path) -> None:
    """No cached copy yet: it is made (from the pip packages only) and libmlx binds to it."""
    log = tmp_path / "ld"
    done = run_python(MATMUL, tmp_path, LD_DEBUG="bindings", LD_DEBUG_OUTPUT=str(log))
    assert done.returncode == 0, done.stderr
    assert done.stderr == ""
    status = blas.BlasStatus(**json.loads(done.stdout))
    assert status.name.startswith("OpenBLAS")
    assert status.threads == blas.default_threads()
    assert status.library is not None
    assert Path(status.library).parent == tmp_path / "cache" / "ai-lsp-tune" / "blas"
    assert os.path.realpath(libmlx_binding(log)) == os.path.realpath(status.library)
    assert os.path.realpath(libmlx_binding(log, "sgetrf_")) == os.path.realpath(status.library)


def test_the_copy_is_made_once(tmp_path: Path) -> None:
    first = run_python(MATMUL, tmp_path)
    copies = list((tmp_path / "cache" / "ai-lsp-tune" / "blas").iterdir())
    assert [c.name for c in copies if c.name.startswith(".")] == []  # no temp left behind
    made = {c: c.stat().st_mtime_ns for c in copies}
    second = run_python(MATMUL, tmp_path)
    assert first.stdout == second.stdout
    assert {c: c.stat().st_mtime_ns for c in copies} == made


def test_reference_setting_keeps_mlx_own_blas(tmp_path: Path) -> None:
    log = tmp_path / "ld"
    done = run_python(
        MATMUL, tmp_path, AI_LSP_BLAS="reference", LD_DEBUG="bindings", LD_DEBUG_OUTPUT=str(log)
    )
    assert done.returncode == 0 and done.stderr == ""
    assert "mlx_cpu.libs/libblas" in libmlx_binding(log)


@pytest.mark.parametrize(
    ("code", "setting", "named"),
    [
        (MATMUL, "missing.so", "AI_LSP_BLAS"),  # AI_LSP_BLAS names no library
        ("import mlx.core; " + MATMUL, "auto", "import ai_lsp_tune first"),
    ],
)
def test_no_openblas_warns_in_one_line_and_still_computes(
    tmp_path: Path, code: str, setting: str, named: str
) -> None:
    value = str(tmp_path / setting) if setting.endswith(".so") else setting
    done = run_python(code, tmp_path, AI_LSP_BLAS=value)
    assert done.returncode == 0, done.stderr
    assert len(done.stderr.splitlines()) == 1
    assert done.stderr.startswith("ai-lsp: MLX runs on the reference BLAS")
    assert named in done.stderr
    assert '"name": "reference (netlib)"' in done.stdout


@pytest.mark.parametrize(
    ("m", "k", "n", "transpose"),
    [(1, 576, 1536, False), (257, 576, 192, False), (96, 64, 130, True), (3, 1, 5, False)],
)
def test_matmul_matches_numpy(m: int, k: int, n: int, transpose: bool) -> None:
    """This test process imported ai_lsp_tune first (conftest): its matmuls run on OpenBLAS."""
    assert blas.status().name.startswith("OpenBLAS")
    rng = np.random.default_rng(0)
    a = rng.standard_normal((m, k), dtype=np.float32)
    b = rng.standard_normal((n, k) if transpose else (k, n), dtype=np.float32)
    got = mx.matmul(mx.array(a), mx.array(b).T if transpose else mx.array(b))
    want = a @ (b.T if transpose else b)
    np.testing.assert_allclose(np.array(got), want, rtol=1e-4, atol=1e-4 * np.sqrt(k))


def test_lapack_routines_run_on_openblas_too() -> None:
    rng = np.random.default_rng(1)
    a = rng.standard_normal((48, 48)).astype(np.float32) + 48 * np.eye(48, dtype=np.float32)
    inverse = mx.linalg.inv(mx.array(a), stream=mx.cpu)
    np.testing.assert_allclose(np.array(inverse) @ a, np.eye(48), atol=1e-4)
    q, r = mx.linalg.qr(mx.array(a), stream=mx.cpu)
    np.testing.assert_allclose(np.array(q @ r), a, atol=1e-3)


def test_version_names_the_blas(tmp_path: Path) -> None:
    done = subprocess.run(
        [Path(sys.executable).parent / "ai-lsp", "--version"],
        capture_output=True,
        text=True,
        env={**os.environ, "XDG_CACHE_HOME": str(tmp_path / "cache")},
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    assert re.fullmatch(
        r"ai-lsp-tune \S+, mlx \S+, BLAS: OpenBLAS \S+ \w+, \d+ threads? \(.+\)\n", done.stdout
    )


@pytest.mark.parametrize(
    ("affinity", "busy", "threads"),
    [
        (4, 0.0, 4),  # an idle machine: every core
        (4, 1.0, 3),  # another process holds one core: it keeps it
        (4, 1.6, 2),  # ... and most of another
        (4, 3.9, 1),  # all busy: still one thread
        (2, 0.0, 2),  # only the cores this process may use
    ],
)
def test_a_foreground_run_takes_the_cores_no_other_process_is_busy_on(
    monkeypatch: pytest.MonkeyPatch, affinity: int, busy: float, threads: int
) -> None:
    samples = iter([(0, 0), (4000, int(busy * 1000))])  # 4 cores x 1000 jiffies, busy ones
    monkeypatch.setattr(blas, "_cpu_times", lambda: next(samples))
    monkeypatch.setattr(os, "cpu_count", lambda: 4)
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: set(range(affinity)))
    assert blas.foreground_threads(sample_s=0) == threads


def test_a_foreground_run_without_proc_stat_keeps_the_default(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    def unreadable() -> tuple[int, int]:
        raise OSError("no /proc/stat")

    monkeypatch.setattr(blas, "_cpu_times", unreadable)
    assert blas.foreground_threads(sample_s=0) == blas.default_threads()


def test_cpu_times_read_this_machine() -> None:
    total, busy = blas._cpu_times()
    assert 0 <= busy <= total and total > 0


FIT = """
import ai_lsp_tune, json
from ai_lsp_tune import blas
chosen = blas.status()
fitted = blas.fit_to_model({hidden})
print(json.dumps([chosen.threads, chosen.threads_from, fitted.threads, fitted.threads_from,
                  blas._openblas.openblas_get_num_threads()]))
"""


@pytest.mark.skipif(len(os.sched_getaffinity(0)) < 2, reason="one core: one thread whatever")
@pytest.mark.parametrize(
    ("setting", "hidden", "fitted"),
    [
        ("AI_LSP_BLAS_THREADS", 96, 1),  # the CLI's choice, a tiny model: one thread
        ("AI_LSP_BLAS_THREADS", 576, 2),  # SmolLM2's size keeps the CLI's choice
        ("OPENBLAS_NUM_THREADS", 96, 2),  # the user's setting is kept whatever the model
    ],
)
def test_threads_the_cli_or_the_user_chose_fit_the_model(
    tmp_path: Path, setting: str, hidden: int, fitted: int
) -> None:
    environment = {**os.environ, "XDG_CACHE_HOME": str(tmp_path / "cache")}
    environment.pop("OPENBLAS_NUM_THREADS", None)
    environment.pop("AI_LSP_BLAS_THREADS", None)
    environment[setting] = "2"
    done = subprocess.run(
        [sys.executable, "-c", FIT.format(hidden=hidden)],
        capture_output=True, text=True, env=environment, timeout=120,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    chosen, chosen_from, threads, threads_from, in_openblas = json.loads(done.stdout)
    assert chosen == 2
    assert chosen_from == (
        "the cores free when the run started" if setting == "AI_LSP_BLAS_THREADS" else setting
    )
    assert threads == in_openblas == fitted  # what OpenBLAS itself runs on
    if fitted == 1:
        assert threads_from == "one: a model of hidden size 96 is too small"
