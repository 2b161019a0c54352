"""Can SmolLM2-135M learn to point at the lint teacher's flagged line at all? A learning curve.

    uv run python bench/quality_curve.py [--train 16] [--test 8] [--epochs 0,2,4,8]

bench/quality.py runs the whole pipeline (the server's 321-token system prompt, ~540-token
examples); at this machine's load that affords two epochs of ~30 examples and F1 stayed 0.
This asks a smaller question, cheaply, in one process: on a few examples of the demo corpus
(``ai_lsp_tune/cli/corpus/lint-demo-otel.jsonl`` through ``ai-lsp finetune prepare-dataset``),
with a compact system prompt (COMPACT, ~60 tokens) and compact answers (the teacher's issues with
the rule code as message and no fixes; the snippet, which the metric scores, is unchanged), LoRA
(mlx-lm's layers, the project's answer-only loss and batches) is trained epoch by epoch, and
at each checkpoint the model answers greedily, unconstrained, capped at --max-tokens, both the
training examples it saw (can it memorize?) and held-out files' windows (does it generalize?),
scored by the project's issue-level agreement metric (training/agreement.py via
``score_answers``). Prints one JSON line per checkpoint; --out appends them to a file.

``--corpus local``: instead, the line-local teacher's corpus (build_lint_corpus.choose_local:
teacher.LOCAL_RULES, LOCAL_SYSTEM_PROMPT windows, rules capped), split by file (a third held
out), with the product's compact prompt; each checkpoint also reports ΔF1 against epoch 0 on the
held-out files with its paired bootstrap interval. ``--frozen-cache``: the layers below the LoRA
layers run once per example (same loss, tested at start), so a step costs ``--num-layers``
layers. ``--constrained``: answers under the serving grammar (batched).
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


def load_examples(
    folder: Path, n_train: int, n_test: int, traces: Path | None = None
) -> tuple[list[Any], list[Any]]:
    """The demo corpus, compacted; with ``traces``: those traces' train and test splits exactly
    as ``prepare-dataset`` writes them for the product (no compaction, no picking)."""
    from ai_lsp_tune.training.splits import load_splits

    recorded = traces or ROOT / "ai_lsp_tune" / "cli" / "corpus" / "lint-demo-otel.jsonl"
    command = [
        sys.executable, "-m", "ai_lsp_tune.cli", "finetune", "prepare-dataset", str(recorded),
        "--output-file", str(folder / "dataset.json"), "--output-dir", str(folder / "ds"),
    ]  # fmt: skip
    subprocess.run(command, check=True, capture_output=True, text=True)
    splits = load_splits(folder / "ds")
    if traces is not None:
        return splits["train"][:n_train], splits["test"][:n_test]
    train = [compact(e) for e in pick(splits["train"], n_train)]
    test = [compact(e) for e in pick(splits["test"] + splits["valid"], n_test)]
    return train, test


def local_examples(
    windows: int, budget: int, cap: int, rules: list[str] | None = None
) -> tuple[list[Any], list[Any]]:
    """The local-rules corpus (build_lint_corpus.choose_local), compact answers, a third of
    the files held out (by a hash of the file name)."""
    import hashlib
    import sysconfig

    from ai_lsp_tune.dataset.example import Example

    sys.path.insert(0, str(ROOT / "examples"))
    from build_lint_corpus import choose_local

    root = Path(sysconfig.get_paths()["purelib"])
    chosen = choose_local(root, windows, budget=budget, cap=cap, rules=rules)
    train, test = [], []
    for a in chosen:
        example = compact(Example(system=a.system, user=a.user, assistant=a.answer.to_json()))
        example = Example(system=a.system, user=example.user, assistant=example.assistant)
        held_out = int(hashlib.sha256(a.name.encode()).hexdigest(), 16) % 3 == 0
        (test if held_out else train).append(example)
    codes = [CODE.findall(i.message) for a in chosen for i in a.answer.issues]
    counts: dict[str, int] = {}
    for found in codes:
        for c in found:
            counts[c] = counts.get(c, 0) + 1
    print(json.dumps({"rules": dict(sorted(counts.items(), key=lambda kv: -kv[1]))}), flush=True)
    return train, test


def by_file(examples: list[Any]) -> list[Any]:
    """The examples with each file's windows together, files in a stable pseudo-random order."""
    import hashlib

    from ai_lsp_tune.training.agreement import file_key

    def key(e: Any) -> str:
        return hashlib.sha256(file_key(e.user).encode()).hexdigest()

    return sorted(examples, key=key)


