"""Redact secrets from training text, consistently across one example's prompt and answer.

Traces hold source code, and source code holds keys. A secret found in the prompt is replaced by
the same placeholder wherever it occurs in the example (also in an answer's ``issue_snippet``
that quotes only the secret), so snippets still match the code after redaction. What a secret
looks like is defined in ``redact_formats`` (token formats, key blocks, credential lines) and
``redact_rules`` (values assigned to secret-ish names).
"""

from __future__ import annotations

import contextlib
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from ai_lsp_tune.dataset.redact_formats import KINDS, Kind
from ai_lsp_tune.dataset.redact_rules import SECRET_WORDS, WORD_ANCHORS, assigned_secret, word_ends

_SCHEME_CHARS = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789+.-")
_URL_ANCHOR = "://"
_SHORT = 12  # a secret shorter than this may also be a part of a longer word
_WORD_CHAR = re.compile(r"[A-Za-z0-9_]")


def _anchors() -> list[str]:
    anchors = {a for kind in KINDS for a, _ in kind.anchors} | {a for a, _ in WORD_ANCHORS}
    # At any offset at most one anchor matches, so searching on from each hit's next offset
    # finds them all.
    assert not any(a != b and b.startswith(a) for a in anchors for b in anchors)
    return sorted(anchors)


def _anchor_scans(flags: int = 0) -> list[re.Pattern[str]]:
    """One regex per first letter over all anchors and word prefixes, for fewer passes.

    A regex starting with one literal character is searched at memory speed, like str.find.
    """
    by_first: dict[str, list[str]] = {}
    for anchor in _anchors():
        by_first.setdefault(anchor[0], []).append(anchor)
    return [re.compile(_trie(group), flags) for group in by_first.values()]


def _trie(words: list[str]) -> str:
    """A regex matching any of ``words`` (none a prefix of another), common prefixes shared.

    ``a(?:ws|pi_k|...)`` rejects a frequent first letter after one test of the second, where
    ``aws|api_k|...`` tries every alternative there.
    """
    by_first: dict[str, list[str]] = {}
    for word in words:
        by_first.setdefault(word[0], []).append(word[1:])
    branches = [
        re.escape(first) + (_trie(rests) if len(rests) > 1 else re.escape(rests[0]))
        for first, rests in by_first.items()
    ]
    return branches[0] if len(branches) == 1 else "(?:" + "|".join(branches) + ")"


_ANCHOR_SCANS = _anchor_scans()
# For text whose lowered form has another length: its ASCII letters matched in either case.
_ANCHOR_SCANS_ANY_CASE = _anchor_scans(re.IGNORECASE | re.ASCII)


@dataclass
class Redactor:
    """Replaces secrets with placeholders; one instance per example keeps them consistent."""

    secrets: dict[str, str] = field(default_factory=dict)  # secret -> placeholder
    found: int = 0  # secrets found, each numbered in its placeholder

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
        self._learn_at(text, *found)

    def _learn_scanning(self, text: str) -> None:
        """``learn`` for text whose lowered form has another length: anchors found in any case."""
        self._learn_at(text, *_hits(text, _ANCHOR_SCANS_ANY_CASE))

    def _learn_at(self, text: str, hits: Hits, at_word: Hits) -> None:
        """Try each kind's regex where its anchors occur, and each secret word's assignment."""
        for kind in [KINDS[i] for i in sorted({i for a in hits for i in _KINDS_BY_ANCHOR[a]})]:
            for match in _anchored_matches(kind, text, hits):
                secret = match.group(kind.group)
                if kind.plausible is None or kind.plausible(secret):
                    self._learn(secret, kind.name)
                    self._learn_glued(text, match.start(kind.group), secret)
                    if (
                        kind.name == "PRIVATE_KEY"
                    ):  # an answer may quote one line of it (PEM, PuTTY)
                        self._learn_lines(secret)
        for word in SECRET_WORDS:  # in this order, as placeholders are numbered
            for at in at_word.get(word, ()):
                if word_ends(text, at, word):
                    secret = assigned_secret(text, at, at + len(word))
                    if secret is not None:
                        self._learn(secret, "PASSWORD")

    def apply(self, text: str) -> str:
        """``text`` with the secrets learnt so far replaced, longest first.

        A short secret is replaced only where it stands alone: ``user:pass@`` redacts "pass",
        not the "pass" of every "password" in the example.
        """
        for secret in sorted(self.secrets, key=len, reverse=True):
            if secret not in text:
                continue
            placeholder = self.secrets[secret]
            if len(secret) < _SHORT and (_WORD_CHAR.match(secret) or _WORD_CHAR.match(secret[-1])):
                alone = rf"(?<![A-Za-z0-9_]){re.escape(secret)}(?![A-Za-z0-9_])"
                text = re.sub(alone, placeholder, text)  # "REDACTED_KIND_n": no escapes
            else:
                text = text.replace(secret, placeholder)
        return text

    def _learn(self, secret: str, kind: str) -> None:
        if secret and secret not in self.secrets:
            self.found += 1
            self.secrets[secret] = f"REDACTED_{kind}_{self.found}"

    def _learn_glued(self, text: str, at: int, secret: str) -> None:
        """A short secret glued to its flag (``mysql -pS3cret``), under the same placeholder.

        ``apply`` replaces a short secret only where it stands alone, which it does not here.
        """
        if len(secret) >= _SHORT or at == 0 or not _WORD_CHAR.match(text[at - 1]):
            return
        start = at
        while start > 0 and text[start - 1].isalnum():
            start -= 1
        while start > 0 and text[start - 1] == "-":
            start -= 1
        flag = text[start:at]
        self.secrets.setdefault(flag + secret, flag + self.secrets[secret])

    def _learn_lines(self, block: str) -> None:
        """Each body line of a secret block, under the block's placeholder."""
        for line in re.split(r"\s+|\\[nr]", block):  # newlines, or escaped in a string
            if len(line) >= 16 and not line.startswith("-----"):
                self.secrets.setdefault(line, self.secrets[block])

    @property
    def count(self) -> int:
        """How many secrets were found (a block's lines are not counted on their own)."""
        return self.found


