"""Secrets the first rounds missed (issue 24 item 16) and placeholders that hid real secrets.

A value holding ``...``, ``***`` or ``xxxx`` was skipped as a placeholder, so a password such as
``A000...0`` reached the dataset; one starting with ``!``, ``#``, ``.``, ``%`` or ``&`` too.
"""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from ai_lsp_tune.dataset.redact import Redactor

ALNUM = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789"


@pytest.mark.parametrize(
    "value",
    [
        *("A000...0", "hunter...2", "Axxxxxx1", "Pa55XXXXword", "Ab***c1x9", "S3cr…t2024"),
        *("!Secr3t99", "#Secr3t99", ".Secr3t99", "%Secr3t99", "*Secr3t99"),
    ],
)
@pytest.mark.parametrize(
    "line", ['db_password = "{v}"', "DB_PASSWORD={v}", "password: '{v}'", "const apiKey = `{v}`;"]
)
def test_a_password_that_looks_partly_masked_is_still_redacted(line: str, value: str) -> None:
    redacted = Redactor().redact(line.format(v=value))
    assert value not in redacted and "REDACTED_PASSWORD_1" in redacted


@pytest.mark.parametrize(
    "code",
    [
        'api_key = "sk-..."',
        'OPENAI_API_KEY="sk-proj-..."',
        'token = "ghp_xxxxxxxxxxxxxxxxxxxx"',
        'password = "********"',
        "PASSWORD=xxxxxxxx",
        "DB_PASSWORD=XXXXXXXXXXXX",
        'password = "…"',
        "password: <your-password>",
        'password = "${DB_PASSWORD}"',
        "password: !vault |",
        "password: *db_password",
        'password = "%(password)s"',
        'token = "{token}"',
        'password = "{{ vault_db_password }}"',
        "secret = \"#{ENV['SECRET']}\"",
        "api_key = $API_KEY",
        'password = "[REDACTED]"',
        'auth_token = "abc...xyz"',
        "secret: '•••••••'",
    ],
)
def test_an_obvious_placeholder_in_docs_is_left_alone(code: str) -> None:
    assert Redactor().redact(code) == code


MASKS = st.sampled_from(["...", "***", "xxxx", "XXXX", "…", "•••"])


@given(
    st.text(alphabet=ALNUM[:52], min_size=1, max_size=1),
    st.text(alphabet=ALNUM + "-_.!%+~^@#*", min_size=3, max_size=12),
    MASKS,
    st.text(alphabet=ALNUM + "-_.!%+~^@#*", min_size=0, max_size=12),
    st.text(alphabet="0123456789", min_size=1, max_size=1),
)
def test_no_password_with_a_mask_run_in_it_is_skipped(
    first: str, before: str, mask: str, after: str, digit: str
) -> None:
    value = first + before + mask + after + digit
    redacted = Redactor().redact(f'db_password = "{value}"')
    assert value not in redacted
