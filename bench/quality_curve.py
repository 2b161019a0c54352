"""Can SmolLM2-135M learn to point at the lint teacher's flagged line at all? A learning curve.

    uv run python bench/quality_curve.py [--train 16] [--test 8] [--epochs 0,2,4,8]

bench/quality.py runs the whole pipeline (the server's 321-token system prompt, ~540-token
examples); at this machine's load that affords two epochs of ~30 examples and F1 stayed 0.
This asks a smaller question, cheaply, in one process: on a few examples of the demo corpus
(``examples/traces/lint-demo-otel.jsonl`` through ``ai-lsp finetune prepare-dataset``), with a
compact system prompt (COMPACT, ~60 tokens) and compact answers (the teacher's issues with the
rule code as message and no fixes; the snippet, which the metric scores, is unchanged), LoRA
(mlx-lm's layers, the project's answer-only loss and batches) is trained epoch by epoch, and
at each checkpoint the model answers greedily, unconstrained, capped at --max-tokens, both the
training examples it saw (can it memorize?) and held-out files' windows (does it generalize?),
scored by the project's issue-level agreement metric (training/agreement.py via
``score_answers``). Prints one JSON line per checkpoint; --out appends them to a file.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import ai_lsp_tune  # noqa: F401  (before mlx: it loads OpenBLAS, mlx's reference BLAS is slow)

ROOT = Path(__file__).resolve().parents[1]
COMPACT = (
    "You are a Python linter. Reply with JSON only: "
    '{"issues":[{"issue_snippet":"<the flagged line, copied exactly>",'
    '"severity":"info|warning|error","message":"<rule code>"}]}. '
    "Flag unused loop variables, overwritten loop variables, bare excepts, mutable defaults, "
    'raise without from, hardcoded passwords. No issue: {"issues":[]}.'
)
CODE = re.compile(r"\(([A-Z]+[0-9]+)\)\s*$")


def compact(example: Any) -> Any:
    """The example with COMPACT as system prompt and the teacher's issues shortened."""
    from ai_lsp_tune.dataset.example import Example

    answer = json.loads(example.assistant)
    issues = [
        {
            "issue_snippet": issue["issue_snippet"],
            "severity": issue["severity"],
            "message": ",".join(CODE.findall(issue["message"])) or issue["message"][:40],
        }
        for issue in answer["issues"]
    ]
    text = json.dumps({"issues": issues}, separators=(",", ":"))
    return Example(system=COMPACT, user=example.user, assistant=text)


def pick(examples: list[Any], count: int, clean_share: float = 0.25) -> list[Any]:
    """``count`` examples, about ``clean_share`` of them with no issue, in corpus order."""
    clean = [e for e in examples if '"issues":[]' in e.assistant.replace(" ", "")]
    flagged = [e for e in examples if e not in clean]
    n_clean = min(len(clean), round(count * clean_share))
    return flagged[: count - n_clean] + clean[:n_clean]


def load_examples(folder: Path, n_train: int, n_test: int) -> tuple[list[Any], list[Any]]:
    from ai_lsp_tune.training.splits import load_splits

    traces = ROOT / "examples" / "traces" / "lint-demo-otel.jsonl"
    command = [
        sys.executable, "-m", "ai_lsp_tune.cli", "finetune", "prepare-dataset", str(traces),
        "--output-file", str(folder / "dataset.json"), "--output-dir", str(folder / "ds"),
    ]  # fmt: skip
    subprocess.run(command, check=True, capture_output=True, text=True)
    splits = load_splits(folder / "ds")
    train = [compact(e) for e in pick(splits["train"], n_train)]
    test = [compact(e) for e in pick(splits["test"] + splits["valid"], n_test)]
    return train, test


def evaluate(model: Any, tokenizer: Any, examples: list[Any], max_tokens: int) -> dict:
    from ai_lsp_tune.training.evaluate import greedy_answers, score_answers

    started = time.perf_counter()
    answers = greedy_answers(model, tokenizer, examples, max_tokens=max_tokens)
    metrics = score_answers(examples, answers)
    return {
        "issue_f1": round(metrics.issue_f1, 3),
        "issue_precision": round(metrics.issue_precision, 3),
        "issue_recall": round(metrics.issue_recall, 3),
        "valid_json": metrics.valid_json_rate,
        "grounded": metrics.grounded_rate,
        "matched_predicted_expected": [sum(c[i] for c in metrics.files.values()) for i in range(3)],
        "seconds": round(time.perf_counter() - started, 1),
        "answers": answers[:3],
    }


