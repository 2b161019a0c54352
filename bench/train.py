"""Trained tokens/s of our trainer vs ``python -m mlx_lm lora``: same model, data, settings.

    uv run python bench/train.py [--examples 64] [--epochs 2]

Both train LoRA (rank 8, all layers, prompt masked) on the tiny local model for the same
number of iterations over the same split folder, in fresh processes, one after the other.

* trained tokens = every non-padding token of every example, times the epochs (the iteration
  count covers each example exactly ``epochs`` times in both trainers);
* ours: seconds inside the training loop, validation excluded (run.json ``train_seconds``);
* mlx-lm: wall time of its run minus the wall time of the same command with ``--iters 0``
  (loading, tokenising, saving); its two one-batch validations stay in;
* peak memory: the peak RSS of each process (``wait4``), and MLX's own peak (run.json);
* ours runs mlx-lm's compiled training step (``mx.compile`` over forward, backward and update,
  model and optimizer state captured): as shipped (a step's shared prompt prefix run once,
  rows in query chunks, short examples packed into rows), with rows whole
  (``AI_LSP_TRAIN_CHUNK=0``: no shared prefix, no chunks, as before issue 15's second half),
  without packing (``AI_LSP_TRAIN_PACK=0``: one padded row per example) and with
  ``--grad-checkpoint``; all train the same tokens, and so does mlx-lm (same examples, none
  cropped or skipped). ``--peer-only`` runs only mlx-lm and ours as shipped (long sets).
  ``--frozen-layers K`` instead compares ours with LoRA on the last K layers, the frozen
  layers cached (as shipped) vs run every step (``bench/train_frozen.py``).

Results go to the "train" section of bench/RESULTS.md.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import random
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from ai_lsp_tune.cli.demo import sample_analyses
from ai_lsp_tune.cli.tiny_model import _TOKENIZER_CORPUS, ensure_tiny_model

RESULTS = Path(__file__).with_name("RESULTS.md")
SETTINGS = {"batch_size": 4, "learning_rate": 5e-4, "lora_rank": 8, "num_layers": -1}
MAX_SEQ = 8192
MODELS = {
    "tiny": "tiny local model",
    "smollm2": "a random model of SmolLM2-135M's shape saved 4-bit (group 32; bench/smollm2.py), "
    "which ours trains dequantized to fp32 on OpenBLAS (training/precision.py) and mlx-lm "
    "trains 4-bit",
}
_CODE_CORPUS = [s for s in _TOKENIZER_CORPUS if "def " in s or "const " in s or "import" in s]


def _padded(code: str, target_chars: int, rng: random.Random) -> str:
    """Code grown to about ``target_chars`` with realistic lines (kept inside one function)."""
    lines = [code.rstrip("\n")]
    size = len(code)
    while size < target_chars:
        block = rng.choice(_CODE_CORPUS).replace("\n", "\n    ")
        lines.append("    " + block.rstrip())
        size += len(block) + 5
    return "\n".join(lines) + "\n"


def write_dataset(
    folder: Path, n: int, *, skewed: bool, max_chars: int = 30_000, seed: int = 0
) -> Path:
    """n train examples (+ 8 valid/test): the samples as they are (uniform), or padded."""
    from ai_lsp_tune.prompts import user_prompt

    rng = random.Random(seed)
    folder.mkdir(parents=True)
    samples = sample_analyses(n + 8, seed=seed)
    rows = []
    for s in samples:
        target = int(math.exp(rng.uniform(math.log(300), math.log(max_chars)))) if skewed else 1000
        code = _padded(s.code, target - 2000, rng)  # the system prompt is ~2,000 chars
        user = user_prompt("python", code, s.name)
        messages = [
            {"role": "system", "content": s.system},
            {"role": "user", "content": user},
            {"role": "assistant", "content": s.assistant},
        ]
        rows.append(json.dumps({"messages": messages}))
    splits = {"train": rows[:n], "valid": rows[n : n + 4], "test": rows[n + 4 :]}
    for name, lines in splits.items():
        (folder / f"{name}.jsonl").write_text("\n".join(lines) + "\n")
    return folder


def trained_tokens(model: Path, folder: Path, epochs: int) -> tuple[int, int, int, dict]:
    """(tokens per run, shortest, longest example) with the model's chat template, and the
    work ``mlx_lm lora`` does on them: its batches are the file's examples 4 by 4 (it sorts
    chat examples by ``len(dict)``, always 1), each padded to a multiple of 32 tokens, every
    column run through the model and projected to the vocabulary; answer tokens, which ours
    projects."""
    from mlx_lm import load

    from ai_lsp_tune.dataset.reader import load_examples
    from ai_lsp_tune.training.data import example_tokens

    _, tokenizer = load(str(model))
    items = [example_tokens(tokenizer, e) for e in load_examples(folder)["train"]]
    lengths = [len(tokens) for tokens, _ in items]
    batch = SETTINGS["batch_size"]
    columns = [
        32 * math.ceil(max(lengths[i : i + batch]) / 32) * batch
        for i in range(0, len(lengths) - batch + 1, batch)
    ]
    work = {
        "mlx_lm_computed": sum(columns) * epochs,
        "answer_tokens": sum(len(t) - offset for t, offset in items) * epochs,
    }
    return sum(lengths) * epochs, min(lengths), max(lengths), work


def macs_per_token(model: Path) -> tuple[int, int]:
    """Multiply-adds per token of the transformer layers (LoRA rank 8 on all their linears;
    attention scores left out) and of the vocabulary projection, from the model's shape."""
    config = json.loads((model / "config.json").read_text())
    hidden, inner = config["hidden_size"], config["intermediate_size"]
    head_dim = config.get("head_dim") or hidden // config["num_attention_heads"]
    q = config["num_attention_heads"] * head_dim
    kv = config.get("num_key_value_heads", config["num_attention_heads"]) * head_dim
    shapes = [(hidden, q), (hidden, kv), (hidden, kv), (q, hidden)]
    shapes += [(hidden, inner), (hidden, inner), (inner, hidden)]
    rank = SETTINGS["lora_rank"]
    layer = sum(a * b + rank * (a + b) for a, b in shapes)
    return layer * config["num_hidden_layers"], hidden * config["vocab_size"]


