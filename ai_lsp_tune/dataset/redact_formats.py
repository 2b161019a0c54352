"""What a secret looks like by its format: well-known tokens, key blocks, credential lines.

The token formats are adapted from gitleaks' default rules (``config/gitleaks.toml``, MIT
License, Copyright (c) 2019 Zachary Rice) and Yelp's detect-secrets plugins (Apache License
2.0). Each rule is rewritten to hold a literal (its anchor) at a fixed offset, so that
``redact`` tries it only where that literal occurs; anchors share first letters (``ey-`` of
``key-`` with ``eyJ``), as each first letter costs ``redact`` one more pass over the text.
"""

from __future__ import annotations

import base64
import binascii
import re
from collections.abc import Callable
from dataclasses import dataclass

from ai_lsp_tune.dataset.redact_rules import url_password


@dataclass(frozen=True)
class Kind:
    """One token format: where a match can start, the pattern, the group holding the secret."""

    name: str
    # (lowered literal, its offset from the match's start): every match holds one of them there
    anchors: tuple[tuple[str, int], ...]
    pattern: re.Pattern[str]
    group: int = 0
    plausible: Callable[[str], bool] | None = None  # a last look at the secret found


def _basic_credentials(value: str) -> bool:
    """Whether ``value`` is base64 of printable ``user:password`` (HTTP Basic auth)."""
    try:
        decoded = base64.b64decode(value + "=" * (-len(value) % 4), validate=True)
    except (binascii.Error, ValueError):
        return False
    return b":" in decoded and all(32 <= byte < 127 for byte in decoded)


def _opaque_token(value: str) -> bool:
    """A bearer token, not a word of prose ("Bearer authentication")."""
    return len(value) >= 10 and any(c.isdigit() for c in value)


def _credential(value: str) -> bool:
    """A password on a command line or in a credential file, not a word or a variable."""
    return len(value) >= 4 and not value.isdigit() and url_password(value)


