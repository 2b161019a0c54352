"""The job's side of the dataset worker: traces in, a dataset folder out, progress as steps.

The worker (``dataset/worker.py``, a child process that ``dataset/runner.py`` starts) reads the
traces and writes the splits; this module builds its request from the run's settings and turns
its progress into steps.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from ai_lsp_tune.dataset.protocol import PrepareRequest
from ai_lsp_tune.dataset.runner import DatasetPreparation
from ai_lsp_tune.server.finetune.progress import ProgressStep

Report = Callable[[ProgressStep, float], None]  # a step, and how far the preparing phase is


class DatasetStep:
    """Traces -> dataset, in a child process (the server keeps answering meanwhile)."""

    def __init__(self, report: Report, *, live: Callable[[], bool]) -> None:
        self._report = report
        self._live = live  # False once the run is cancelling: no more reading-progress then
        self._preparation: DatasetPreparation | None = None

    def cancel(self) -> None:
        if self._preparation is not None:
            self._preparation.cancel()

    async def run(
        self,
        traces: list[Path],
        dataset_dir: Path,
        *,
        base_model: str,
        max_seq_length: int,
        include_local_answers: bool,
    ) -> tuple[dict[str, int], str]:
        """Prepare the dataset; its examples per split, and a note on the local model's own
        answers left out ("" if none). PreparationFailed when it cannot."""
        files = "trace file" if len(traces) == 1 else "trace files"
        self._report(ProgressStep("preparing", note=f"reading {len(traces)} {files}"), 0.05)
        base = Path(base_model)
        request = PrepareRequest(
            traces=traces,
            output_dir=dataset_dir,
            max_seq_length=max_seq_length,
            tokenizer=str(base) if base.is_dir() else None,
            include_local_answers=include_local_answers,
        )
        self._preparation = DatasetPreparation(request, self._reading)
        try:
            done = await self._preparation.run()
        finally:
            self._preparation = None
        cropped = f", {done.cropped} long ones cropped to windows" if done.cropped else ""
        local = f"; {done.local_note}" if done.local_note else ""
        step = ProgressStep("preparing", note=f"{done.examples} examples{cropped}{local}")
        self._report(step, 1.0)
        return dict(done.splits), done.local_note

    def _reading(self, fraction: float) -> None:
        if self._live():
            self._report(ProgressStep("preparing", note="reading traces"), 0.1 + 0.85 * fraction)