# Outside ASCII, only these lower to ASCII letters (the Kelvin sign to "k"; "İ" to "i" and a
# combining dot, so the lowered text is longer). Other text has the same anchors lowered as
# UTF-8 bytes, where ``bytes.lower`` touches only ASCII letters.
_LOWERS_TO_ASCII = ("\u212a", "\u0130")
_ANCHOR_SCANS_BYTES = [re.compile(scan.pattern.encode("ascii")) for scan in _ANCHOR_SCANS]
_ANCHOR_NAMES = {anchor.encode("ascii"): anchor for anchor in _anchors()}
_KINDS_BY_ANCHOR: dict[str, list[int]] = {anchor: [] for anchor in _anchors()}
for _i, _kind in enumerate(KINDS):
    for _anchor, _ in _kind.anchors:
        _KINDS_BY_ANCHOR[_anchor].append(_i)
# (anchor, its offset in the words, the words holding it there, as text and as bytes)
_WORDS_BY_ANCHOR = [
    (anchor, at, words, [w.encode("ascii") for w in words])
    for anchor, at in WORD_ANCHORS
    for words in [[w for w in SECRET_WORDS if w[at : at + len(anchor)] == anchor]]
]

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
            offsets = {at for found in (*hits.values(), *at_word.values()) for at in found}
            chars = _char_offsets(data, offsets)
            return (
                {anchor: [chars[at] for at in found] for anchor, found in hits.items()},
                {word: [chars[at] for at in found] for word, found in at_word.items()},
            )
    lowered = text.lower()
    if len(lowered) != len(text):
        return None
    return _hits(lowered, _ANCHOR_SCANS)


def _hits(lowered: str | bytes, scans: list[re.Pattern[Any]]) -> tuple[Hits, Hits]:
    """Offsets in ``lowered`` (text or its bytes) of every anchor and every secret word.

    With scans matching in any case, ``lowered`` may be the text itself: what they find is
    lowered here.
    """
    as_bytes = isinstance(lowered, bytes)
    hits: Hits = {}
    for scan in scans:
        found = scan.search(lowered)
        while found is not None:
            anchor = _ANCHOR_NAMES[found.group()] if as_bytes else found.group().lower()
            if anchor in hits:
                hits[anchor].append(found.start())
            else:
                hits[anchor] = [found.start()]
            found = scan.search(lowered, found.start() + 1)
    at_word: Hits = {}
    for anchor, offset, words, words_bytes in _WORDS_BY_ANCHOR:
        for at in hits.get(anchor, ()):
            start = at - offset
            if start < 0:
                continue
            for word, word_bytes in zip(words, words_bytes, strict=True):
                if isinstance(lowered, bytes):
                    starts = lowered.startswith(word_bytes, start)
                else:
                    seen = lowered[start : start + len(word)]
                    starts = seen.isascii() and seen.lower() == word
                if starts:
                    at_word.setdefault(word, []).append(start)
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


def _anchored_matches(kind: Kind, text: str, hits: Hits) -> Iterator[re.Match[str]]:
    """What ``kind.pattern.finditer(text)`` yields, trying it only where an anchor occurs.

    ``hits``: where each anchor occurs in the lowered text (of the same length as ``text``).
    """
    starts: list[int] = []
    if kind.name == "URL_PASSWORD":
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
        for anchor, offset in kind.anchors:
            starts.extend(at - offset for at in hits.get(anchor, ()) if at >= offset)
        if len(kind.anchors) > 1:
            starts.sort()
    end = 0
    for start in starts:
        if start < end:
            continue  # finditer's matches do not overlap
        match = kind.pattern.match(text, start)
        if match is not None:
            yield match
            end = match.end()
