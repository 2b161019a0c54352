"""Our trainer with the frozen layers cached vs every layer every step: same model, data,
settings and iterations (``bench/train.py --frozen-layers K``).

LoRA on the last ``K`` layers; "cached" is the product as shipped (``training/frozen.py``),
"every layer" the same run with ``AI_LSP_TRAIN_FROZEN=0``. Both train the same tokens in the
same order: their per-step training losses are printed side by side and must match. Seconds are
the training loop's (run.json ``train_seconds``, validation excluded) plus, for the cached run,
building the cache (``frozen_cache_seconds``): the whole price of the recipe.
"""

from __future__ import annotations

import argparse
import os
import platform
import time
from pathlib import Path

SECTION = "train, frozen layers (SmolLM2-135M, last {k} of 30 layers)"
MODEL = (
    "a random model of SmolLM2-135M's shape (bench/smollm2.py), trained dequantized to fp32 "
    "on OpenBLAS as the product trains SmolLM2 on the CPU (training/precision.py)"
)


def compare(args: argparse.Namespace, model: Path, work: Path) -> None:
    """Both runs on the uniform set; their row in bench/RESULTS.md."""
    import train  # bench/train.py, on sys.path as this file's neighbour
    from smollm2 import write_section

    load_before = os.getloadavg()
    n = args.examples // train.SETTINGS["batch_size"] * train.SETTINGS["batch_size"]
    data = train.write_dataset(work / "uniform", n, skewed=False)
    tokens, shortest, longest, _ = train.trained_tokens(model, data, args.epochs)
    runs = {}
    for name, env in (("every layer", {"AI_LSP_TRAIN_FROZEN": "0"}), ("cached", {})):
        folder = work / name.replace(" ", "-")
        seconds, rss, run = train.run_ours(
            model, data, args.epochs, folder, env=env, num_layers=args.frozen_layers
        )
        cache_s = run["batching"].get("frozen_cache_seconds", 0.0)
        runs[name] = (seconds, cache_s, rss, run)
        print(name, f"{seconds:.1f} s + cache {cache_s:.1f} s", run["batching"], flush=True)
    plain_losses = [loss for _, loss in runs["every layer"][3]["train_loss_history"]]
    cached_losses = [loss for _, loss in runs["cached"][3]["train_loss_history"]]
    print("losses, every layer:", plain_losses, "\nlosses, cached:     ", cached_losses)
    pairs = zip(plain_losses, cached_losses, strict=True)
    worst = max(abs(a - b) / max(abs(a), 1e-6) for a, b in pairs)
    assert worst < 1e-3, worst
    assert runs["cached"][3]["batching"]["frozen_layers"] == 30 - args.frozen_layers
    load_after = os.getloadavg()
    plain_s = runs["every layer"][0]
    cached_s = runs["cached"][0] + runs["cached"][1]
    rows = [
        f"| {name} | {n} | {run['iterations']} | {shortest}-{longest} | {tokens} | "
        f"{s:.1f} | {c:.1f} | {tokens / (s + c):,.0f} | "
        f"{run['batching'].get('frozen_cache_mib', 0)} | {rss:.0f} |"
        for name, (s, c, rss, run) in runs.items()
    ]
    section = SECTION.format(k=args.frozen_layers)
    text = "\n".join(
        [
            f"## {section}",
            "",
            f"`nice -n 15 uv run python bench/train.py --model smollm2 --frozen-layers "
            f"{args.frozen_layers} --examples {args.examples} --epochs {args.epochs}` on "
            f"{os.cpu_count()} CPU(s), {platform.machine()}, {time.strftime('%Y-%m-%d')}; "
            f"{MODEL}. Batch {train.SETTINGS['batch_size']}, LoRA rank "
            f"{train.SETTINGS['lora_rank']} on the last {args.frozen_layers} layers; packed, "
            "shared prefix and query chunks as shipped in both. Load average (1, 5, 15 min) "
            f"before: {', '.join(f'{x:.2f}' for x in load_before)}; after: "
            f"{', '.join(f'{x:.2f}' for x in load_after)} (a shared machine).",
            "",
            "| ours | examples | iterations | tokens/example | trained tokens | steps s | "
            "cache s | tok/s (all) | cache MiB | peak RSS MiB |",
            "|---|---|---|---|---|---|---|---|---|---|",
            *rows,
            "",
            f"**{plain_s / cached_s:.2f}x** faster with the cache, its building included. "
            "Cache tokens are the rows kept: the system prompt every example starts with once, "
            "then each example's own tokens. A step without the cache runs the 30 layers "
            "forward and only the last ones backward (MLX differentiates only what reaches the "
            "LoRA weights); with it, the last ones both ways: the gain grows with the epochs. "
            f"Per-step training losses equal (largest relative difference {worst:.1e}): "
            f"every layer {plain_losses}; cached {cached_losses}.",
            "",
        ]
    )
    write_section(train.RESULTS, f"## {section}", text)
    print(text)
