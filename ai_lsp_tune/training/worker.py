"""The training worker process: ``python -m ai_lsp_tune.training.worker --events-fd N``.

It reads one TrainRequest (versioned JSON) from ``--request``, runs it (``run.run_job``) and
writes events on the inherited file descriptor ``N``, never on stdout, which it points at stderr
because mlx-lm prints there. SIGTERM/SIGINT stop it within about 2 seconds with a checkpoint:
the run stops at the next step and saves one; if a step runs longer, a watchdog reports the
last periodic checkpoint and exits.
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
import threading
import traceback

from ai_lsp_tune.training.channel import Cancelled, EventChannel, WorkerError
from ai_lsp_tune.training.distributed import launched_rank
from ai_lsp_tune.training.protocol import CancelledEvent, ErrorEvent
from ai_lsp_tune.wire import ProtocolMismatch

EXIT_DONE, EXIT_ERROR, EXIT_CANCELLED = 0, 1, 3
STOP_GRACE_S = 1.5  # the run's own stop, then the watchdog's
# Ranks stop together at the next step all of them reach; a busy rank may be seconds behind.
DISTRIBUTED_STOP_GRACE_S = 10.0


def _watch_signals(channel: EventChannel, stop: threading.Event, done: threading.Event) -> None:
    """Runs in its own thread (signals are blocked elsewhere), so a long MLX call can't delay it."""
    signal.sigwait({signal.SIGTERM, signal.SIGINT})
    stop.set()
    grace = STOP_GRACE_S if launched_rank() is None else DISTRIBUTED_STOP_GRACE_S
    if done.wait(grace):
        return
    iteration, folder = channel.last_checkpoint or (None, None)
    channel.emit(
        CancelledEvent(
            message="Stopped mid-step; kept the last periodic checkpoint.",
            checkpoint_iteration=iteration,
            checkpoint_dir=folder,
        ),
        final=True,
    )
    os._exit(EXIT_CANCELLED)


def _is_out_of_memory(exc: BaseException) -> bool:
    text = str(exc).lower()
    return isinstance(exc, MemoryError) or any(
        s in text for s in ("out of memory", "bad_alloc", "unable to allocate", "[malloc")
    )


def main(argv: list[str] | None = None) -> int:
    # Block the stop signals before MLX starts threads; only the watcher thread takes them.
    signal.signal(signal.SIGTERM, signal.SIG_DFL)  # our mlx.launch ignores it; we don't
    signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGTERM, signal.SIGINT})
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--events-fd", type=int, required=True)
    parser.add_argument("--request", required=True, help="TrainRequest as JSON")
    args = parser.parse_args(argv)
    # Under ``mlx.launch`` the events may go to stdout (--events-fd 1): keep it, then redirect.
    events_fd = os.dup(1) if args.events_fd == 1 else args.events_fd
    os.dup2(2, 1)  # mlx-lm's prints go to our log, never to the parent's stdout
    # The language server runs us below its own priority (before MLX starts its threads).
    os.nice(int(os.environ.get("AI_LSP_WORKER_NICE", "0")))

    stop, done = threading.Event(), threading.Event()
    channel = EventChannel(events_fd, stop)
    channel.shares_stdout = args.events_fd == 1
    threading.Thread(target=_watch_signals, args=(channel, stop, done), daemon=True).start()
    try:
        from ai_lsp_tune.training.protocol import TRAIN_REQUESTS

        try:
            request = TRAIN_REQUESTS.parse(args.request)
        except ProtocolMismatch as exc:  # a parent from another version of the package
            raise WorkerError("bad_request", str(exc)) from None
        from ai_lsp_tune.training.run import run_job

        channel.emit(run_job(request, channel, stop), final=True)
        return EXIT_DONE
    except Cancelled as exc:
        iteration, folder = channel.last_checkpoint or (None, None)
        channel.emit(
            CancelledEvent(message=str(exc), checkpoint_iteration=iteration, checkpoint_dir=folder),
            final=True,
        )
        return EXIT_CANCELLED
    except WorkerError as exc:
        channel.emit(ErrorEvent(kind=exc.kind, message=exc.message), final=True)
        return EXIT_ERROR
    except BaseException as exc:
        traceback.print_exc()
        if _is_out_of_memory(exc):
            message = (
                "Out of memory while training: use a smaller model (2B instead of 7B), reduce "
                "--batch-size (try 1) or --max-seq-length, or close other applications."
            )
            channel.emit(ErrorEvent(kind="oom", message=message), final=True)
        else:
            first_line = (str(exc).strip().splitlines() or [""])[0][:300]
            message = f"Training crashed: {type(exc).__name__}: {first_line} (see the log)."
            channel.emit(ErrorEvent(kind="crashed", message=message), final=True)
        return EXIT_ERROR
    finally:
        done.set()
        sys.stdout.flush()


if __name__ == "__main__":
    sys.exit(main())
