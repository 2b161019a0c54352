"""The dataset worker process: ``python -m ai_lsp_tune.dataset.worker REQUEST``.

It reads one ``PrepareRequest`` (versioned JSON) from its command line, prepares the dataset
and writes its messages (``protocol``) on its original stdout, which it keeps for them alone:
anything else it prints goes to stderr. SIGTERM removes its temp files and ends it.
"""

from __future__ import annotations

import argparse
import os
import sys

from ai_lsp_tune.dataset.protocol import (
    PREPARE_REQUESTS,
    PrepareDone,
    PrepareFailed,
    PrepareProgress,
)
from ai_lsp_tune.wire import LineWriter, ProtocolMismatch


def _child(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description="Prepare a dataset for the language server.")
    parser.add_argument("request", help="PrepareRequest as JSON")
    args = parser.parse_args(argv)
    channel = LineWriter.to_fd(os.dup(1))
    os.dup2(2, 1)  # anything printed goes to the log, never into the message channel
    # Analyses come first: preparation runs below the model host (nice 10), which it would
    # otherwise share a core with for its few seconds of pure-Python work.
    os.nice(int(os.environ.get("AI_LSP_PREPARE_NICE", "19")))
    send = channel.send

    from ai_lsp_tune.dataset.prepare import NoUsableTraces, prepare_dataset
    from ai_lsp_tune.dataset.report import (
        KEEP_LOCAL_ANSWERS_EDITOR,
        local_answers_note,
        nothing_usable,
    )
    from ai_lsp_tune.files import sigterm_cleans_up

    try:
        request = PREPARE_REQUESTS.parse(args.request)
    except ProtocolMismatch as exc:  # a server from another version of the package
        send(PrepareFailed(message=str(exc)))
        return 1
    sent = [-1]

    def on_progress(done: int, total: int) -> None:
        percent = done * 100 // total if total else 100
        if percent > sent[0]:  # at most a hundred messages, however long the traces
            sent[0] = percent
            send(PrepareProgress(done=done, total=total))

    try:
        with sigterm_cleans_up():  # cancel() sends SIGTERM: temp files go with the process
            report = prepare_dataset(
                request.traces,
                output_file=None,
                output_dir=request.output_dir,
                max_seq_length=request.max_seq_length,
                tokenizer=request.tokenizer,
                on_progress=on_progress,
                include_local_answers=request.include_local_answers,
            )
    except NoUsableTraces as exc:  # said with the editor's setting, not the CLI's flag
        send(PrepareFailed(message=nothing_usable(exc.report, KEEP_LOCAL_ANSWERS_EDITOR)))
        return 1
    except Exception as exc:  # each of prepare_dataset's errors is one clear sentence
        send(PrepareFailed(message=str(exc) or type(exc).__name__))
        return 1
    send(
        PrepareDone(
            examples=report.examples,
            splits=dict(report.splits),
            cropped=report.cropped,
            local_note=local_answers_note(report, KEEP_LOCAL_ANSWERS_EDITOR),
        )
    )
    return 0


if __name__ == "__main__":
    sys.exit(_child(sys.argv[1:]))
