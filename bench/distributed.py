"""Trained tokens/s of one rank vs two data-parallel ranks (mlx.launch, ring over TCP).

    uv run python bench/distributed.py [--examples 64] [--epochs 2] [--batch-size 8]

The same training worker the CLI and the editor run (``--hosts`` runs it the same way),
on the tiny local model, same data, seed and global batch; validation and evaluation kept
to a minimum and outside the measured time (run.json ``train_seconds``: rank 0's time inside
the training loop, which waits for the slower rank at every gradient all-sum).

Each rank gets one core (``taskset -c RANK``) and one compute thread: MLX's CPU stream is one
thread and its Linux wheel links the single-threaded reference BLAS; OMP/OpenBLAS/tokenizers
are set to one thread too. Results go to the "distributed" section of bench/RESULTS.md.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from train import write_dataset  # bench/train.py

from ai_lsp_tune.cli.tiny_model import ensure_tiny_model
from ai_lsp_tune.training.protocol import TrainRequest

RESULTS = Path(__file__).with_name("RESULTS.md")
BIN = Path(sys.executable).parent
ONE_THREAD = {
    "OMP_NUM_THREADS": "1",
    "OPENBLAS_NUM_THREADS": "1",
    "TOKENIZERS_PARALLELISM": "false",
}
PINNED = 'exec taskset -c "${MLX_RANK:-0}" "$@"'  # each rank on its own core


def run(model: Path, data: Path, args: argparse.Namespace, work: Path, ranks: int) -> dict:
    request = TrainRequest(
        dataset=data,
        model_name=str(model),
        output_dir=work / f"ranks-{ranks}",
        num_epochs=args.epochs,
        batch_size=args.batch_size,
        learning_rate=5e-4,
        num_layers=-1,
        eval_max_examples=0,
        eval_every=1_000_000,
        val_batches=1,
    )
    worker = [str(BIN / "python"), "-m", "ai_lsp_tune.training.worker", "--events-fd", "1",
              "--request", request.model_dump_json()]  # fmt: skip
    pinned = ["sh", "-c", PINNED, "sh", *worker]
    if ranks > 1:
        launcher = [str(BIN / "mlx.launch"), "--backend", "ring", "-n", str(ranks), "-p", "45123"]
        pinned = [*launcher, "--", *pinned]
    done = subprocess.run(
        pinned, env={**os.environ, **ONE_THREAD}, capture_output=True, text=True, timeout=1800
    )
    if '"phase":"done"' not in done.stdout:
        raise SystemExit(f"{ranks} rank(s) failed:\n{done.stdout[-2000:]}\n{done.stderr[-3000:]}")
    return json.loads((work / f"ranks-{ranks}" / "run.json").read_text())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--examples", type=int, default=64)
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--batch-size", type=int, default=8, help="global batch")
    args = parser.parse_args()
    load_before = os.getloadavg()[0]
    rows = []
    with tempfile.TemporaryDirectory(prefix="bench-distributed-") as tmp:
        work = Path(tmp)
        model = ensure_tiny_model(work / "cache")
        data = write_dataset(work / "data", args.examples, skewed=False)
        for ranks in (1, 2):
            result = run(model, data, args, work, ranks)
            rows.append((ranks, result))
            print(ranks, result["trained_tokens"], result["train_seconds"], flush=True)
    load_after = os.getloadavg()[0]
    write_results(args, rows, load_before, load_after)


def write_results(
    args: argparse.Namespace, rows: list, load_before: float, load_after: float
) -> None:
    one = rows[0][1]["tokens_per_sec"]
    lines = [
        "## distributed (LoRA tokens/s: 1 rank vs 2 ranks on mlx.launch)",
        "",
        f"`uv run python bench/distributed.py --examples {args.examples} --epochs {args.epochs} "
        f"--batch-size {args.batch_size}` on {os.cpu_count()} CPU(s), {platform.machine()}, "
        f"Python {platform.python_version()}, {time.strftime('%Y-%m-%d')}; tiny local model "
        "(CPU, `mlx[cpu]`), LoRA rank 8 on all layers, global batch "
        f"{args.batch_size} (each of 2 ranks takes {args.batch_size // 2} per step), same seed "
        "and data; ring backend over TCP on 127.0.0.1. One core and one compute thread per "
        "rank: `taskset -c RANK`, OMP_NUM_THREADS=OPENBLAS_NUM_THREADS=1, "
        "TOKENIZERS_PARALLELISM=false (MLX's CPU stream is one thread; its Linux wheel links "
        "the single-threaded reference BLAS). One run each, same machine, same run.",
        "",
        "| ranks | iterations | trained tokens | train s | tokens/s | scaling efficiency |",
        "|---|---|---|---|---|---|",
    ]
    for ranks, run in rows:
        tps = run["tokens_per_sec"]
        lines.append(
            f"| {ranks} | {run['iterations']} | {run['trained_tokens']} | "
            f"{run['train_seconds']:.1f} | {tps:,.0f} | {tps / (ranks * one):.0%} |"
        )
    busy = load_before > 0.5
    lines += [
        "",
        f"- 2 ranks train **{rows[1][1]['tokens_per_sec'] / one:.2f}x** the tokens/s of one "
        "(scaling efficiency = tokens/s / (ranks x one rank's tokens/s)). Load average "
        f"{load_before:.1f} before the run and {load_after:.1f} after"
        + (
            ": the machine was shared with other work, so a rank's core was not always its "
            "own; the numbers move by +-30% between runs."
            if busy
            else " (the machine was otherwise quiet)."
        ),
        "- The tiny model's steps are a few milliseconds of compute, so the per-step all-sums "
        "(gradients, the loss's token count, the stop flag, the reported loss) weigh more "
        "here than on a real model, where each step computes for seconds.",
        "- Not measured: the NCCL backend on CUDA GPUs and real multi-host runs (Macs over "
        "Thunderbolt/Ethernet); no GPU machine was lent to this session.",
        "",
    ]
    text = RESULTS.read_text()
    section = "\n".join(lines)
    pattern = re.compile(r"## distributed \(.*?(?=\n## |\Z)", re.DOTALL)
    if pattern.search(text):
        text = pattern.sub(lambda _: section, text, count=1)
    else:
        text = text.rstrip("\n") + "\n\n" + section
    RESULTS.write_text(text)
    print(f"wrote the distributed section of {RESULTS}")


if __name__ == "__main__":
    main()
