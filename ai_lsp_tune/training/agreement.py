"""Agreement with the teacher at the issue level: does the model flag the lines the teacher flags?

An answer locates an issue only by its snippet, so the matching rule is about lines: a model
issue matches a teacher issue when the model's snippet occurs in the analysed code on a line
within ±1 of a line holding the teacher's snippet. A model snippet counts once per occurrence in
the code, as the editor shows a diagnostic at each: ``,`` (found on every other line) is a dozen
predictions, not one that matches anything. Matching is one-to-one (a maximum matching), so
repeating one snippet five times earns one match, not five. A snippet that is empty, only
whitespace, or not in the code is one prediction that matches nothing.

Counts are kept per file (the document an analysis is of), so two models scored on the same
files can be compared with a paired bootstrap over files: resample files with replacement, and
recompute F1(candidate) − F1(current) from the summed counts.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

from ai_lsp_tune.prompts import parse_user_prompt
from ai_lsp_tune.training.bootstrap import BOOTSTRAP_SAMPLES, CONFIDENCE, paired_interval

LINE_TOLERANCE = 1  # a snippet one line above or below the teacher's still points at the issue


@dataclass(frozen=True)
class IssueCounts:
    """Matched model issues, all model issues and all teacher issues (one file or summed)."""

    matched: int = 0
    predicted: int = 0
    expected: int = 0

    def __add__(self, other: IssueCounts) -> IssueCounts:
        return IssueCounts(
            self.matched + other.matched,
            self.predicted + other.predicted,
            self.expected + other.expected,
        )

    @property
    def precision(self) -> float:
        """Share of model issues the teacher also raised (1 when the model raised none)."""
        return self.matched / self.predicted if self.predicted else 1.0

    @property
    def recall(self) -> float:
        """Share of teacher issues the model found (1 when the teacher raised none)."""
        return self.matched / self.expected if self.expected else 1.0

    @property
    def f1(self) -> float:
        """F1 of the summed counts; 1 when neither raised anything (both said "clean")."""
        if not self.predicted and not self.expected:
            return 1.0
        return 2 * self.matched / (self.predicted + self.expected)


def snippet_lines(snippet: str, code: str) -> set[int]:
    """0-based lines on which ``snippet`` starts anywhere in ``code`` (empty: not there)."""
    return set(_occurrence_lines(snippet, code))


def shown_places(predicted: Sequence[str], code: str) -> list[set[int]]:
    """The line of each diagnostic the model's snippets make (one per occurrence in the code;
    an empty set for a snippet that is blank or not in the code)."""
    places: list[set[int]] = []
    for snippet in predicted:
        places += [{line} for line in _occurrence_lines(snippet, code)] or [set()]
    return places


def _occurrence_lines(snippet: str, code: str) -> list[int]:
    """The 0-based line of each place ``snippet`` starts in ``code`` (none when it is blank)."""
    if not snippet.strip():
        return []
    lines = []
    at = code.find(snippet)
    while at >= 0:
        lines.append(code.count("\n", 0, at))
        at = code.find(snippet, at + 1)
    return lines


def match_issues(predicted: Sequence[str], expected: Sequence[str], code: str) -> int:
    """How many model diagnostics (``shown_places``) match teacher snippets one-to-one (a
    maximum matching)."""
    expected_lines = [snippet_lines(s, code) for s in expected]
    candidates = []
    shown = shown_places(predicted, code)
    for lines in shown:
        candidates.append(
            [
                j
                for j, teacher in enumerate(expected_lines)
                if any(abs(a - b) <= LINE_TOLERANCE for a in lines for b in teacher)
            ]
        )
    owner: dict[int, int] = {}  # teacher issue -> model issue matched to it

    def augment(i: int, seen: set[int]) -> bool:
        for j in candidates[i]:
            if j in seen:
                continue
            seen.add(j)
            if j not in owner or augment(owner[j], seen):
                owner[j] = i
                return True
        return False

    return sum(augment(i, set()) for i in range(len(shown)))


def count_issues(predicted: Sequence[str], expected: Sequence[str], code: str) -> IssueCounts:
    """The counts of one analysis (a model snippet counts once per occurrence)."""
    shown = len(shown_places(predicted, code))
    return IssueCounts(match_issues(predicted, expected, code), shown, len(expected))


def file_key(user: str) -> str:
    """The file an analysis prompt is about (its File line, without the window's line range)."""
    parts = parse_user_prompt(user)
    return parts.name if parts is not None else user


def by_file(rows: Iterable[tuple[str, IssueCounts]]) -> dict[str, IssueCounts]:
    """Counts summed per file."""
    files: dict[str, IssueCounts] = {}
    for key, counts in rows:
        files[key] = files.get(key, IssueCounts()) + counts
    return files


def total(files: Mapping[str, IssueCounts]) -> IssueCounts:
    return sum(files.values(), IssueCounts())


@dataclass(frozen=True)
class F1Difference:
    """F1(candidate) − F1(current) on the files both were scored on, with a bootstrap interval."""

    difference: float
    low: float
    high: float
    files: int


def paired_bootstrap(
    candidate: Mapping[str, IssueCounts],
    current: Mapping[str, IssueCounts],
    *,
    samples: int = BOOTSTRAP_SAMPLES,
    confidence: float = CONFIDENCE,
    seed: int = 0,
) -> F1Difference:
    """The F1 difference and its percentile interval, resampling the shared files together."""
    keys = sorted(set(candidate) & set(current))
    if not keys:
        return F1Difference(0.0, 0.0, 0.0, 0)
    pairs = [(candidate[k], current[k]) for k in keys]

    def difference(chosen: Sequence[tuple[IssueCounts, IssueCounts]]) -> float:
        new = old = IssueCounts()
        for a, b in chosen:
            new, old = new + a, old + b
        return new.f1 - old.f1

    value, low, high = paired_interval(
        pairs, difference, samples=samples, confidence=confidence, seed=seed
    )
    return F1Difference(value, low, high, len(keys))
