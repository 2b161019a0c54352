"""What recording each validation window's loss costs a validation pass (the adapter choice).

A run's validation passes record every window's summed loss (``data.WindowLosses``) so the
default adapter choice can pair the best and the last adapter over files. This validates the
same split (the tiny model; random windows of 120-400 tokens after a shared 40-token prompt,
packed or sharing the prompt as training does) with and without recording, alternately, and
prints the median and best of ``--rounds``.

    uv run python bench/validation_windows.py [--windows 96] [--rounds 7]
"""

import argparse
import statistics
import time

import numpy as np

import ai_lsp_tune  # noqa: F401  (before MLX: it loads OpenBLAS)


def _main(windows: int, rounds: int) -> None:
    from mlx_lm import load
    from mlx_lm.tuner.trainer import evaluate

    from ai_lsp_tune.cli.tiny_model import ensure_tiny_model
    from ai_lsp_tune.training.data import (
        LengthGroupedBatches,
        TokenizedSplit,
        WindowLosses,
        make_loss,
    )

    model, _ = load(str(ensure_tiny_model()))
    rng = np.random.default_rng(0)
    vocab = model.args.vocab_size
    system = rng.integers(3, vocab, 40).tolist()
    items = []
    for n in rng.integers(120, 400, windows):
        tokens = system + rng.integers(3, vocab, int(n) - 40).tolist()
        items.append((tokens, int(n) * 2 // 3))
    split = TokenizedSplit(items=items)
    loss = make_loss(model)

    def validate(recording: bool) -> float:
        windows = WindowLosses(split) if recording else None
        batches = LengthGroupedBatches(pack=True, share=True, window_losses=windows)
        started = time.perf_counter()
        evaluate(model=model, dataset=split, loss=loss, batch_size=4, num_batches=-1,
                 max_seq_length=1 << 30, iterate_batches=batches)  # type: ignore[arg-type]  # fmt: skip
        return time.perf_counter() - started

    validate(False), validate(True)  # compile and warm up
    seconds: dict[bool, list[float]] = {False: [], True: []}
    for _ in range(rounds):
        for recording in (False, True):
            seconds[recording].append(validate(recording))
    print(f"| validation pass ({windows} windows) | median s | best s (of {rounds}) |")
    print("|---|---|---|")
    for recording, label in ((False, "plain"), (True, "recording each window's loss")):
        times = seconds[recording]
        print(f"| {label} | {statistics.median(times):.3f} | {min(times):.3f} |")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--windows", type=int, default=96)
    parser.add_argument("--rounds", type=int, default=7)
    args = parser.parse_args()
    _main(args.windows, args.rounds)
