"""What a secret looks like: well-known token formats, and values assigned to secret-ish names.

The token formats are adapted from gitleaks' default rules (``config/gitleaks.toml``, MIT
License, Copyright (c) 2019 Zachary Rice) and Yelp's detect-secrets plugins (Apache License
2.0); the names secrets are assigned to follow detect-secrets' ``keyword`` plugin. Each rule
is rewritten to hold a literal (its anchor) at a fixed offset, so that ``redact`` tries it only
where that literal occurs; anchors share first letters (``ey-`` of ``key-`` with ``eyJ``), as
each first letter costs ``redact`` one more pass over the text. Names in an assignment
(``DISCORD_TOKEN=``, ``HEROKU_API_KEY=``) are left to the secret words below.
"""

from __future__ import annotations

import base64
import binascii
import re
from collections.abc import Callable
from dataclasses import dataclass


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
    # scheme://user:password@host, the user possibly empty (redis://:password@host)
    Kind(
        "URL_PASSWORD",
        (("://", 0),),  # the scheme before it is walked back by ``redact``
        re.compile(r"\b[A-Za-z][A-Za-z0-9+.-]*://[^:/\s@'\"]*:([^@/\s'\"]{3,})@"),
        1,
        lambda value: url_password(value),  # defined below, with the placeholders
    ),
)

# Names a secret is assigned to (lowered), after detect-secrets' keyword plugin: a name holds
# one of them, followed by the end of the name or a new word (``dbPassword``, ``DB_PASSWORD``,
# ``PGPASSWORD``, ``password2``) but not by more of the same word (``tokenizer``, ``author``).
SECRET_WORDS = (
    *("password", "passwd", "passphrase", "pass", "pwd", "secret", "token", "auth"),
    *("api_key", "apikey", "api-key", "access_key", "accesskey", "access-key"),
    *("private_key", "privatekey", "private-key", "priv_key", "privkey"),
    *("account_key", "accountkey", "credentials", "credential"),
)
# Where the secret words are found, as anchors: (literal, its offset in the words holding it).
# Fewer, rarer literals than the words themselves ("api_k", not "api"); "edential" shares the
# pass for "e" with other anchors.
WORD_ANCHORS = (
    *(("pass", 0), ("pwd", 0), ("secret", 0), ("token", 0), ("auth", 0), ("access", 0)),
    *(("api_k", 0), ("apik", 0), ("api-k", 0), ("priv", 0), ("account", 0), ("edential", 2)),
)
assert all(sum(w[at : at + len(a)] == a for a, at in WORD_ANCHORS) == 1 for w in SECRET_WORDS)

