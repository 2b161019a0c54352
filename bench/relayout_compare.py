"""Before/after a refactor: `ai-lsp finetune prepare-dataset` of two source trees on one input.

    uv run python bench/relayout_compare.py BEFORE_TREE AFTER_TREE [SIZE_MIB] [RUNS]

Each tree needs its own `.venv` (`uv sync` in it). Runs alternate between the trees; the best
wall and CPU time of each count. Used for issue 13's re-layout (see RESULTS.md).
"""

import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from bench.extract import build

size = int(sys.argv[3]) if len(sys.argv) > 3 else 100
runs = int(sys.argv[4]) if len(sys.argv) > 4 else 3
trace = build(size)
trees = {"before": Path(sys.argv[1]).resolve(), "after": Path(sys.argv[2]).resolve()}
results = {k: [] for k in trees}
out = Path(tempfile.mkdtemp(prefix="relayout-compare-"))
for r in range(runs):
    for name, tree in trees.items():
        before = resource.getrusage(resource.RUSAGE_CHILDREN)
        t0 = time.perf_counter()
        command = [str(tree / ".venv/bin/python"), "-m", "ai_lsp_tune.cli", "finetune"]
        command += ["prepare-dataset", str(trace)]
        command += ["--output-file", str(out / f"{r}-{name}.json")]
        command += ["--output-dir", str(out / f"{r}-{name}")]
        env = {**os.environ, "HF_HUB_OFFLINE": "1"}
        subprocess.run(command, cwd=tree, check=True, capture_output=True, env=env)
        wall = time.perf_counter() - t0
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
        cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
        results[name].append((wall, cpu))
        print(name, f"wall {wall:.2f} s cpu {cpu:.2f} s", flush=True)
for name, rs in results.items():
    wall, cpu = min(w for w, _ in rs), min(c for _, c in rs)
    print(f"{name}: best wall {wall:.2f} s, best cpu {cpu:.2f} s")
print("load", os.getloadavg())
shutil.rmtree(out, ignore_errors=True)
