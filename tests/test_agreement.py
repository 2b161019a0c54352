"""Issue-level agreement with the teacher: the matching rule and the paired bootstrap, on
hand-made cases, including ones a looser metric would score as a success."""

from __future__ import annotations

import pytest

from ai_lsp_tune.prompts import SYSTEM_PROMPT, user_prompt, window_user_prompt
from ai_lsp_tune.schema import DiagnosticResult, Issue
from ai_lsp_tune.training.agreement import IssueCounts, count_issues, paired_bootstrap
from ai_lsp_tune.training.evaluate import EvalMetrics, compare, not_worse, score_answers

CODE = """def load(path):
    try:
        data = open(path).read()
    except:
        pass
    value = eval(data)
    return value
"""


@pytest.mark.parametrize(
    ("predicted", "expected", "matched"),
    [
        (["except:"], ["    except:"], 1),  # the token on the teacher's line
        (["pass"], ["    except:"], 1),  # one line below the flagged line still points at it
        (["return value"], ["    except:"], 0),  # three lines away: another place
        (["eval(data)", "eval(data)", "eval"], ["    value = eval(data)"], 1),  # one-to-one
        (["not in the code"], ["    except:"], 0),  # ungrounded snippets match nothing
        (["   "], ["    except:"], 0),  # whitespace occurs everywhere; it locates nothing
        ([], [], 0),
    ],
)
def test_a_model_issue_matches_a_teacher_issue_on_the_same_or_next_line(
    predicted: list[str], expected: list[str], matched: int
) -> None:
    counts = count_issues(predicted, expected, CODE)
    assert counts == IssueCounts(matched, len(predicted), len(expected))


def test_a_snippet_found_all_over_the_code_is_one_prediction_per_place_it_is_shown() -> None:
    """A grounded but ambiguous snippet ("(" occurs four times) makes a diagnostic at each: four
    predictions, one of them by the teacher's line. Counted once, it would score precision 1."""
    counts = count_issues(["("], ["    value = eval(data)"], CODE)
    assert counts == IssueCounts(1, 4, 1)
    assert counts.precision == pytest.approx(1 / 4)


def test_matching_is_a_maximum_matching_not_first_come() -> None:
    """ "data" sits near both flagged lines; a greedy matcher would spend it on the first one
    and leave "pass" unmatched (2 of 2 is right, 1 of 2 is what greedy gives)."""
    counts = count_issues(
        ["data", "pass"], ["        data = open(path).read()", "    except:"], CODE
    )
    assert counts.matched == 2


def test_saying_nothing_scores_zero_recall_and_saying_everything_scores_low_precision() -> None:
    teacher = ["    except:", "    value = eval(data)"]
    silent = count_issues([], teacher, CODE)
    assert silent.recall == 0 and silent.f1 == 0
    every_line = [line for line in CODE.splitlines() if line.strip()]
    noisy = count_issues(every_line, teacher, CODE)
    assert noisy.recall == 1 and noisy.precision == pytest.approx(2 / 7)
    assert noisy.f1 < 0.5


def _example(name: str, code: str, snippets: list[str]) -> tuple[str, str, str]:
    issues = [Issue(issue_snippet=s, severity="warning", message="m") for s in snippets]
    return (
        SYSTEM_PROMPT,
        user_prompt("python", code, name),
        DiagnosticResult(issues=issues).to_json(),
    )


class _Ex:
    def __init__(self, system: str, user: str, assistant: str) -> None:
        self.system, self.user, self.assistant = system, user, assistant


def test_scores_are_counted_per_file_and_windows_of_one_file_count_as_one() -> None:
    answer = DiagnosticResult(
        issues=[Issue(issue_snippet="eval", severity="error", message="m")]
    ).to_json()
    window = window_user_prompt("python", CODE, "a.py", 10, 16, 40)
    examples = [
        _Ex(*_example("a.py", CODE, ["    value = eval(data)"])),
        _Ex(SYSTEM_PROMPT, window, DiagnosticResult(issues=[]).to_json()),
        _Ex(*_example("b.py", CODE, [])),
    ]
    metrics = score_answers(examples, [answer, answer, "not json"])
    assert metrics.files == {"a.py": (1, 2, 1), "b.py": (0, 0, 0)}
    assert metrics.issue_precision == 0.5 and metrics.issue_recall == 1.0
    assert metrics.file_agreement == 1.0  # a.py: both flag something; b.py: both say clean


def _metrics(files: dict[str, tuple[int, int, int]]) -> EvalMetrics:
    return EvalMetrics(
        n=len(files), valid_json_rate=1, schema_valid_rate=1, grounded_rate=1, snippet_f1=0,
        files=files,
    )  # fmt: skip


def test_the_bootstrap_interval_excludes_zero_only_when_the_gain_holds_across_files() -> None:
    files = [f"f{i}.py" for i in range(20)]
    before = {f: IssueCounts(0, 1, 1) for f in files}
    after = {f: IssueCounts(1, 1, 1) for f in files}
    clear = paired_bootstrap(after, before)
    assert clear.difference == 1.0 and clear.low > 0.5
    # The same total gain from one file out of twenty: the mean moves, the interval spans 0.
    lucky = dict(before, **{"f0.py": IssueCounts(20, 20, 20)})
    before_big = dict(before, **{"f0.py": IssueCounts(0, 20, 20)})
    one_file = paired_bootstrap(lucky, before_big)
    assert one_file.difference > 0.4 and one_file.low <= 0 < one_file.high


def test_the_gate_refuses_a_candidate_whose_f1_may_be_clearly_lower() -> None:
    files = [f"f{i}.py" for i in range(12)]
    served = _metrics({f: (1, 1, 1) for f in files})
    worse = _metrics({f: (0, 1, 1) if i % 2 else (1, 1, 1) for i, f in enumerate(files)})
    same = _metrics({f: (1, 1, 1) for f in files})
    assert not not_worse(worse, served)
    assert not_worse(same, served)
    judged = compare(worse, served)
    assert judged.f1_difference == pytest.approx(-0.5)
    assert judged.f1_difference_high is not None and judged.f1_difference_high < 0
    assert not not_worse(_metrics({}), _metrics({}))  # nothing scored: not proven