# What follows a secret word in an assignment, in the syntaxes code and configuration use:
# `.env`/shell (`X=v`, `export X=v`), YAML (`x: v`), TOML, JSON keys, Python, JS/TS, Go
# (`:=`, `var x string =`), Rust (`let x: &str =`), Lua (`[[v]]`), PHP/Ruby (`=>`),
# connection strings (`Password=v;`), comparisons (`x == "v"`).
ASSIGNED = re.compile(
    r"""
    (?P<suffix>[\w.-]*)                 # the rest of the name: _KEY, Field, .value
    [\\'"`\]]{0,3}                      # a quoted key's or an index's closing quote
    (?:                                 # a type: Python, TS, Rust; Go's `var x string =`
        [ \t]*:[ \t]*&?(?:'static[ \t]+)?[A-Za-z_][\w:.]*
        (?:<[^<>=\n]{0,40}>|\[[^\[\]=\n]{0,40}\])?\??[ \t]*(?==[^=>])
      | [ \t]+[a-z][\w.\[\]*]*[ \t]*(?==[^=>])
    )?
    (?P<before>[ \t]*)
    (?P<op>===|!==|==|!=|:=|=>|\?=|\|\|=|=|:)
    (?P<after>[ \t]*)
    (?:(?:String::from|Some|SecretStr|Secret|\[\]byte|str|bytes)\()?
    (?:
        [rbuRBU]{0,2}@?\\?(?P<q>["'`])(?P<quoted>(?:(?!(?P=q))[^\s\\])+)\\?(?P=q)
      | \[\[(?P<long>[^\s\]]+)\]\]
      | (?P<bare>[^\s'"`,;&()\[\]{}<>\\]+)(?=[\s;&]|$)
    )
    """,
    re.VERBOSE,
)
# A name ending in one of these holds something about a secret, not the secret itself.
_NOT_SECRET_SUFFIXES = frozenset(
    re.findall(
        r"\w+",
        """field fields name names type types kind url uri urls endpoint path file filename dir env
    var header method length len min max format id ids label prompt placeholder pattern regex
    policy expires expiry expiration ttl timeout count limit size store manager provider
    class mode hint help message msg error title column col scope scopes prefix mask required
    enabled enable disabled valid validator validation rules input widget form reset confirm
    confirmation strength version index idx ref source backend handler callback service
    generator fn func function view page template route link text flag flags check verify
    verifier lookup query param params arg args option options opts cache location
        model models user users username login email domain host hostname
        port server realm issuer audience algorithm algorithms alg counter counters usage budget
        info markup style color colors response stats metrics encoding encoder decoder parser config
        configs context""",
    )
)
# Values that name or describe a secret rather than being one (lowered).
_NOT_SECRET_VALUES = frozenset(
    re.findall(
        r"\w+",
        """password passwd secret token changeme example placeholder redacted dummy undefined
    required optional disabled enabled string boolean default inherit none null fake test your
    sample mock demo origin""",
    )
)
_WORDS_IN_NAME = re.compile(r"[A-Z]?[a-z]+|[A-Z]+(?![a-z])|[0-9]+")
_ENV_NAME = re.compile(r"[A-Z][A-Z0-9]*(?:_[A-Z0-9]+)+")
# The whole value stands for another: ${X}, $X, <your-key>, %(x)s, %X%, {x}, !vault, *alias,
# [MASK], #cccccc; or it is interpolated ({{ x }}, ${x}, #{x}, %{x}, $(cmd)).
_PLACEHOLDER = re.compile(
    r"""\$[A-Za-z_]\w*|<[^<>]+>|%\(\w+\)[sd]|%\w+%|\{[\w.]*\}|!{1,2}[A-Za-z]+|[*&][A-Za-z_][A-Za-z_.-]*
    |\[[^\[\]]*\]|\#[0-9A-Fa-f]{3,8}|.*(?:\$\{|\{\{|\#\{|%\{|\$\().*""",
    re.VERBOSE,
)
# Masking runs: "sk-...", "ghp_xxxx", "********". A value with one is a placeholder only if what
# is left has no digit: "A000...0" and "Axxxxxx1" are passwords.
_MASK_RUNS = re.compile(r"\.{3,}|…+|\*{3,}|x{4,}|X{4,}|•{3,}")
_URL_PLACEHOLDER = re.compile(r"[$<{]|%\(|.*(?:\$\{|\{\{)")
_PATH = re.compile(r"\.{0,2}/|~/")
_FILE_NAME = re.compile(  # key.pem, service-account.json: a name of letters, an extension
    r"[A-Za-z_-]+(?:[./][A-Za-z_-]+)*\.(?:json|pem|key|txt|ya?ml|env|p12|pfx|crt|cer|der|gpg"
    r"|asc|ini|cfg|conf|toml)"
)
_LETTERS = re.compile(r"[A-Za-z_.$-]+")
_LOWER_WORDS = re.compile(r"[a-z0-9_.-]+")
_SEPARATED = re.compile(r"[_.-]")
_SNAKE = re.compile(r"_*[a-z]+(?:_+[a-z]+)*_*")  # next_tok, __start__: an identifier
_CAMEL = re.compile(r"[a-z]+(?:[A-Z][a-z]+)+|(?:[A-Z][a-z]*)+")  # serverAuth, IAmSensitive
_DOTTED = re.compile(r"[A-Za-z_$][\w$]*(?:(?:\??\.|::|->)[A-Za-z_$][\w$]*)+")  # form.password
_CALL = re.compile(r"[\w.$:]+\(.*")  # `get_token()` quoted in a comment
_IDENTIFIER = re.compile(r"[A-Za-z_]\w*")


