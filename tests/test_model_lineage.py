"""Model lineage: what a workspace served, in order, and which fine-tuned models stay on disk."""

from __future__ import annotations

from datetime import datetime
from pathlib import Path

import pytest

from ai_lsp_tune.server.finetune.context import FinetuneOptions
from ai_lsp_tune.server.finetune.model_list import find_listed, model_list, short_path
from ai_lsp_tune.server.finetune.train_step import editor_terms
from ai_lsp_tune.server.settings import FinetuneSettings
from ai_lsp_tune.serving.registry import ModelEntry, ModelRegistry


def finetuned(runs: Path, run_id: str) -> str:
    model = runs / run_id / "output" / "model"
    model.mkdir(parents=True)
    (model / "config.json").write_text("{}")
    return str(model)


def test_rollback_steps_down_the_lineage_not_back_through_what_served(tmp_path: Path) -> None:
    registry = ModelRegistry(tmp_path)
    assert registry.start_serving("base") == "base"
    for run in ("ft1", "ft2"):  # two fine-tunes, each from the base
        registry.record_model(ModelEntry(path=run, run_id=run, base_model="base"))
    registry.record_swap("ft1", "base")
    registry.record_swap("ft2", "ft1")
    registry.record_swap("ft1", "ft2")  # the user picks ft1 again in the model list
    restarted = ModelRegistry(tmp_path)  # persisted
    assert (restarted.served, restarted.previous) == ("ft1", "base")  # its parent, not ft2
    restarted.record_rollback()
    assert (restarted.served, restarted.previous) == ("base", None)  # never below the base
    assert ModelRegistry(tmp_path).model_to_serve("base") == "base"


def test_a_fine_tune_of_a_fine_tune_rolls_back_to_its_parent(tmp_path: Path) -> None:
    registry = ModelRegistry(tmp_path)
    registry.start_serving("base")
    registry.record_model(ModelEntry(path="ft1", run_id="r1", base_model="base"))
    registry.record_model(ModelEntry(path="ft2", run_id="r2", base_model="ft1"))  # continued
    registry.record_swap("ft2", "base")
    assert registry.previous == "ft1"
    registry.record_rollback()
    assert (registry.served, registry.previous) == ("ft1", "base")


def test_a_model_the_workspace_did_not_make_rolls_back_to_what_served_before(
    tmp_path: Path,
) -> None:
    registry = ModelRegistry(tmp_path)
    registry.record_swap("other", "base")
    assert registry.previous == "base"
    registry.record_rollback()
    assert (registry.served, registry.previous) == ("base", None)


def test_a_version_1_registry_still_rolls_back(tmp_path: Path) -> None:
    (tmp_path / "models.json").write_text('{"version": 1, "served": "ft", "previous": "base"}')
    registry = ModelRegistry(tmp_path)
    assert (registry.served, registry.previous) == ("ft", "base")


@pytest.mark.parametrize(
    ("settings", "continue_from_served", "expected"),
    [
        ({}, False, "configured"),
        ({"continueFromServed": True}, False, "served"),
        ({}, True, "served"),
        ({"baseModel": "chosen"}, True, "chosen"),
    ],
)
def test_a_fine_tune_starts_from_the_base_unless_asked_to_continue(
    settings: dict[str, object], continue_from_served: bool, expected: str
) -> None:
    options = FinetuneOptions(
        settings=FinetuneSettings.model_validate(settings),
        configured_model="configured",
        continue_from_served=continue_from_served,
    )
    assert options.base_model("served") == expected


def test_retention_keeps_the_newest_and_never_the_served_previous_or_base(tmp_path: Path) -> None:
    runs = tmp_path / "runs"
    registry = ModelRegistry(tmp_path)
    models = [finetuned(runs, f"r{i}") for i in range(5)]
    for i, path in enumerate(models):
        registry.record_model(ModelEntry(path=path, run_id=f"r{i}", base_model="base"))
    registry.record_swap(models[0], "base")  # r0 served, then r1: r0 is the previous one
    registry.record_swap(models[1], models[0])
    outside = tmp_path / "elsewhere" / "model"
    outside.mkdir(parents=True)
    registry.record_model(ModelEntry(path=str(outside), run_id="x"))

    deleted = registry.prune(2, protect={models[1], models[0], "base"}, runs_dir=runs)
    assert deleted == [models[2], models[3]]
    assert not (runs / "r2").exists() and not (runs / "r3").exists()
    assert all(Path(p).is_dir() for p in (models[0], models[1], models[4], outside))
    assert [m.path for m in ModelRegistry(tmp_path).models] == [
        models[0],
        models[1],
        models[4],
        str(outside),
    ]


def test_retention_keeps_every_ancestor_a_rollback_can_land_on(tmp_path: Path) -> None:
    """A chain of continueFromServed runs: each rollback steps to the model the served one was
    trained from, so the grandparent and further ancestors stay on disk too, not only the
    parent; models off the lineage still go beyond keepModels."""
    runs = tmp_path / "runs"
    registry = ModelRegistry(tmp_path)
    registry.start_serving("base")
    chain = [finetuned(runs, f"c{i}") for i in range(4)]  # c0 from base, c1 from c0, ...
    for i, path in enumerate(chain):
        parent = chain[i - 1] if i else "base"
        registry.record_model(ModelEntry(path=path, run_id=f"c{i}", base_model=parent))
        registry.record_swap(path, parent)
    side = [finetuned(runs, f"s{i}") for i in range(3)]  # newer runs from the base, not served
    for i, path in enumerate(side):
        registry.record_model(ModelEntry(path=path, run_id=f"s{i}", base_model="base"))

    deleted = registry.prune(2, protect={chain[3], chain[2], "base"}, runs_dir=runs)
    assert deleted == [side[0]]
    for landing in (chain[2], chain[1], chain[0], "base"):  # roll back down to the base
        registry.record_rollback()
        assert registry.served == landing
        assert landing == "base" or Path(landing).is_dir(), f"rolled back onto deleted {landing}"


