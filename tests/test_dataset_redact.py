"""Secrets in analysed code are replaced by placeholders; ordinary code is left alone."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from ai_lsp_tune.dataset.redact import Redactor

PEM = "-----BEGIN RSA PRIVATE KEY-----\nMIIEowIBAAKCAQEA7\nabc\n-----END RSA PRIVATE KEY-----"


@pytest.mark.parametrize(
    ("code", "secret"),
    [
        (f'KEY = """{PEM}"""', PEM),
        ('token = "ghp_' + "a" * 36 + '"', "ghp_" + "a" * 36),
        ('client = OpenAI(api_key="sk-proj-' + "Ab1" * 10 + '")', "sk-proj-" + "Ab1" * 10),
        ('aws_secret_access_key = "' + "w" * 40 + '"', "w" * 40),
        ('DB = "postgres://app:pa55word@db:5432/x"', "pa55word"),
        ("Authorization: eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxMjMifQ.sflKxwRJSMeKKF2QT4f", "eyJhbG"),
        ('SLACK = "xoxb-1234567890-abcdef"', "xoxb-1234567890-abcdef"),
        ('config = {"password": "correct-horse"}', "correct-horse"),
        ("api_key: 'AIza" + "B" * 35 + "'", "AIza" + "B" * 35),
    ],
)
def test_secret_is_redacted(code: str, secret: str) -> None:
    redacted = Redactor().redact(code)
    assert secret not in redacted
    assert "REDACTED_" in redacted


@pytest.mark.parametrize(
    "code",
    [
        'password = os.environ["DB_PASSWORD"]',
        'password = ""',
        'token = "${TOKEN}"',
        "def check_password(password: str) -> bool:",
        'secret_name = "abc"',
        "key = cache_key(user)",
    ],
)
def test_ordinary_code_is_left_alone(code: str) -> None:
    assert Redactor().redact(code) == code


def test_same_secret_same_placeholder_across_texts() -> None:
    redactor = Redactor()
    user = 'db_password = "hunter2-hunter2"\nlogin(db_password)'
    prompt = redactor.redact(user)
    snippet = redactor.redact("hunter2-hunter2")  # an answer quoting only the value
    assert snippet in prompt and snippet.startswith("REDACTED_PASSWORD_")
    assert redactor.count == 1


# Secrets as code holds them, each with the value that must not survive redaction.
PLANTED = [
    ('token = "ghp_' + "a" * 36 + '"', "ghp_" + "a" * 36),
    ('aws_secret_access_key = "' + "w" * 40 + '"', "w" * 40),
    ("AKIA" + "B" * 16, "AKIA" + "B" * 16),
    ('DB = "postgres://app:pa55word@db:5432/x"', "pa55word"),
    ('config = {"Password": "correct-horse"}', "correct-horse"),
    ("apiKey: 'AIza" + "B" * 35 + "'", "AIza" + "B" * 35),
    (PEM, PEM),
    # found by anchors inside them: "edential" of credentials, "ey-", ":a", "-us", "://"
    ("DB_PASSWORD=hunter2xyz", "hunter2xyz"),
    ("credentials: 'c0rrect-h0rse'", "c0rrect-h0rse"),
    ("key-" + "0123456789abcdef" * 2, "key-" + "0123456789abcdef" * 2),
    ("110201543:AAHdqTcvCH1vGWJxfSeofSAs0K5PALDsaw", "AAHdqTcvCH1vGWJxfSeofSAs0K5PALDsaw"),
    ("fedcba9876543210" * 2 + "-us6", "fedcba9876543210" * 2 + "-us6"),
    ("https://hooks.slack.com/services/T0123/B0123/" + "x1" * 12, "x1" * 12),
]
# Text around them: ASCII code, accents, box drawing and emoji (stored 2 or 4 bytes per
# character), the Kelvin sign (lowers to "k") and the dotted I (lowers to two characters).
FILLER = st.text(
    alphabet=st.sampled_from([*"abc XYZ_=:'\"\n(){}", "é", "●", "😀", "\u212a", "İ"]),
    max_size=30,
)


@given(st.lists(st.tuples(FILLER, st.sampled_from(PLANTED)), min_size=1, max_size=6), FILLER)
def test_secrets_are_found_in_any_text_around_them(
    parts: list[tuple[str, tuple[str, str]]], tail: str
) -> None:
    code = "".join(f"{filler}\n{secret}\n" for filler, (secret, _) in parts) + tail
    redactor = Redactor()
    redacted = redactor.redact(code)
    for _, (_, value) in parts:
        assert value not in redacted
    # The fast search (anchors found in lowered bytes) agrees with the regexes scanning it all.
    scanning = Redactor()
    scanning._learn_scanning(code)
    assert set(redactor.secrets) == set(scanning.secrets)