def _run(cmd: list[str], **kwargs: object) -> tuple[float, float, int]:
    """(seconds, peak RSS MiB, exit code) of one process."""
    start = time.perf_counter()
    process = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, **kwargs)  # type: ignore[call-overload]
    stderr = process.stderr.read()  # type: ignore[union-attr]
    _, status, usage = os.wait4(process.pid, 0)
    process.returncode = os.waitstatus_to_exitcode(status)
    seconds = time.perf_counter() - start
    if process.returncode != 0:
        sys.stderr.write(stderr.decode(errors="replace")[-3000:])
    return seconds, usage.ru_maxrss / 1024, process.returncode


def peer_env(peer_blas: str) -> dict[str, str] | None:
    """``mlx_lm lora`` as a user installs it (MLX's reference BLAS), or given our OpenBLAS."""
    if peer_blas == "installed":
        return None
    from ai_lsp_tune import blas

    threads = str(blas.status().threads or 1)
    return {**os.environ, "LD_PRELOAD": str(blas.standard_names_copy()),
            "OPENBLAS_NUM_THREADS": threads}  # fmt: skip


def machine_peak() -> dict[str, float]:
    """The fp32 matmul GFLOP/s and copy GB/s of a process on our BLAS (bench/cpu.py)."""
    code = ("import ai_lsp_tune, json, sys; sys.path.insert(0, 'bench'); import cpu; "
            "print(json.dumps(cpu.machine()))")  # fmt: skip
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return json.loads(done.stdout.splitlines()[-1])


