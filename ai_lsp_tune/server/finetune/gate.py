"""The evaluation gate: whether a fine-tuned model replaces the served one, and if not, why.

The new model swaps in when it scored not worse than the served model on the test split and
that split holds enough examples to judge on (``finetune.minTestExamples``); ``finetune.force``
swaps it in regardless. A refused model is still offered to the user ("Use it anyway").
"""

from __future__ import annotations

from ai_lsp_tune.server.finetune.messages import test_examples
from ai_lsp_tune.server.finetune.states import RunRecord
from ai_lsp_tune.server.settings import FinetuneSettings


def judge(record: RunRecord, settings: FinetuneSettings, *, not_worse: bool) -> str | None:
    """Write the gate's decision into ``record``; return why the model is not swapped in."""
    record.test_examples = int((record.metrics_after or {}).get("n") or 0)
    too_few = record.test_examples < settings.min_test_examples
    record.gate = "passed" if not_worse else ("forced" if settings.force else "failed")
    if not_worse and too_few and not settings.force:
        record.gate = "too few test examples"
    if record.gate == "failed":
        return "the new model scored worse"
    if record.gate == "too few test examples":
        return (
            f"only {test_examples(record.test_examples)} to judge it on "
            f"(aiLsp.finetune.minTestExamples is {settings.min_test_examples})"
        )
    return None
