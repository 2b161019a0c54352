"""Redact secrets from training text, consistently across one example's prompt and answer.

Traces hold source code, and source code holds keys. A secret found in the prompt is replaced by
the same placeholder wherever it occurs in the example (also in an answer's ``issue_snippet``
that quotes only the secret), so snippets still match the code after redaction.
"""

from __future__ import annotations

import contextlib
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

# (kind, literals one of which must occur, pattern, group holding the secret). The literal check
# (str.__contains__, very fast) skips a pattern's regex scan on the usual secret-free code.
_PATTERNS: list[tuple[str, tuple[str, ...], re.Pattern[str], int]] = [
    (
        "PRIVATE_KEY",
        ("PRIVATE KEY-----",),
        re.compile(
            r"-----BEGIN (?:[A-Z0-9]+ )*PRIVATE KEY(?: BLOCK)?-----"
            r".*?-----END (?:[A-Z0-9]+ )*PRIVATE KEY(?: BLOCK)?-----",
            re.DOTALL,
        ),
        0,
    ),
    (
        "AWS_ACCESS_KEY",
        ("AKIA", "ASIA", "ABIA", "ACCA"),
        re.compile(r"\b(?:AKIA|ASIA|ABIA|ACCA)[0-9A-Z]{16}\b"),
        0,
    ),
    (
        "AWS_SECRET_KEY",
        ("aws", "AWS", "Aws"),
        re.compile(r"(?i)aws_?secret_?(?:access_?)?key['\"]?\s*[:=]+\s*['\"]?([A-Za-z0-9/+=]{40})"),
        1,
    ),
    (
        "GITHUB_TOKEN",
        ("ghp_", "gho_", "ghu_", "ghs_", "ghr_", "github_pat_"),
        re.compile(r"\b(?:gh[pousr]_[A-Za-z0-9]{36,255}|github_pat_\w{22,255})"),
        0,
    ),
    ("GITLAB_TOKEN", ("glpat-",), re.compile(r"\bglpat-[A-Za-z0-9_-]{20,}"), 0),
    ("API_KEY", ("sk-",), re.compile(r"\bsk-(?:ant-|proj-)?[A-Za-z0-9_-]{20,}"), 0),
    ("SLACK_TOKEN", ("xox",), re.compile(r"\bxox[abposr]-[A-Za-z0-9-]{10,}"), 0),
    ("GOOGLE_API_KEY", ("AIza",), re.compile(r"\bAIza[0-9A-Za-z_-]{35}"), 0),
    ("STRIPE_KEY", ("_live_",), re.compile(r"\b(?:sk|rk|pk)_live_[0-9A-Za-z]{16,}"), 0),
    ("HF_TOKEN", ("hf_",), re.compile(r"\bhf_[A-Za-z0-9]{30,}"), 0),
    (
        "JWT",
        ("eyJ",),
        re.compile(r"\beyJ[A-Za-z0-9_-]{8,}\.eyJ[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]{8,}"),
        0,
    ),
    ("URL_PASSWORD", ("://",), re.compile(r"\b[a-z][a-z0-9+.-]*://[^:/\s@]+:([^@/\s'\"]{3,})@"), 1),
]
# Where a match can start, found with str.find in the lowered text (a scan at memory speed)
# instead of letting the regex try every position: (lowered anchor, its offset in a match).
# Every match of a pattern holds one of its anchors at that offset; URL_PASSWORD's scheme is
# walked back from "://". PRIVATE_KEY's regex starts with a literal, which re finds quickly.
_ANCHORS: dict[str, tuple[tuple[str, int], ...]] = {
    "AWS_ACCESS_KEY": (("akia", 0), ("asia", 0), ("abia", 0), ("acca", 0)),
    "AWS_SECRET_KEY": (("aws", 0),),
    "GITHUB_TOKEN": (("gh", 0), ("github_pat_", 0)),
    "GITLAB_TOKEN": (("glpat-", 0),),
    "API_KEY": (("sk-", 0),),
    "SLACK_TOKEN": (("xox", 0),),
    "GOOGLE_API_KEY": (("aiza", 0),),
    "STRIPE_KEY": (("_live_", 2),),
    "HF_TOKEN": (("hf_", 0),),
    "JWT": (("eyj", 0),),
}
_SCHEME_CHARS = frozenset("abcdefghijklmnopqrstuvwxyz0123456789+.-")
_ANY_LITERAL = re.compile("|".join(re.escape(lit) for _, lits, _, _ in _PATTERNS for lit in lits))
_SECRET_WORDS = (
    *("password", "passwd", "pwd", "secret", "apikey", "api_key", "accesskey", "access_key"),
    *("authtoken", "auth_token", "accesstoken", "access_token", "privatekey", "private_key"),
)
# The secret words by a shorter prefix they share: one scan finds several words.
_WORD_PREFIXES = ("passw", "pwd", "secret", "api", "access", "auth", "private")
_URL_ANCHOR = "://"