def evaluate(
    model: Any,
    tokenizer: Any,
    examples: list[Any],
    max_tokens: int,
    grammar: Any = None,
    grounded: str | None = None,
) -> tuple[dict, Any]:
    from ai_lsp_tune.training.evaluate import greedy_answers, score_answers, served_answers

    started = time.perf_counter()
    if grammar is not None:
        answers = served_answers(
            model,
            tokenizer,
            examples,
            grammar=grammar,
            max_tokens=max_tokens,
            grounded=bool(grounded),
        )
    else:
        answers = greedy_answers(model, tokenizer, examples, max_tokens=max_tokens, chunk=16)
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
        "all_answers": answers,
    }, metrics


class FrozenPrefix:
    """LoRA on the last ``k`` layers only needs the frozen layers' output once per example:
    it is computed once (no gradient) and each step runs the last ``k`` layers, the norm and
    the head on the answer's positions. The same loss as the project's (answer tokens only);
    a step costs about ``k`` layers of forward and backward instead of all of the forward."""

    def __init__(self, model: Any, items: list[tuple[list[int], int]], k: int) -> None:
        import mlx.core as mx

        self.model, self.inner = model, model.model
        self.split = len(self.inner.layers) - k
        self.rows = []
        for tokens, offset in items:
            h = self.inner.embed_tokens(mx.array([tokens[:-1]]))
            for layer in self.inner.layers[: self.split]:
                h = layer(h, "causal", cache=None)
            mx.eval(h)
            self.rows.append((h, mx.array(tokens[offset:]), offset))

    def loss(self, model: Any, batch: list[int]) -> Any:
        import mlx.core as mx
        import mlx.nn as nn

        total, count = mx.array(0.0), 0
        for index in batch:
            h, targets, offset = self.rows[index]
            for layer in self.inner.layers[self.split :]:
                h = layer(h, "causal", cache=None)
            h = self.inner.norm(h[:, offset - 1 :])
            head = model.get("lm_head") or self.inner.embed_tokens.as_linear
            logits = head(h)[0]
            total = total + nn.losses.cross_entropy(logits, targets).sum()
            count += targets.size
        return total / count


def line_grounded() -> type:
    """AnswerGrammar whose grounded() allows only the code's non-blank lines, stripped, as the
    line-local teacher copies them (an enum in the answer schema), instead of any piece."""
    from dataclasses import dataclass, replace

    import llguidance

    from ai_lsp_tune.decoding.grammar import AnswerGrammar, grammar_for
    from ai_lsp_tune.schema import answer_json_schema

    @dataclass
    class Lines(AnswerGrammar):
        def grounded(self, code: str) -> AnswerGrammar:
            lines = list(dict.fromkeys(ln.strip() for ln in code.splitlines() if ln.strip()))
            schema = answer_json_schema()
            snippet = schema["$defs"]["Issue"]["properties"]["issue_snippet"]
            snippet.pop("type")
            snippet["enum"] = lines or [" "]
            matcher = llguidance.LLMatcher(self.lltokenizer, grammar_for(schema), log_level=0)
            return replace(self, matcher=matcher)

    return Lines