_END = r"(?![\w-])"  # a token ends where no token character follows
KINDS: tuple[Kind, ...] = (
    Kind(
        "PRIVATE_KEY",
        (("-----begin", 0),),
        re.compile(
            r"-----BEGIN[ A-Z0-9_-]{0,100}PRIVATE KEY(?: BLOCK)?-----"
            r"(?:[A-Za-z0-9+/=\s:,.-]|\\[nr])*?"  # base64, headers, newlines escaped in a string
            r"-----END[ A-Z0-9_-]{0,100}PRIVATE KEY(?: BLOCK)?-----",
        ),
    ),
    Kind(
        "AWS_ACCESS_KEY",
        (("akia", 0), ("asia", 0), ("abia", 0), ("acca", 0), ("a3t", 0)),
        re.compile(r"\b(?:A3T[A-Z0-9]|AKIA|ASIA|ABIA|ACCA)[A-Z0-9]{16}\b"),
    ),
    Kind(
        "AWS_SECRET_KEY",
        (("aws", 0),),
        re.compile(
            r"(?i)aws_?secret_?(?:access_?)?key"
            r"(?:[\s'\"`:=&\[\]()]|\b(?:str|string|String)\b|'static\b)*?"  # `: &str = "`
            r"([A-Za-z0-9/+]{40})(?![A-Za-z0-9/+=])"
        ),
        1,
    ),
    Kind(
        "GITHUB_TOKEN",
        (("gh", 0), ("github_pat_", 0)),
        re.compile(r"\b(?:gh[pousr]_[A-Za-z0-9]{36,255}|github_pat_\w{22,255})"),
    ),
    Kind(
        "GITLAB_TOKEN",
        tuple(
            (f"gl{kind}-", 0)
            for kind in ("pat", "dt", "rt", "ptt", "ft", "soat", "cbt", "imt", "agent", "oas")
        ),
        re.compile(r"\bgl(?:pat|dt|rt|ptt|ft|soat|cbt|imt|agent|oas)-[\w.-]{20,}"),
    ),
    # OpenAI (sk-, sk-proj-, sk-svcacct-), Anthropic (sk-ant-api03-)
    Kind("API_KEY", (("sk-", 0),), re.compile(r"\bsk-[A-Za-z0-9_-]{20,}")),
    Kind(
        "TWILIO_KEY",
        tuple((f"sk{digit}", 0) for digit in "0123456789abcdef"),
        re.compile(r"\bSK[0-9a-fA-F]{32}\b"),
    ),
    Kind(
        "SLACK_TOKEN", (("xox", 0), ("xapp-", 0)), re.compile(r"\bx(?:ox[abposre]|app)-[\w-]{10,}")
    ),
    Kind(
        "SLACK_WEBHOOK",
        (("://", 0),),
        re.compile(r"://hooks\.slack\.com/(?:services|workflows|triggers)/([A-Za-z0-9+/_-]{20,})"),
        1,  # the path: an answer may quote it without the host
    ),
    Kind(
        "DISCORD_WEBHOOK",
        (("://", 0),),
        re.compile(
            r"(?i)://(?:ptb\.|canary\.)?discord(?:app)?\.com/api/webhooks/[0-9]+/([\w-]{20,})"
        ),
        1,
    ),
    Kind("GOOGLE_API_KEY", (("aiza", 0),), re.compile(r"\bAIza[\w-]{35}")),
    Kind(
        "STRIPE_KEY",
        (("_live_", 2), ("_test_", 2), ("_prod_", 2)),
        re.compile(r"\b(?:sk|rk|pk)_(?:live|test|prod)_[0-9A-Za-z]{10,}"),
    ),
    Kind("HF_TOKEN", (("hf_", 0),), re.compile(r"\bhf_[A-Za-z0-9]{30,}")),
    Kind(
        "JWT",
        (("eyj", 0),),
        re.compile(r"\beyJ[A-Za-z0-9_-]{8,}\.eyJ[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]{8,}"),
    ),
    Kind("SENDGRID_KEY", (("sg.", 0),), re.compile(r"\bSG\.[\w-]{16,}\.[\w-]{16,}")),
    Kind("NPM_TOKEN", (("pm_", 1),), re.compile(r"\bnpm_[A-Za-z0-9]{36}" + _END)),
    Kind("PYPI_TOKEN", (("pypi-", 0),), re.compile(r"\bpypi-AgE[\w-]{50,}")),
    Kind("HEROKU_KEY", (("hrku-", 0),), re.compile(r"\bHRKU-AA[\w-]{58}")),
    # a bot's id (not secret), then its secret
    Kind("TELEGRAM_TOKEN", ((":a", 0),), re.compile(r"(?<=[0-9]{5}):(A[\w-]{32,40})" + _END), 1),
    Kind("DIGITALOCEAN_TOKEN", (("_v1_", 3),), re.compile(r"\bdo[opr]_v1_[a-f0-9]{64}\b")),
    Kind("MAILGUN_KEY", (("ey-", 1),), re.compile(r"\bkey-[0-9a-f]{32}\b")),
    Kind("MAILCHIMP_KEY", (("-us", 32),), re.compile(r"\b[0-9a-f]{32}-us[0-9]{1,2}\b")),
    Kind("SQUARE_TOKEN", (("sq0", 0),), re.compile(r"\bsq0(?:atp|csp)-[\w-]{22,}")),
    Kind(
        "AZURE_STORAGE_KEY",
        (("account", 0),),
        re.compile(r"(?i)AccountKey=([A-Za-z0-9+/]{20,}={0,2})"),
        1,
    ),
    Kind(
        "AZURE_CLIENT_SECRET",
        (("q~", 4),),
        re.compile(r"(?<![\w~.-])[\w~.]{3}[0-9]Q~[\w~.-]{31,34}" + _END),
    ),
    Kind(
        "BEARER_TOKEN",
        (("bearer", 0),),
        re.compile(r"(?i)\bbearer[ \t]+([A-Za-z0-9._~+/-]+=*)(?![\w~+/=-])"),
        1,
        _opaque_token,
    ),
    Kind(
        "BASIC_AUTH",
        (("basic", 0),),
        re.compile(r"(?i)\bbasic[ \t]+([A-Za-z0-9+/]{8,}={0,2})(?![\w+/=])"),
        1,
        _basic_credentials,
    ),
    # PuTTY's .ppk: the base64 lines after "Private-Lines: N"
    Kind(
        "PRIVATE_KEY",
        (("ate-lines", 4),),
        re.compile(
            r"Private-Lines:[ \t]*[0-9]+[ \t]*(?:\r?\n|\\r?\\n)"
            r"((?:[A-Za-z0-9+/=]{4,}(?:\r?\n|\\r?\\n))*[A-Za-z0-9+/]{4,}={0,2})(?![\w+/=])"
        ),
        1,
    ),
    Kind(
        "AGE_SECRET_KEY",
        (("age-secret-key-1", 0),),
        re.compile(r"AGE-SECRET-KEY-1[QPZRY9X8GF2TVDW0S3JN54KHCE6MUA7L]{58}"),
    ),
    Kind("POSTMAN_KEY", (("pmak-", 0),), re.compile(r"\bPMAK-[a-fA-F0-9]{24}-[a-fA-F0-9]{34}")),
    Kind(
        "VAULT_TOKEN",
        (("hvs.", 0), ("hvb.", 0), ("hvr.", 0)),
        re.compile(r"\bhv[sbr]\.[\w-]{24,}"),
    ),
    Kind(
        "GRAFANA_TOKEN",
        (("glsa_", 0), ("glc_", 0)),
        re.compile(r"\b(?:glsa_[A-Za-z0-9]{32}_[A-Fa-f0-9]{8}|glc_[A-Za-z0-9+/]{32,400}={0,2})"),
    ),
    Kind("ATLASSIAN_TOKEN", (("atatt3", 0),), re.compile(r"\bATATT3[\w=-]{150,}")),
    Kind(
        "NEW_RELIC_KEY",
        tuple((f"nr{kind}-", 0) for kind in ("ak", "aa", "ii", "js")),
        re.compile(r"\bNR(?:AK|AA|II|JS)-[A-Za-z0-9]{19,40}" + _END),
    ),
    Kind(
        "SHOPIFY_TOKEN",
        tuple((f"shp{kind}_", 0) for kind in ("at", "ca", "pa", "ss")),
        re.compile(r"\bshp(?:at|ca|pa|ss)_[a-fA-F0-9]{32}\b"),
    ),
    Kind(
        "DOPPLER_TOKEN",
        (("dp.", 0),),
        re.compile(r"\bdp\.(?:pt|st|sa|ct|scim|audit)\.[\w-]{40,}"),
    ),
    Kind("DATABRICKS_TOKEN", (("dapi", 0),), re.compile(r"\bdapi[a-f0-9]{32}(?:-[0-9])?\b")),
    Kind("GOOGLE_OAUTH_SECRET", (("gocspx-", 0),), re.compile(r"\bGOCSPX-[\w-]{28}" + _END)),
    Kind("LINEAR_KEY", (("lin_api_", 0),), re.compile(r"\blin_api_[A-Za-z0-9]{40}\b")),
    # passwords on a command line: curl -u user:pw, mysql -pPW, sshpass -p PW
    Kind(
        "PASSWORD",
        (("curl", 0),),
        re.compile(
            r"\bcurl\b[^\n]{0,300}?[ \t](?:-u|--user)(?:[ \t]+|=)?(['\"]?)[^:\s'\"]*:([^\s'\"]+)\1"
        ),
        2,
        _credential,
    ),
    Kind(
        "PASSWORD",
        (("mysql", 0), ("mariadb", 0)),
        re.compile(
            r"\b(?:mysql|mariadb)[\w-]*\b[^\n]{0,300}?[ \t]-p(['\"]?)([^\s'\"-][^\s'\"]*)\1"
        ),
        2,
        _credential,
    ),
    Kind(
        "PASSWORD",
        (("sshpass", 0),),
        re.compile(r"\bsshpass\b[^\n]{0,100}?[ \t]-p[ \t]*(['\"]?)([^\s'\"]+)\1"),
        2,
        _credential,
    ),
    # credential files: .netrc (machine h login u password p), .pgpass (host:port:db:user:pw)
    Kind(
        "PASSWORD",
        (("machine", 0),),
        re.compile(
            r"\bmachine[ \t]+\S+\s+(?:(?:account|port)[ \t]+\S+\s+)*login[ \t]+\S+\s+"
            r"(?:account[ \t]+\S+\s+)?password[ \t]+([^\s'\"]+)"
        ),
        1,
        _credential,
    ),
    Kind(
        "PASSWORD",
        ((":543", 0), (":*:", 0)),
        re.compile(r"(?<=[\w.*-]):(?:543[0-9]|\*):[^:\s]+:[^:\s]+:((?:\\:|[^:\s'\"])+)"),
        1,
        _credential,
    ),
    # scheme://user:password@host, the user possibly empty (redis://:password@host)
    Kind(
        "URL_PASSWORD",
        (("://", 0),),  # the scheme before it is walked back by ``redact``
        re.compile(r"\b[A-Za-z][A-Za-z0-9+.-]*://[^:/\s@'\"]*:([^@/\s'\"]{3,})@"),
        1,
        url_password,
    ),
)