def run_mlx_lm(
    model: Path, data: Path, iters: int, work: Path, env: dict[str, str] | None = None
) -> tuple[float, float]:
    work.mkdir(parents=True, exist_ok=True)
    config = work / "lora.yaml"
    config.write_text(f"lora_parameters:\n  rank: {SETTINGS['lora_rank']}\n  scale: 20.0\n"
                      "  dropout: 0.0\n")  # fmt: skip
    base = [sys.executable, "-m", "mlx_lm", "lora", "--model", str(model), "--train",
            "--data", str(data), "--batch-size", str(SETTINGS["batch_size"]),
            "--learning-rate", str(SETTINGS["learning_rate"]),
            "--num-layers", str(SETTINGS["num_layers"]), "--max-seq-length", str(MAX_SEQ),
            "--mask-prompt", "--val-batches", "1", "--steps-per-eval", "1000000",
            "--save-every", "1000000", "--seed", "0", "-c", str(config)]  # fmt: skip
    overhead, _, code0 = _run([*base, "--iters", "0", "--adapter-path", str(work / "a0")], env=env)
    seconds, rss, code = _run(
        [*base, "--iters", str(iters), "--adapter-path", str(work / "a")], env=env
    )
    if code0 or code:
        raise SystemExit("mlx_lm lora failed (see above)")
    return seconds - overhead, rss


