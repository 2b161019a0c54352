"""Training inputs the tests share: prepared splits, a quick request, distributed runs' set-up."""

from __future__ import annotations

import json
import random
import socket
import sys
from pathlib import Path
from typing import Any

from ai_lsp_tune.cli.demo import sample_analyses
from ai_lsp_tune.training.data import TokenizedSplit
from ai_lsp_tune.training.protocol import TrainRequest

# What the tiny model needs to learn the fixed answer pattern in ~120 steps.
FAST = {"batch_size": 4, "learning_rate": 5e-4, "lora_rank": 8, "num_layers": -1}


def write_splits(folder: Path, n_train: int, n_valid: int, n_test: int) -> Path:
    """A prepared split folder (mlx-lm chat format) of fixed-pattern analyses."""
    samples = sample_analyses(n_train + n_valid + n_test, seed=1)
    folder.mkdir(parents=True)
    bounds = {"train": (0, n_train), "valid": (n_train, n_train + n_valid)}
    bounds["test"] = (n_train + n_valid, len(samples))
    for split, (start, end) in bounds.items():
        with open(folder / f"{split}.jsonl", "w") as handle:
            for s in samples[start:end]:
                messages = [
                    {"role": "system", "content": s.system},
                    {"role": "user", "content": s.user},
                    {"role": "assistant", "content": s.assistant},
                ]
                handle.write(json.dumps({"messages": messages}) + "\n")
    return folder


def fast_request(tiny_model: Path, tmp_path: Path, dataset: Path, **options: Any) -> TrainRequest:
    """A quick run of the tiny model on ``dataset``, published to ``tmp_path / "out"``."""
    return TrainRequest.model_validate(
        {
            "dataset": dataset,
            "model_name": str(tiny_model),
            "output_dir": tmp_path / "out",
            **FAST,
            **options,
        }
    )


BIN = Path(sys.executable).parent


ONE_THREAD = {
    "OMP_NUM_THREADS": "1",
    "OPENBLAS_NUM_THREADS": "1",
    "TOKENIZERS_PARALLELISM": "false",
}


def free_ports() -> int:
    """A port p with p and p + 1 free (the ring backend listens on one port per rank)."""
    for _ in range(50):
        port = random.randint(40000, 60000)
        try:
            for p in (port, port + 1):
                with socket.socket() as s:
                    s.bind(("127.0.0.1", p))
        except OSError:
            continue
        return port
    raise RuntimeError("no free ports")


BATCH = 4


# Sorted, the groups of 4 are skewed: [10 12 14 16] and [20 100 110 120]; the shorter fit two
# to a row of the group's longest.
LENGTHS = [110, 12, 20, 16, 100, 10, 120, 14]


def skewed_split(vocab: int) -> TokenizedSplit:
    import numpy as np

    rng = np.random.default_rng(3)
    items = [(rng.integers(3, vocab, n).tolist(), n // 2) for n in LENGTHS]
    return TokenizedSplit(items=items)


# Examples that share a system prompt of SYSTEM tokens, then differ (code), then answer.
SYSTEM = 37
PROMPTED_LENGTHS = [90, 40, 70, 52, 130, 45, 150, 60]


def prompted_split(vocab: int) -> TokenizedSplit:
    """Examples that share a system prompt, then differ (code), then answer."""
    import numpy as np

    rng = np.random.default_rng(5)
    system = rng.integers(3, vocab, SYSTEM).tolist()
    items = []
    for n in PROMPTED_LENGTHS:
        rest = rng.integers(3, vocab, n - SYSTEM).tolist()
        items.append((system + rest, SYSTEM + (n - SYSTEM) * 2 // 3))
    return TokenizedSplit(items=items)


def step_args(
    adapter_file: Path,
    steps: int,
    *,
    batch_size: int = BATCH,
    per_update: int = 1,
    steps_per_report: int | None = None,
) -> Any:
    """mlx-lm's ``TrainingArgs`` for ``steps`` optimizer steps of ``per_update`` micro-batches,
    a loss report per step (or per ``steps_per_report``), no validation and no saves."""
    from mlx_lm.tuner.trainer import TrainingArgs

    return TrainingArgs(
        batch_size=batch_size,
        iters=steps * per_update,
        steps_per_report=steps_per_report or per_update,
        steps_per_eval=1 << 30,
        steps_per_save=1 << 30,
        grad_accumulation_steps=per_update,
        adapter_file=str(adapter_file),
    )


class Losses:
    """mlx-lm's training callback: the loss of every optimizer step."""

    def __init__(self) -> None:
        self.train: list[float] = []

    def on_train_loss_report(self, info: dict[str, Any]) -> None:
        self.train.append(info["train_loss"])

    def on_val_loss_report(self, info: dict[str, Any]) -> None:
        pass