def word_ends(text: str, at: int, word: str) -> bool:
    """Whether the secret word at ``at`` ends a word of the name (``DB_PASSWORD``, ``dbPass``)."""
    end = at + len(word)
    if word == "pass" and at > 0 and text[at - 1].isalpha() and not text[at].isupper():
        return False  # bypass, compass; but smtpPass
    if end >= len(text) or not text[end].isalpha():
        return True
    return text[end - 1].islower() and text[end].isupper()  # camelCase: passwordHash


def assigned_secret(text: str, at: int) -> str | None:
    """The secret assigned to the name whose secret word ends at ``at``, if it looks like one."""
    found = ASSIGNED.match(text, at)
    if found is None:
        return None
    words = _WORDS_IN_NAME.findall(found["suffix"])
    if words and words[-1].lower() in _NOT_SECRET_SUFFIXES:
        return None
    op, bare = found["op"], found["bare"]
    value = bare or found["quoted"] or found["long"]
    if bare is not None:
        if op not in ("=", ":"):
            return None  # `x := y`, `x == y`: code comparing or assigning a variable
        if not (any(c.isdigit() for c in bare) or not _LETTERS.fullmatch(bare)):
            return None  # an identifier, a word, a dotted name: code, not a secret
        if op == ":" and not found["after"]:
            return None  # `a:b`: not YAML's `key: value`
        spaced = op == "=" and (found["before"] or found["after"])  # not X=v, Password=v;
        if spaced and (_IDENTIFIER.fullmatch(bare) or _DOTTED.fullmatch(bare)):
            return None  # `password = pw2`, `= cfg.db2`: code (an INI file's such value is missed)
    return value if _plausible(value) else None


def _placeholder(value: str) -> bool:
    """A value standing for a secret in docs or templates, never one that may be the secret."""
    if _PLACEHOLDER.fullmatch(value):
        return True
    rest = _MASK_RUNS.sub("", value)
    return rest != value and not any(c.isdigit() for c in rest)


def _plausible(value: str) -> bool:
    if len(value) < 6 or _placeholder(value) or _CALL.fullmatch(value):
        return False
    if _PATH.match(value) and (value.islower() or not any(c.isdigit() for c in value)):
        return False  # /etc/ssl/private/key.pem; but base64 may start with "/"
    if "://" in value or _FILE_NAME.fullmatch(value):
        return False
    if _ENV_NAME.fullmatch(value) and (
        not any(c.isdigit() for c in value) or re.search(r"KEY|TOKEN|SECRET|PASS|AUTH", value)
    ):
        return False  # the name of a variable holding it: `password = env("DB_PASSWORD")`
    has_digit = any(c.isdigit() for c in value)
    if value.isdigit():
        return len(value) >= 8  # a port, a count, a length
    if _LOWER_WORDS.fullmatch(value) and any(
        word in _SEPARATED.split(value) if has_digit else word in value
        for words in ((SECRET_WORDS,) if has_digit else (SECRET_WORDS, _NOT_SECRET_VALUES))
        for word in words
    ):
        return False  # fake_token, test-api-key, dummy_key_2: names, examples
    if _SNAKE.fullmatch(value) or (_DOTTED.fullmatch(value) and not has_digit):
        return False  # next_tok, context.eval_ctx: an identifier, an attribute
    if value.isalpha():
        lowered = value.lower()
        if value.islower() or len(value) < 8 or _CAMEL.fullmatch(value):
            return False  # estimate, bearer, serverAuth: a word, an enum's value
        return not any(word in lowered for word in _NOT_SECRET_VALUES)
    return True


def url_password(value: str) -> bool:
    """A URL's password, not a placeholder (``user:password@``, ``:TOKEN@``, ``:${PW}@``)."""
    lowered = value.lower()
    if lowered in SECRET_WORDS or lowered in _NOT_SECRET_VALUES or _ENV_NAME.fullmatch(value):
        return False
    if value.isalpha() and value.islower() and any(w in value for w in SECRET_WORDS):
        return False  # mypassword
    return not (_URL_PLACEHOLDER.match(value) or (value.isalpha() and value.isupper()))