def run_ours(
    model: Path,
    data: Path,
    epochs: int,
    work: Path,
    *,
    grad_checkpoint: bool = False,
    env: dict[str, str] | None = None,
    **settings: int,
) -> tuple[float, float, dict]:
    from ai_lsp_tune.training.protocol import TrainRequest

    request = TrainRequest(
        dataset=data,
        model_name=str(model),
        output_dir=work / "ours",
        num_epochs=epochs,
        max_seq_length=MAX_SEQ,
        eval_max_examples=0,
        eval_every=1_000_000,
        val_batches=1,
        grad_checkpoint=grad_checkpoint,
        **(SETTINGS | settings),  # type: ignore[arg-type]
    )
    read_fd, write_fd = os.pipe()
    cmd = [sys.executable, "-m", "ai_lsp_tune.training.worker", "--events-fd", str(write_fd),
           "--request", request.model_dump_json()]  # fmt: skip
    reader = os.fdopen(read_fd, "rb")
    import threading

    lines: list[bytes] = []
    thread = threading.Thread(target=lambda: lines.extend(reader))
    thread.start()
    environ = {k: v for k, v in os.environ.items() if not k.startswith("AI_LSP_TRAIN_")}
    _, rss, code = _run(cmd, pass_fds=(write_fd,), close_fds=True, env={**environ, **(env or {})})
    os.close(write_fd)
    thread.join()
    if code:
        raise SystemExit(f"our worker failed: {lines[-1:]!r}")
    run = json.loads((work / "ours" / "run.json").read_text())
    return run["train_seconds"], rss, run


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--examples", type=int, default=64, help="training examples (x4)")
    parser.add_argument("--skewed-examples", type=int, default=16)
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument(
        "--max-chars",
        type=int,
        default=6_000,
        help="longest prompt of the skewed set; real traces reach 30,000, which MLX's Linux "
        "CPU wheel (reference BLAS) takes many minutes to train on",
    )
    parser.add_argument(
        "--sets", default="uniform,length-skewed", help="which sets to run (comma-separated)"
    )
    parser.add_argument(
        "--peer-only",
        action="store_true",
        help="run only mlx-lm and ours as shipped (no whole-row, padded and checkpointed runs)",
    )
    parser.add_argument("--section", default="train", help="the RESULTS.md section to write")
    parser.add_argument(
        "--model",
        choices=["tiny", "smollm2"],
        default="tiny",
        help="smollm2: a random 4-bit model of SmolLM2-135M's shape (bench/smollm2.py)",
    )
    parser.add_argument(
        "--peer-blas",
        choices=["installed", "openblas"],
        default="installed",
        help="mlx_lm as installed (MLX's reference BLAS) or given our OpenBLAS (LD_PRELOAD)",
    )
    parser.add_argument(
        "--frozen-layers",
        type=int,
        help="LoRA on the last K layers: ours with the frozen layers cached vs every layer "
        "every step (bench/train_frozen.py; no mlx-lm run)",
    )
    args = parser.parse_args()
    if args.frozen_layers:
        sys.path.insert(0, str(Path(__file__).parent))
        import smollm2
        import train_frozen

        with tempfile.TemporaryDirectory(prefix="bench-train-frozen-") as tmp:
            model = smollm2.smollm2_shaped() if args.model == "smollm2" else None
            train_frozen.compare(args, model or ensure_tiny_model(Path(tmp) / "cache"), Path(tmp))
        return
    batch = SETTINGS["batch_size"]
    rows, notes, memory, shares = [], [], [], []
    load_before = os.getloadavg()
    with tempfile.TemporaryDirectory(prefix="bench-train-") as tmp:
        work = Path(tmp)
        if args.model == "smollm2":
            sys.path.insert(0, str(Path(__file__).parent))
            import smollm2

            model = smollm2.smollm2_shaped()
        else:
            model = ensure_tiny_model(work / "cache")
        for label, skewed in (("uniform", False), ("length-skewed", True)):
            if label not in args.sets.split(","):
                continue
            n = (args.skewed_examples if skewed else args.examples) // batch * batch
            iters = n * args.epochs // batch
            data = write_dataset(work / label, n, skewed=skewed, max_chars=args.max_chars)
            tokens, shortest, longest, work_done = trained_tokens(model, data, args.epochs)
            peer_s, peer_rss = run_mlx_lm(
                model, data, iters, work / f"{label}-mlx", peer_env(args.peer_blas)
            )
            ours_s, ours_rss, run = run_ours(model, data, args.epochs, work / f"{label}-ours")
            assert run["batching"]["packed"] and run["batching"]["chunked"]
            variants = {"as shipped": (ours_s, ours_rss, run)}
            if not args.peer_only:
                for name, env, gc in (
                    ("rows whole", {"AI_LSP_TRAIN_CHUNK": "0"}, False),
                    ("padded", {"AI_LSP_TRAIN_PACK": "0"}, False),
                    ("--grad-checkpoint", {}, True),
                ):
                    folder = work / f"{label}-{name.strip('-').replace(' ', '-')}"
                    variants[name] = run_ours(
                        model, data, args.epochs, folder, grad_checkpoint=gc, env=env
                    )
            # Equal work: every token of every example, in both trainers (cropped, never skipped).
            done = {r["trained_tokens"] for _, _, r in variants.values()}
            assert done == {tokens}, (done, tokens)
            ratio = (tokens / ours_s) / (tokens / peer_s)
            rows.append(
                (label, n, iters, shortest, longest, tokens, peer_s, ours_s, peer_rss, ours_rss)
            )
            memory.append(
                f"| {label} | mlx-lm | {iters * batch} | {work_done['mlx_lm_computed']:,} | "
                f"{tokens / peer_s:,.0f} | - | {peer_rss:.0f} |"
            )
            shares.append(f"{label} {work_done['answer_tokens'] / tokens:.0%}")
            for name, (seconds, rss, result) in variants.items():
                batching = result["batching"]
                memory.append(
                    f"| {label} | {name} | {batching['rows']} | {batching['padded_tokens']:,} | "
                    f"{tokens / seconds:,.0f} | {result['peak_memory_gb'] * 1024:.0f} | "
                    f"{rss:.0f} |"
                )
            target = 3.0  # issue 15, both sets
            notes.append(
                f"- {label}: ours is **{ratio:.2f}x** mlx-lm's trained tokens/s "
                f"(target >= {target}x: {'met' if ratio >= target else 'NOT met'}); "
                f"peak RSS {ours_rss:.0f} MiB vs {peer_rss:.0f} MiB; "
                f"our MLX peak {run['peak_memory_gb'] * 1024:.0f} MiB."
            )
            print(notes[-1], flush=True)
            stack, head = macs_per_token(model)
            peer_macs = work_done["mlx_lm_computed"] * (stack + head)
            our_macs = run["batching"]["padded_tokens"] * stack + work_done["answer_tokens"] * head
            work_line = (
                f"  Work (matmul multiply-adds from the model's shape, attention scores left out): "
                f"mlx-lm {peer_macs / 1e9:.2f} G, ours {our_macs / 1e9:.2f} G, "
                f"**{peer_macs / our_macs:.2f}x** less for ours; the measured speed-up is "
                f"{ratio / (peer_macs / our_macs):.2f}x that (attention, left out, is the rest)."
            )
            notes.append(work_line)
            print(work_line, flush=True)
            if args.model == "smollm2":
                peak = machine_peak()
                # A step is ~3 forwards' matmuls (forward; backward: input and LoRA gradients).
                used = 3 * 2 * our_macs / ours_s / 1e9
                notes.append(
                    f"  Ours computed {used:.1f} GFLOP/s of matmuls (3 forwards of its work per "
                    f"step) = **{100 * used / peak['gflops']:.0f}%** of this run's fp32 matmul "
                    f"peak ({peak['gflops']:.1f} GFLOP/s on our BLAS; copy "
                    f"{peak['gbps']:.1f} GB/s); mlx-lm's peer ran on "
                    f"{'its reference BLAS' if args.peer_blas == 'installed' else 'our OpenBLAS'}."
                )
                print(notes[-1], flush=True)
    write_results(args, rows, notes, memory, (load_before, os.getloadavg()), ", ".join(shares))