def main() -> None:
    import mlx.core as mx
    import mlx.nn as nn
    import mlx.optimizers as optim

    from ai_lsp_tune.cli.review_demo import bundled_model
    from ai_lsp_tune.hyperparams import default
    from ai_lsp_tune.training import precision
    from ai_lsp_tune.training.data import TokenizedSplit, collate, make_loss, split_loss
    from ai_lsp_tune.training.evaluate import compare
    from ai_lsp_tune.training.loop import _prepare
    from ai_lsp_tune.training.modelio import load_model
    from ai_lsp_tune.training.protocol import TrainRequest

    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--train", type=int, default=16)
    parser.add_argument("--test", type=int, default=8)
    parser.add_argument("--epochs", default="0,2,4,8", help="checkpoints, in epochs")
    parser.add_argument("--loss-every", type=int, default=1, help="losses at every Nth checkpoint")
    parser.add_argument("--learning-rate", type=float, default=1e-3)
    parser.add_argument("--lora-rank", type=int, default=8)
    parser.add_argument("--num-layers", type=int, default=8)
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--max-tokens", type=int, default=64)
    parser.add_argument("--out", type=Path)
    parser.add_argument("--corpus", choices=("demo", "local"), default="demo")
    parser.add_argument("--traces", type=Path, help="instead: these traces' product splits")
    parser.add_argument("--windows", type=int, default=120, help="local: flagged windows")
    parser.add_argument("--budget", type=int, default=300, help="local: prompt tokens")
    parser.add_argument("--cap", type=int, default=12, help="local: windows per rule")
    parser.add_argument("--lora-scale", type=float, default=20.0)
    parser.add_argument("--seed", type=int, default=0, help="LoRA init and batch order")
    parser.add_argument("--constrained", action="store_true", help="answer under the grammar")
    parser.add_argument("--train-eval", type=int, default=16, help="training windows scored")
    parser.add_argument("--frozen-cache", action="store_true", help="cache the frozen layers")
    parser.add_argument(
        "--grounded",
        choices=("code", "lines"),
        help="constrained, each snippet a piece of the code (the product) or one of its lines",
    )
    parser.add_argument("--no-clean-train", action="store_true", help="local: train on flagged")
    parser.add_argument("--save", type=Path, help="the LoRA weights at each checkpoint here")
    parser.add_argument("--load", type=Path, help="start from these LoRA weights")
    parser.add_argument("--rules", help="local: a comma-separated subset of LOCAL_RULES")
    args = parser.parse_args()
    checkpoints = sorted(int(e) for e in args.epochs.split(","))
    args.constrained = args.constrained or args.grounded
    rules = args.rules.split(",") if args.rules else None

    def report(row: dict) -> None:
        row |= {"utc": time.strftime("%H:%M:%S", time.gmtime()), "load": os.getloadavg()[:2]}
        line = json.dumps(row)
        print(line, flush=True)
        if args.out:
            with args.out.open("a") as handle:
                handle.write(line + "\n")

    with tempfile.TemporaryDirectory() as tmp:
        if args.corpus == "local":
            train, test = local_examples(args.windows, args.budget, args.cap, rules)
            if args.no_clean_train:  # learn where the flagged line is, not whether there is one
                train = [e for e in train if '"issues":[]' not in e.assistant.replace(" ", "")]
            train, test = by_file(train)[: args.train], by_file(test)[: args.test]
        else:
            train, test = load_examples(Path(tmp), args.train, args.test, args.traces)
        request = TrainRequest(
            lora_scale=args.lora_scale,
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
    system = len(tokenizer.encode(train[0].system))
    grammar = None
    if args.constrained:
        from ai_lsp_tune.training.evaluate import serving_grammar

        grammar, why = serving_grammar(model, tokenizer)
        assert grammar is not None, why
        if args.grounded == "lines":
            grammar = line_grounded()(**vars(grammar))
    before = None
    report(
        {
            "setup": {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()},
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
    mx.random.seed(args.seed)  # the LoRA init
    _prepare(model, request)
    if args.load:  # no training: the base (LoRA at zero) against these weights, same windows
        model.eval()
        rows = []
        for weights in (None, args.load):
            if weights is not None:
                model.load_weights(str(weights), strict=False)
            row, metrics = evaluate(model, tokenizer, test, args.max_tokens, grammar, args.grounded)
            rows.append((row, metrics))
        versus = compare(rows[1][1], rows[0][1])
        interval = (versus.f1_difference, versus.f1_difference_low, versus.f1_difference_high)
        report(
            {
                "base": rows[0][0],
                "loaded": rows[1][0],
                "test_files": rows[1][1].test_files,
                "delta_f1": [round(x or 0, 3) for x in interval],
            }
        )
        return
    loss_fn = make_loss(model, chunked=False)
    value_and_grad = nn.value_and_grad(model, lambda m, *batch: loss_fn(m, *batch)[0])
    started = time.perf_counter()
    frozen = FrozenPrefix(model, tokens.items, args.num_layers) if args.frozen_cache else None
    cached = nn.value_and_grad(model, frozen.loss) if frozen else None
    if frozen:  # the cached loss is the project's loss (one example)
        mine = frozen.loss(model, [0]).item()
        theirs = loss_fn(model, *collate([tokens[0]]))[0].item()
        report({"frozen_cache_s": round(time.perf_counter() - started, 1), "loss": [mine, theirs]})
    optimizer = optim.Adam(learning_rate=args.learning_rate)
    mx.random.seed(args.seed)
    trained_seconds = 0.0
    trained_tokens = 0
    epoch = 0
    for target in checkpoints:
        while epoch < target:
            started = time.perf_counter()
            model.train()
            order = mx.random.permutation(len(tokens)).tolist()
            for i in range(0, len(order), args.batch_size):
                chosen = order[i : i + args.batch_size]
                items = [tokens[j] for j in chosen]
                if cached is not None:
                    loss, grads = cached(model, chosen)
                else:
                    batch, positions, mask = collate(items)
                    loss, grads = value_and_grad(model, batch, positions, mask)
                optimizer.update(model, grads)
                mx.eval(model.trainable_parameters(), optimizer.state, loss)
                trained_tokens += sum(len(t) for t, _ in items)
            trained_seconds += time.perf_counter() - started
            epoch += 1
        model.eval()
        if args.save:
            from mlx.utils import tree_flatten

            args.save.mkdir(parents=True, exist_ok=True)
            weights = dict(tree_flatten(model.trainable_parameters()))
            mx.save_safetensors(str(args.save / f"epoch{epoch}.safetensors"), weights)
        scored_train, _ = evaluate(
            model, tokenizer, train[: args.train_eval], args.max_tokens, grammar, args.grounded
        )
        scored_test, metrics = evaluate(
            model, tokenizer, test, args.max_tokens, grammar, args.grounded
        )
        if before is None:
            before = metrics
        versus = compare(metrics, before)
        report(
            {
                "delta_f1": [
                    round(x or 0, 3)
                    for x in (
                        versus.f1_difference,
                        versus.f1_difference_low,
                        versus.f1_difference_high,
                    )
                ],
                "test_files": metrics.test_files,
                "epoch": epoch,
                "train_seconds": round(trained_seconds, 1),
                "trained_tokens": trained_tokens,
                "tok_per_s": round(trained_tokens / trained_seconds, 1)
                if trained_seconds
                else None,
                "train_loss": round(
                    frozen.loss(model, list(range(len(tokens)))).item()
                    if frozen
                    else split_loss(model, tokens, batch_size=args.batch_size),
                    3,
                ),
                "test_loss": None
                if frozen
                else round(split_loss(model, test_tokens, batch_size=args.batch_size), 3),
                "train": scored_train,
                "test": scored_test,
            }
        )


if __name__ == "__main__":
    main()