def test_the_model_list_puts_the_base_first_and_marks_what_serves(tmp_path: Path) -> None:
    registry = ModelRegistry(tmp_path)
    ft = finetuned(tmp_path / "runs", "r1")
    registry.record_model(
        ModelEntry(path=ft, run_id="r1", base_model="base", metrics={"n": 3}, examples={"test": 3})
    )
    registry.record_swap(ft, "base")
    rows = model_list(registry, base="base", serving=ft)
    assert [(r["path"], r["runId"], r["serving"]) for r in rows] == [
        ("base", None, False),
        (ft, "r1", True),
    ]
    assert rows[1]["metrics"] == {"n": 3} and rows[1]["baseModel"] == "base"
    assert find_listed(rows, ft + "/") == ft  # the same folder, spelled differently
    assert find_listed(rows, str(tmp_path)) is None


CONSTRAINED = {"schema_valid_rate": 1.0, "unconstrained_valid_json_rate": 0.0, "n": 8}


def test_model_rows_read_as_names_and_metrics_a_person_can_compare(tmp_path: Path) -> None:
    """Two fine-tunes of one base do not look the same: each row says its base's name, when it
    was made (local time), its issue F1 with the interval and val loss; the base row has the
    metrics measured when it served; a run the gate kept out says so; schema-valid, always
    100 % under constrained decoding, is left out."""
    registry = ModelRegistry(tmp_path)
    base = "/models/SmolLM2-135M-Instruct"
    kept = {**CONSTRAINED, "issue_f1": 0.42, "f1_difference_low": 0.1, "f1_difference_high": 0.31}
    registry.record_model(
        ModelEntry(
            path="/runs/r1/output/model",
            run_id="r1",
            base_model=base,
            created_at="2026-12-03T14:05:00+00:00",
            metrics={**kept, "val_loss": 1.349},
            baseline_model=base,
            baseline_metrics={**CONSTRAINED, "issue_f1": 0.0, "val_loss": 3.2},
            gate="passed",
        )
    )
    worse = {**CONSTRAINED, "issue_f1": 0.1, "f1_difference_low": -0.5, "f1_difference_high": 0.0}
    registry.record_model(
        ModelEntry(
            path="/runs/r2/output/model",
            run_id="r2",
            base_model=base,
            created_at="2026-12-03T15:30:00+00:00",
            metrics={**worse, "val_loss": 2.0, "n": 1},
            gate="failed",
        )
    )
    base_row, first, second = model_list(registry, base=base, serving="/runs/r1/output/model")
    local = datetime.fromisoformat("2026-12-03T14:05:00+00:00").astimezone()
    assert base_row["label"] == "SmolLM2-135M-Instruct (base model)"
    assert first["label"] == f"SmolLM2-135M-Instruct fine-tune · {local:%b} 3 {local:%H:%M}"
    assert first["label"] != second["label"]
    assert base_row["detail"] == "issue F1 0.00 · val loss 3.20 · 8 test examples"
    assert first["detail"] == (
        "issue F1 0.42 (change +0.10..+0.31) · val loss 1.35 · 8 test examples"
    )
    assert second["detail"].endswith("1 test example · not swapped in: it scored worse")
    assert second["gate"] == "failed"
    assert not any("schema-valid" in row["detail"] for row in (base_row, first, second))
    registry.record_model(
        ModelEntry(path="/runs/r3", run_id="r3", base_model=base, created_at="2026-12-03T15:30:09")
    )
    *_, made_then, made_same_minute = model_list(registry, base=base, serving=None)
    assert made_then["label"].endswith(":00") and made_same_minute["label"].endswith(":09")
    (never_evaluated,) = model_list(None, base="b", serving=None)
    assert never_evaluated["detail"] == "not evaluated yet"


def test_long_paths_are_shortened_for_messages() -> None:
    home = Path.home()
    long = home / ".local/share/ai-lsp-tune/workspaces/p-1/finetune/runs/r1/output/model"
    assert short_path(str(long)) == "~/…/runs/r1/output/model"
    assert short_path("mlx-community/gemma-2-2b-it-4bit") == "mlx-community/gemma-2-2b-it-4bit"
    assert short_path("/opt/models/deep/tiny") == "/…/deep/tiny"


@pytest.mark.parametrize(
    ("worker_says", "editor_shows"),
    [
        (
            "--lora-rank 512 is more than the hidden size 96; pass --lora-rank 96 or less.",
            "aiLsp.finetune.loraRank 512 is more than the hidden size 96; "
            "pass aiLsp.finetune.loraRank 96 or less.",
        ),
        ("no examples fit --max-seq-length 16", "no examples fit aiLsp.finetune.maxSeqLength 16"),
        ("pass --model-name /path", "pass aiLsp.model (or aiLsp.finetune.baseModel) /path"),
    ],
)
def test_worker_errors_shown_in_the_editor_name_editor_settings(
    worker_says: str, editor_shows: str
) -> None:
    assert editor_terms(worker_says) == editor_shows
