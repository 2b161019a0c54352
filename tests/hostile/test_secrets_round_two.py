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


HEX = "0123456789abcdef"
PUTTY_PRIVATE = "AAAAIFl3dGhpcy1pcy1ub3QtYS1yZWFsLWtleS1idXQtbG9va3MtbGlrZS1vbmU="
PUTTY_KEY = (
    "PuTTY-User-Key-File-3: ssh-ed25519\nEncryption: none\nComment: deploy@ci\n"
    "Public-Lines: 2\nAAAAC3NzaC1lZDI1NTE5AAAAIGq1bW9ja2tleWZvcnRlc3RzMTIzNDU2Nzg5\n"
    f"MDEyMzQ1Njc4OWFi\nPrivate-Lines: 1\n{PUTTY_PRIVATE}\n"
    "Private-MAC: 5e2b9c0d1f3a4b6c7d8e9f00112233445566778899aabbccddeeff0011223344\n"
)
ATLASSIAN = "ATATT3xFfGF0" + "T4nq8Yk2Lm-Wq_Zr5" * 10 + "=A1B2C3D4"


@pytest.mark.parametrize(
    ("kind", "code", "secret"),
    [
        # the 12 kinds the adversarial run leaked (issue 24 item 16)
        ("postman", f'key = "PMAK-{"a1b2" * 6}-{"c3d4e5" * 5}f6a7"', f"PMAK-{'a1b2' * 6}"),
        ("putty key", PUTTY_KEY, PUTTY_PRIVATE),
        ("curl -u", "curl -u deploy:S3cretPw9 https://api.example.com/v1", "S3cretPw9"),
        ("curl --user", "curl -sS --user 'deploy:S3cretPw9' $URL", "S3cretPw9"),
        ("mysql -p", "mysql -h db -uroot -pS3cretPw9 app < dump.sql", "S3cretPw9"),
        ("mysqldump --password=", "mysqldump --password=S3cretPw9 app", "S3cretPw9"),
        (".pgpass line", "db.internal:5432:app:appuser:S3cretPw9", "S3cretPw9"),
        (".pgpass wildcard", "*:*:*:postgres:S3cretPw9", "S3cretPw9"),
        ("vault", f"VAULT_ADDR=http://v:8200 vault login hvs.{'CAESIJ4kPq' * 9}", "CAESIJ4kPq"),
        ("grafana", f"grafana.connect('glsa_{'Ab12' * 8}_{'1a2b3c4d'}')", "glsa_Ab12"),
        (
            "age",
            "AGE-SECRET-KEY-1" + "QPZRY9X8GF2TVDW0S3JN54KHCE6MUA7L" + "QPZRY9X8GF" * 2 + "QPZRY9",
            "AGE-SECRET-KEY-1QPZ",
        ),
        ("atlassian", f'jira = Jira(url, "{ATLASSIAN}")', ATLASSIAN[:40]),
        ("new relic", 'newrelic.query("NRAK-7JQ2X4WZ8B1C5D6E9F0G3H4J5K6")', "NRAK-7JQ"),
        ("sshpass", "sshpass -p 'S3cretPw9' ssh deploy@host uptime", "S3cretPw9"),
        (".netrc", "machine api.heroku.com login me@x.io password S3cretPw9", "S3cretPw9"),
        (".netrc lines", "machine github.com\n  login deploy\n  password S3cretPw9\n", "S3cretPw9"),
        # tokens passed as plain arguments, with no secret-ish name beside them
        ("shopify", f'shopify.Session("shop", "2024-01", "shpat_{HEX * 2}")', "shpat_"),
        ("doppler", f'DopplerSDK("dp.pt.{"Xy7Zq2Lm9Kp" * 4}Abc")', "dp.pt."),
        ("databricks", f'WorkspaceClient(host=h, config=c("dapi{HEX * 2}"))', "dapi0123"),
        ("google oauth", 'flow(client_id, "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")', "GOCSPX-"),
        ("linear", f'LinearClient("lin_api_{"Ab3dE5gH7j" * 4}")', "lin_api_Ab3"),
    ],
)
def test_more_secret_kinds_are_redacted(kind: str, code: str, secret: str) -> None:
    redacted = Redactor().redact(code)
    assert secret not in redacted and "REDACTED_" in redacted, kind


def test_a_word_a_message_calls_a_password_is_left_alone_unless_it_looks_like_one() -> None:
    prompt = 'ATEXT = "dot-atom"  # RFC 5322 local part\nif kind == "dot-atom":\n'
    message = "Possible hardcoded password: 'dot-atom'"
    assert Redactor().redact(prompt + message) == prompt + message
    real = "Possible hardcoded password: 'S3cret-atom9'"
    assert "S3cret-atom9" not in Redactor().redact(f'p = "S3cret-atom9"\n{real}')


@pytest.mark.parametrize(
    "code",
    [
        'self.speaker_token = "|SPEAKER|"',
        'prefix_token="▁<PRE>"',
        'image_token = "]<]image[>["',
    ],
)
def test_a_special_token_is_not_a_secret(code: str) -> None:
    assert Redactor().redact(code) == code
