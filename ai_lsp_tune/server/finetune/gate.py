"""The evaluation gate: whether a fine-tuned model replaces the served one, and if not, why.

The new model swaps in when it scored not worse than the served model on the test split (its
issue F1 against the teacher's answers, paired over files: the 95 % interval of the difference
stays at or above −0.05, ``training.evaluate.not_worse``) and that split holds enough examples
from as many files (both at least ``finetune.minTestExamples``) to judge on;
``finetune.force`` swaps it in regardless. A refused model is still offered ("Use it anyway").
"""

from __future__ import annotations

from ai_lsp_tune.server.finetune.messages import test_examples
from ai_lsp_tune.server.finetune.states import RunRecord
from ai_lsp_tune.server.settings import FinetuneSettings


def judge(record: RunRecord, settings: FinetuneSettings, *, not_worse: bool) -> str | None:
    """Write the gate's decision into ``record``; return why the model is not swapped in."""
    record.test_examples = int((record.metrics_after or {}).get("n") or 0)
    files = (record.metrics_after or {}).get("files")
    test_files = len(files) if isinstance(files, dict) else None
    too_few_files = test_files is not None and test_files < settings.min_test_examples
    too_few = record.test_examples < settings.min_test_examples or too_few_files
    record.gate = "passed" if not_worse else ("forced" if settings.force else "failed")
    if not_worse and too_few and not settings.force:
        record.gate = "too few test examples"
    if record.gate == "failed":
        return "the new model scored worse"
    if (
        record.gate == "too few test examples"
        and record.test_examples >= settings.min_test_examples
    ):
        return (
            f"its test examples come from only {test_files} file{'' if test_files == 1 else 's'}, "
            f"too few to compare it with the served model "
            f"(aiLsp.finetune.minTestExamples is {settings.min_test_examples}, of files too)"
        )
    if record.gate == "too few test examples":
        return (
            f"only {test_examples(record.test_examples)} to judge it on "
            f"(aiLsp.finetune.minTestExamples is {settings.min_test_examples})"
        )
    return None