def write_results(
    args: argparse.Namespace, rows: list, notes: list, memory: list, load: tuple, answer_share: str
) -> None:
    lines = [
        f"## {args.section} (LoRA tokens/s vs `python -m mlx_lm lora`)",
        "",
        f"`uv run python bench/train.py --examples {args.examples} --skewed-examples "
        f"{args.skewed_examples} --epochs {args.epochs} --max-chars {args.max_chars}"
        f"{' --sets ' + args.sets if args.sets != 'uniform,length-skewed' else ''}"
        f"{' --peer-only' if args.peer_only else ''}"
        f"{' --section ' + repr(args.section) if args.section != 'train' else ''}"
        f"{' --model ' + args.model if args.model != 'tiny' else ''}"
        f"{' --peer-blas ' + args.peer_blas if args.peer_blas != 'installed' else ''}` on "
        f"{os.cpu_count()} CPU(s), {platform.machine()}, Python {platform.python_version()}, "
        f"{time.strftime('%Y-%m-%d')}; {MODELS[args.model]} (CPU, `mlx[cpu]`); batch "
        f"{SETTINGS['batch_size']}, LoRA rank "
        f"{SETTINGS['lora_rank']} on all layers, prompt masked; one run each, same machine, "
        "same run. No GPU machine was lent to this session: CPU numbers only. Load average "
        f"(1, 5, 15 min) before: {', '.join(f'{x:.2f}' for x in load[0])}; after: "
        f"{', '.join(f'{x:.2f}' for x in load[1])} (a shared machine: +-30% between runs).",
        "",
        "| data | examples | iterations | tokens/example | trained tokens | mlx-lm s | ours s | "
        "mlx-lm tok/s | ours tok/s | mlx-lm peak RSS MiB | ours peak RSS MiB |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for label, n, iters, lo, hi, tokens, peer_s, ours_s, peer_rss, ours_rss in rows:
        lines.append(
            f"| {label} | {n} | {iters} | {lo}-{hi} | {tokens} | {peer_s:.1f} | {ours_s:.1f} | "
            f"{tokens / peer_s:,.0f} | {tokens / ours_s:,.0f} | {peer_rss:.0f} | {ours_rss:.0f} |"
        )
    if args.peer_only:  # what ours does and why: the main "train" section says it
        lines += [
            "",
            *notes,
            "",
            "| data | ours | rows | computed tokens | tok/s | MLX peak MiB | peak RSS MiB |",
            "|---|---|---|---|---|---|---|",
            *memory,
            "",
            "What ours does differently, and the variants: the `train` section.",
            "",
        ]
    else:
        lines += _explained(args, notes, memory, answer_share)
    text = RESULTS.read_text()
    section = "\n".join(lines)
    pattern = re.compile(rf"## {re.escape(args.section)} \(.*?(?=\n## |\Z)", re.DOTALL)
    if pattern.search(text):
        RESULTS.write_text(pattern.sub(lambda _: section, text, count=1))
    else:
        RESULTS.write_text(text.rstrip("\n") + "\n\n" + section)
    print(f"wrote the train section of {RESULTS}")


def _explained(args: argparse.Namespace, notes: list, memory: list, answer_share: str) -> list:
    """The notes, the variants table, and what ours does differently and why."""
    return ["", *notes, "",
              "Ours as shipped, and the same run's variants: rows whole (`AI_LSP_TRAIN_CHUNK=0`: "
              "no shared prefix, no query chunks), padded (`AI_LSP_TRAIN_PACK=0`: one row per "
              "example) and `--grad-checkpoint`; all train the same tokens. Computed tokens are "
              "the rows x columns of every training batch, plus each batch's shared prefix once "
              "(what the model ran on); mlx-lm's are its batches' (the examples 4 by 4 in file "
              "order, padded to 32s), all of which it also projects to the vocabulary, where ours "
              "projects only the answer tokens (the trained tokens' "
              f"{answer_share}):", "",
              "| data | ours | rows | computed tokens | tok/s | MLX peak MiB | peak RSS MiB |",
              "|---|---|---|---|---|---|---|", *memory, "",
              "What ours does that `mlx_lm lora` does not, all exact (the step's update is "
              "the whole padded batch's: tests/test_train_packing.py, "
              "tests/test_train_forward.py):",
              "",
              "- **Length grouping**: mlx-lm sorts chat examples by `len(dict)` (always 1), so "
              "its batches mix lengths and pad to the longest; ours batches neighbours in token "
              "length.",
              "- **Answer-only logits**: the vocabulary projection and the cross-entropy run only "
              "where the loss is (the answer), not over the prompt.",
              "- **Packing**: a step's short examples share rows no wider than its longest, each "
              "attending only to itself (block-diagonal causal mask).",
              "- **Shared prefix**: the tokens all of a step's examples start with (the system "
              "prompt) run once, as a row of their own, and every row attends to their keys and "
              "values; chosen per step when it is fewer computed tokens than packing.",
              "- **Query chunks** (CPU): a row runs through the model 64 or more tokens at a time "
              "(up to 32 chunks), each chunk's queries attending to the keys before it and "
              "causally within it, so most of the masked half of the attention scores is never "
              "computed and the largest score matrix is a chunk's, not the row's (MLX's CPU "
              "attention is dense; that is most of a long example's step and of its memory). On "
              "a GPU rows run whole: fused attention kernels skip masked blocks themselves.",
              "",
              "Compiled step: ours trains through mlx-lm's `train`, whose step is already "
              '`mx.compile`d over forward, backward and update with the model, optimizer and '
              'random state captured (`partial(mx.compile, inputs=state, outputs=state)`); '
              "tests/test_train_step.py checks it makes the uncompiled step's updates. "
              '`--grad-checkpoint` trades speed for activation memory (rows run whole with it: a '
              'recomputed layer cannot hand keys and values to the next chunk).',
              "",
              "Why the uniform set stays under 3x: MLX's Linux CPU wheel links the reference "
              "BLAS (about 8 GFLOP/s on one core here), so a step's time is its matmuls. On "
              "96-176-token examples there is little for ours to skip: mlx-lm's padding, its "
              "logits over the prompt and the system prompt's repeats are all of it, and the "
              "rest (every prompt token through every layer, forward and backward) both trainers "
              "must compute. The work line under each set counts it: ours cannot be faster than "
              "the ratio of the two works without using more than mlx-lm's one core (MLX's CPU "
              "stream is one thread; two CPU streams ran the forward pass in parallel here but "
              "not the backward, so ours stays on one). On long examples attention dominates "
              "and the chunks skip most of its masked half, hence the skewed sets' ratios. "
              "The skewed set's code is padded so each whole prompt "
              "(system + user) is log-uniform between 300 and "
              f"{args.max_chars:,} characters, at least the ~1,600 characters of the unpadded "
              "sample (real traces reach 30,000).", ""]  # fmt: skip


if __name__ == "__main__":
    main()
