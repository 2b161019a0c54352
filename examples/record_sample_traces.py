"""Record the demo's sample traces: scripted analyses in our span format, via the OTel SDK.

    uv run python examples/record_sample_traces.py [--count 100] [--seed 0]

Writes examples/traces/sample-otel.jsonl (replacing it), which ``ai-lsp demo`` reads.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from ai_lsp_tune.cli.demo import SAMPLE_TRACES, record_sample_traces


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--count", type=int, default=100, help="analyses to record")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--output", type=Path, default=SAMPLE_TRACES)
    args = parser.parse_args()
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.unlink(missing_ok=True)  # the exporter appends
    record_sample_traces(args.output, args.count, seed=args.seed)
    print(f"wrote {args.count} analyses to {args.output}")


if __name__ == "__main__":
    main()