def _anchor_scans() -> list[re.Pattern[str]]:
    """One regex per first letter over all anchors and word prefixes, for fewer passes.

    A regex starting with one literal character is searched at memory speed, like str.find,
    so nine passes replace twenty-two. No anchor is a prefix of another, so at any offset at
    most one of them matches and searching on from each hit's next offset finds them all.
    """
    anchors = {a for pairs in _ANCHORS.values() for a, _ in pairs}
    anchors |= {_URL_ANCHOR, *_WORD_PREFIXES}
    assert not any(a != b and b.startswith(a) for a in anchors for b in anchors)
    by_first: dict[str, list[str]] = {}
    for anchor in sorted(anchors):
        by_first.setdefault(anchor[0], []).append(anchor)
    return [re.compile("|".join(map(re.escape, group))) for group in by_first.values()]


_ANCHOR_SCANS = _anchor_scans()
_ASSIGNED_SECRET = re.compile(
    r"(?i)(?:password|passwd|pwd|secret|api_?key|access_?key|auth_?token|access_?token"
    r"|private_?key)[\w.-]*['\"]?\s*(?::=|=>|=|:)\s*"
    r"(['\"])((?!\$\{|\{\{|%\(|<)[^'\"\s]{6,})\1"
)


@dataclass
class Redactor:
    """Replaces secrets with placeholders; one instance per example keeps them consistent."""

    secrets: dict[str, str] = field(default_factory=dict)  # secret -> placeholder

    def redact(self, text: str) -> str:
        """``text`` with every known or newly found secret replaced by its placeholder."""
        self.learn(text)
        return self.apply(text)

    def learn(self, text: str) -> None:
        """Remember the secrets in ``text`` (one call over joined texts is cheapest)."""
        found = _anchor_hits(text)
        if found is None:  # a few characters change length when lowered
            self._learn_scanning(text)
            return
        hits, at_word = found
        for kind, _, pattern, group in _PATTERNS:
            if kind == "PRIVATE_KEY":
                if "private" not in hits:  # "PRIVATE KEY", lowered, starts with that prefix
                    continue
            elif kind == "URL_PASSWORD":
                if _URL_ANCHOR not in hits:
                    continue
            elif not any(anchor in hits for anchor, _ in _ANCHORS[kind]):
                continue
            for match in _anchored_matches(kind, pattern, text, hits):
                self._learn(match.group(group), kind)
        # the regex only runs where a word was found
        for word in _SECRET_WORDS:  # in this order, as placeholders are numbered
            for at in at_word.get(word, ()):
                assigned = _ASSIGNED_SECRET.match(text, at)
                if assigned:
                    self._learn(assigned.group(2), "PASSWORD")

    def _learn_scanning(self, text: str) -> None:
        """``learn`` for text whose lowered form has another length: the regexes scan it all."""
        if _ANY_LITERAL.search(text):
            for kind, literals, pattern, group in _PATTERNS:
                if any(literal in text for literal in literals):
                    for match in pattern.finditer(text):
                        self._learn(match.group(group), kind)
        for found in _ASSIGNED_SECRET.finditer(text):
            self._learn(found.group(2), "PASSWORD")

    def apply(self, text: str) -> str:
        """``text`` with the secrets learnt so far replaced, longest first."""
        for secret in sorted(self.secrets, key=len, reverse=True):
            if secret in text:
                text = text.replace(secret, self.secrets[secret])
        return text

    def _learn(self, secret: str, kind: str) -> None:
        if secret and secret not in self.secrets:
            self.secrets[secret] = f"REDACTED_{kind}_{len(self.secrets) + 1}"

    @property
    def count(self) -> int:
        return len(self.secrets)


