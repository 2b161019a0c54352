"""Secrets in analysed code are replaced by placeholders; ordinary code is left alone."""

from __future__ import annotations

import pytest

from ai_lsp_tune.redact import Redactor

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