def main() -> None:
    import mlx.core as mx
    import mlx.nn as nn
    import mlx.optimizers as optim

    from ai_lsp_tune.cli.review_demo import bundled_model
    from ai_lsp_tune.hyperparams import default
    from ai_lsp_tune.training import precision
    from ai_lsp_tune.training.data import TokenizedSplit, collate, make_loss, split_loss
    from ai_lsp_tune.training.loop import _prepare
    from ai_lsp_tune.training.modelio import load_model
    from ai_lsp_tune.training.request import TrainRequest

    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--train", type=int, default=16)
    parser.add_argument("--test", type=int, default=8)
    parser.add_argument("--epochs", default="0,2,4,8", help="checkpoints, in epochs")
    parser.add_argument("--learning-rate", type=float, default=1e-3)
    parser.add_argument("--lora-rank", type=int, default=8)
    parser.add_argument("--num-layers", type=int, default=8)
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--max-tokens", type=int, default=64)
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    checkpoints = sorted(int(e) for e in args.epochs.split(","))

    def report(row: dict) -> None:
        row |= {"utc": time.strftime("%H:%M:%S", time.gmtime()), "load": os.getloadavg()[:2]}
        line = json.dumps(row)
        print(line, flush=True)
        if args.out:
            with args.out.open("a") as handle:
                handle.write(line + "\n")

    with tempfile.TemporaryDirectory() as tmp:
        train, test = load_examples(Path(tmp), args.train, args.test)
        request = TrainRequest(
            dataset=Path(tmp) / "ds",
            learning_rate=args.learning_rate,
            lora_rank=args.lora_rank,
            num_layers=args.num_layers,
            batch_size=args.batch_size,
        )
    model, tokenizer, _, _ = load_model(str(bundled_model()))
    precision.for_training(model)
    limit = default("max_seq_length")
    tokens = TokenizedSplit.build(tokenizer, train, max_seq_length=limit)
    test_tokens = TokenizedSplit.build(tokenizer, test, max_seq_length=limit)
    lengths = [len(t) for t, _ in tokens.items]
    answers = [len(t) - o for t, o in tokens.items]
    system = len(tokenizer.encode(COMPACT))
    report(
        {
            "setup": vars(args) | {"out": str(args.out)},
            "train_examples": len(tokens),
            "test_examples": len(test_tokens),
            "tokens_per_example": round(sum(lengths) / len(lengths)),
            "answer_tokens": round(sum(answers) / len(answers)),
            "system_tokens": system,
            "expected_issues_train_test": [
                sum(len(json.loads(e.assistant)["issues"]) for e in split)
                for split in (train, test)
            ],
        }
    )
    _prepare(model, request)
    loss_fn = make_loss(model, chunked=False)
    value_and_grad = nn.value_and_grad(model, lambda m, *batch: loss_fn(m, *batch)[0])
    optimizer = optim.Adam(learning_rate=args.learning_rate)
    mx.random.seed(0)
    trained_seconds = 0.0
    trained_tokens = 0
    epoch = 0
    for target in checkpoints:
        while epoch < target:
            started = time.perf_counter()
            model.train()
            order = mx.random.permutation(len(tokens)).tolist()
            for i in range(0, len(order), args.batch_size):
                items = [tokens[j] for j in order[i : i + args.batch_size]]
                batch, positions, mask = collate(items)
                loss, grads = value_and_grad(model, batch, positions, mask)
                optimizer.update(model, grads)
                mx.eval(model.trainable_parameters(), optimizer.state, loss)
                trained_tokens += sum(len(t) for t, _ in items)
            trained_seconds += time.perf_counter() - started
            epoch += 1
        model.eval()
        report(
            {
                "epoch": epoch,
                "train_seconds": round(trained_seconds, 1),
                "trained_tokens": trained_tokens,
                "tok_per_s": round(trained_tokens / trained_seconds, 1)
                if trained_seconds
                else None,
                "train_loss": round(split_loss(model, tokens, batch_size=args.batch_size), 3),
                "test_loss": round(split_loss(model, test_tokens, batch_size=args.batch_size), 3),
                "train": evaluate(model, tokenizer, train, args.max_tokens),
                "test": evaluate(model, tokenizer, test, args.max_tokens),
            }
        )


if __name__ == "__main__":
    main()