# Outside ASCII, only these lower to ASCII letters (the Kelvin sign to "k"; "İ" to "i" and a
# combining dot, so the lowered text is longer). Other text has the same anchors lowered as
# UTF-8 bytes, where ``bytes.lower`` touches only ASCII letters.
_LOWERS_TO_ASCII = ("\u212a", "\u0130")
_ANCHOR_SCANS_BYTES = [re.compile(scan.pattern.encode("ascii")) for scan in _ANCHOR_SCANS]
_WORDS_BY_PREFIX = {p: tuple(w for w in _SECRET_WORDS if w.startswith(p)) for p in _WORD_PREFIXES}

Hits = dict[str, list[int]]  # anchor or secret word -> its offsets in the text, in order


def _anchor_hits(text: str) -> tuple[Hits, Hits] | None:
    """Where the anchors and the secret words occur in lowered ``text`` (character offsets).

    Scanned as lowered UTF-8 bytes: text with a character beyond Latin-1 is stored two or
    four bytes per character, and ``str.lower`` and ``re`` on it are several times slower.
    None when lowering changes the text's length: then the regexes must scan it all.
    """
    if text.isascii():
        return _hits(text.encode("ascii").lower(), _ANCHOR_SCANS_BYTES)
    if not any(c in text for c in _LOWERS_TO_ASCII):
        with contextlib.suppress(UnicodeEncodeError):  # an unpaired surrogate: as str
            data = text.encode("utf-8").lower()
            hits, at_word = _hits(data, _ANCHOR_SCANS_BYTES)
            if not (hits or at_word):
                return hits, at_word
            chars = _char_offsets(data, {at for found in hits.values() for at in found})
            return (
                {anchor: [chars[at] for at in found] for anchor, found in hits.items()},
                {word: [chars[at] for at in found] for word, found in at_word.items()},
            )
    lowered = text.lower()
    if len(lowered) != len(text):
        return None
    return _hits(lowered, _ANCHOR_SCANS)


def _hits(lowered: str | bytes, scans: list[re.Pattern[Any]]) -> tuple[Hits, Hits]:
    """Offsets in ``lowered`` (text or its bytes) of every anchor and every secret word."""
    as_bytes = isinstance(lowered, bytes)
    hits: Hits = {}
    for scan in scans:
        found = scan.search(lowered)
        while found is not None:
            anchor = found.group().decode("ascii") if as_bytes else found.group()
            hits.setdefault(anchor, []).append(found.start())
            found = scan.search(lowered, found.start() + 1)
    at_word: Hits = {}
    for prefix in _WORD_PREFIXES:
        for at in hits.get(prefix, ()):
            for word in _WORDS_BY_PREFIX[prefix]:
                needle: Any = word.encode("ascii") if as_bytes else word  # as ``lowered`` is
                if lowered.startswith(needle, at):
                    at_word.setdefault(word, []).append(at)
    return hits, at_word


def _char_offsets(utf8: bytes, offsets: set[int]) -> dict[int, int]:
    """Character offset of each byte offset (each at an ASCII byte: a character boundary)."""
    chars: dict[int, int] = {}
    byte, char = 0, 0
    for at in sorted(offsets):
        char += len(utf8[byte:at].decode("utf-8"))
        byte = at
        chars[at] = char
    return chars


def _anchored_matches(
    kind: str, pattern: re.Pattern[str], text: str, hits: dict[str, list[int]]
) -> Iterator[re.Match[str]]:
    """What ``pattern.finditer(text)`` yields, trying the regex only where an anchor occurs.

    ``hits``: where each anchor occurs in the lowered text (of the same length as ``text``).
    """
    if kind == "PRIVATE_KEY":
        yield from pattern.finditer(text)
        return
    starts: list[int] = []
    if kind == "URL_PASSWORD":
        after = 0  # "://" found overlapping the previous one does not count (as with find)
        for at in hits.get(_URL_ANCHOR, ()):
            if at < after:
                continue
            scheme = at
            while scheme > 0 and text[scheme - 1] in _SCHEME_CHARS:
                scheme -= 1
            starts.extend(range(scheme, at))
            after = at + 3
    else:
        for anchor, offset in _ANCHORS[kind]:
            starts.extend(at - offset for at in hits.get(anchor, ()) if at >= offset)
    if len(_ANCHORS.get(kind, ())) > 1:
        starts.sort()
    end = 0
    for start in starts:
        if start < end:
            continue  # finditer's matches do not overlap
        match = pattern.match(text, start)
        if match is not None:
            yield match
            end = match.end()
