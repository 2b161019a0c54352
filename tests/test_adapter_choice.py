"""Which adapter a run publishes by default: the best validation loss's only when it is surely
lower than the last step's, paired over the validation files; and the per-window losses that
rule reads are the losses the validation measures."""

from __future__ import annotations

from pathlib import Path

import pytest

from ai_lsp_tune.training.adapter_choice import (
    MIN_FILES,
    WindowLoss,
    choose_adapter,
    losses_by_file,
)


def _files(per_token: list[float], tokens: int = 100) -> dict[str, WindowLoss]:
    """Files f0.py, f1.py, ... whose answers have ``per_token`` mean loss each."""
    return {f"f{i}.py": (loss * tokens, tokens) for i, loss in enumerate(per_token)}


def _choose(best: list[float], last: list[float]) -> tuple[str, str]:
    choice = choose_adapter(_files(best), _files(last), best_iteration=20, last_iteration=60)
    return choice.published, choice.reason


def test_a_best_adapter_lower_on_every_file_is_kept() -> None:
    published, reason = _choose([1.0, 1.1, 0.9, 1.0, 1.2, 0.8, 1.0, 1.1], [1.3, 1.35, 1.25,
                                1.3, 1.5, 1.1, 1.28, 1.4])  # fmt: skip
    assert published == "best"
    assert reason.startswith("auto: best (step 20), surely lower validation loss (Δ +0.")
    assert "over 8 files" in reason


@pytest.mark.parametrize(
    ("best", "last", "why"),
    [
        # The demo's case: a few windows of a few files, the best lower on each by chance.
        ([1.0, 1.0, 1.0], [1.2, 1.3, 1.1], f"too few to judge the best (step 20) against it "
                                          f"({MIN_FILES} needed)"),
        # Lower here, higher there: the mean favours the best, the interval spans 0.
        ([1.0, 1.5, 1.0, 1.4, 1.0, 1.6, 1.0, 1.5], [1.4, 1.0, 1.5, 1.0, 1.4, 1.1, 1.5, 1.0],
         "not surely lower"),
        # The whole gain from one file of ten: a rule on the mean would keep the best.
        ([0.2] + [1.0] * 9, [1.5] + [1.0] * 9, "not surely lower"),
        ([1.0] * 8, [1.0] * 8, "not surely lower (Δ +0.000 [+0.000, +0.000] over 8 files)"),
    ],
    ids=["three-files", "noisy", "one-file-carries-it", "equal"],
)  # fmt: skip
def test_a_best_adapter_not_surely_lower_gives_way_to_the_last(
    best: list[float], last: list[float], why: str
) -> None:
    published, reason = _choose(best, last)
    assert published == "last"
    assert reason.startswith("auto: last; ") and why in reason


def test_when_the_last_step_is_the_best_there_is_nothing_to_choose() -> None:
    files = _files([1.0] * 8)
    choice = choose_adapter(files, files, best_iteration=60, last_iteration=60)
    assert choice.published == "last"
    assert choice.reason == "auto: the last step has the best validation loss"


def test_windows_pair_by_their_file_and_unvalidated_ones_are_left_out() -> None:
    windows = [(2.0, 10), (4.0, 10), (3.0, 5), (9.0, 0), (1.0, 2)]
    sources = ["a.py", "a.py", "b.py", "c.py", ""]
    assert losses_by_file(windows, sources) == {"a.py": (6.0, 20), "b.py": (3.0, 5),
                                                "#4": (1.0, 2)}  # fmt: skip


@pytest.mark.training
@pytest.mark.parametrize("layout", ["packed", "shared-prefix"])
def test_each_validation_window_gets_the_loss_it_has_alone(tiny_model: Path, layout: str) -> None:
    """A validation pass packs windows into rows (or runs their system prompt once); the loss
    recorded for each is the one it gets validated alone, and together they make the mean."""
    from mlx_lm.tuner.trainer import evaluate

    from ai_lsp_tune.training.data import (
        LengthGroupedBatches,
        TokenizedSplit,
        WindowLosses,
        make_loss,
    )
    from tests.helpers.models import lora_model
    from tests.helpers.training import prompted_split, skewed_split

    model = lora_model(tiny_model)
    vocab = model.args.vocab_size
    split = skewed_split(vocab) if layout == "packed" else prompted_split(vocab)
    loss = make_loss(model)

    def validate(examples: TokenizedSplit, batches: LengthGroupedBatches) -> float:
        return float(
            evaluate(model=model, dataset=examples, loss=loss, batch_size=4, num_batches=-1,
                     max_seq_length=1 << 30, iterate_batches=batches)  # type: ignore[arg-type]
        )  # fmt: skip

    windows = WindowLosses(split)
    batches = LengthGroupedBatches(
        pack=layout == "packed", share=layout != "packed", window_losses=windows
    )
    mean = validate(split, batches)
    recorded = windows.pairs()
    assert [n for _, n in recorded] == [len(tokens) - offset for tokens, offset in split.items]
    for (tokens, offset), (summed, n) in zip(split.items, recorded, strict=True):
        alone = validate(TokenizedSplit(items=[(tokens, offset)]), LengthGroupedBatches())
        assert summed / n == pytest.approx(alone, rel=1e-3)
    assert sum(s for s, _ in recorded) / sum(n for _, n in recorded) == pytest.approx(mean)
