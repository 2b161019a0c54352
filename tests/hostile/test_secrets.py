"""Secrets planted in code of every language never reach a prepared dataset (issue 10, item 3).

Each kind of secret is planted in a document of each language the server analyses, recorded as
the server records an analysis whose answer quotes it (an issue snippet holding the line, one
holding only the secret, a message naming it), and run through ``prepare-dataset``: the value
must be in no output file, and both issues must survive (the snippets still match the code).
"""

from __future__ import annotations

import base64
import json
import re
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from typer.testing import CliRunner

from ai_lsp_tune.cli.app import app
from ai_lsp_tune.dataset.prepare import prepare_dataset
from ai_lsp_tune.dataset.redact import Redactor
from ai_lsp_tune.prompts import SYSTEM_PROMPT, user_prompt
from ai_lsp_tune.traces import genai
from ai_lsp_tune.traces.exporter import OtlpJsonFileSpanExporter

# How each language assigns a value to a name: {UPPER} DB_PASSWORD, {snake} db_password,
# {camel} dbPassword, {Pascal} DbPassword, {v} the value. Each is one line of code.
TEMPLATES: dict[str, tuple[str, ...]] = {
    "python": (
        '{snake} = "{v}"',
        '{UPPER}: str = "{v}"',
        "settings[\"{UPPER}\"] = '{v}'",
        'engine = connect(host="db", {snake}="{v}")',
        'CONFIG = {{"{snake}": "{v}", "debug": False}}',
    ),
    "javascript": (
        'const {camel} = "{v}";',
        "config.{camel} = `{v}`;",
        'module.exports = {{ {camel}: "{v}" }};',
    ),
    "typescript": ("const {camel}: string = '{v}';", 'export const {UPPER} = "{v}" as const;'),
    "go": (
        '{camel} := "{v}"',
        'var {camel} string = "{v}"',
        'cfg := Config{{{Pascal}: "{v}"}}',
        "const {camel} = `{v}`",
    ),
    "rust": (
        'let {snake} = "{v}";',
        'const {UPPER}: &str = "{v}";',
        '    {snake}: String::from("{v}"),',
    ),
    "yaml": ("{snake}: {v}", '{snake}: "{v}"', "  {UPPER}: '{v}'"),
    "toml": ('{snake} = "{v}"', "{snake} = '{v}'"),
    "json": ('  "{snake}": "{v}",', '{{"{camel}":"{v}"}}'),
    "dotenv": ("{UPPER}={v}", '{UPPER}="{v}"'),
    "shellscript": ("export {UPPER}={v}", "{UPPER}='{v}' ./deploy.sh", 'export {UPPER}="{v}"'),
    "lua": ('local {snake} = "{v}"', "{snake} = [[{v}]]", "config.{snake} = '{v}'"),
}
# Ordinary code around the planted line, so the secret is not the whole document.
FILLER: dict[str, str] = {
    "python": "def load(path):\n    return open(path).read()\n",
    "javascript": "function load(path) {\n  return fs.readFileSync(path);\n}\n",
    "typescript": "export function load(path: string): Buffer {\n  return readFileSync(path);\n}\n",
    "go": "func load(path string) ([]byte, error) {\n\treturn os.ReadFile(path)\n}\n",
    "rust": "fn load(path: &str) -> String {\n    std::fs::read_to_string(path).unwrap()\n}\n",
    "yaml": "service:\n  name: api\n  replicas: 2\n",
    "toml": '[server]\nhost = "0.0.0.0"\nport = 8080\n',
    "json": '{\n  "name": "api",\n  "port": 8080\n}\n',
    "dotenv": "DEBUG=false\nPORT=8080\n",
    "shellscript": '#!/bin/sh\nset -eu\ncd "$(dirname "$0")"\n',
    "lua": "local function load(path)\n  return io.open(path):read('*a')\nend\n",
}
LANGUAGES = sorted(TEMPLATES)

ALNUM = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789"
HEX = "0123456789abcdef"
B64 = ALNUM + "+/"


def chars(alphabet: str, size: int, max_size: int | None = None) -> st.SearchStrategy[str]:
    return st.text(alphabet=alphabet, min_size=size, max_size=max_size or size)


def named_like_a_secret(value: str) -> bool:
    """A value shaped like a name rather than a secret, taken for one by the redactor:
    DB_PASSWORD2 (a variable's name), dummy_token_2 (a name or an example)."""
    if re.fullmatch(r"[A-Z][A-Z0-9_]*", value):
        return True
    words = {"pass", "passwd", "password", "pwd", "secret", "token", "auth", "credentials"}
    words |= {"credential", "apikey", "accesskey", "privatekey", "accountkey", "passphrase"}
    return bool(re.fullmatch(r"[a-z0-9_.-]+", value)) and bool(
        words & set(re.split(r"[_.-]", value))
    )


def password(symbols: str) -> st.SearchStrategy[str]:
    """A password as people write them: a letter first, some symbols, at least one digit."""
    return st.builds(
        lambda first, body, digit: first + body + digit,
        chars(ALNUM[:52], 1),
        chars(ALNUM + symbols, 6, 28),
        chars("0123456789", 1),
    ).filter(lambda v: not named_like_a_secret(v))


PASSWORD = password("-_.!%+~^@#")
URL_PASSWORD = password("-_.!~*")


@dataclass(frozen=True)
class Kind:
    """A kind of secret: the name it is assigned to, and how its text and value are drawn."""

    name: str
    words: tuple[str, ...]  # the name assigned to, as words; "client", "config" is innocuous
    planted: st.SearchStrategy[tuple[str, str]]  # (the text planted, the value that must go)


def token(name: str, strategy: st.SearchStrategy[str], *words: str) -> Kind:
    """A kind whose whole text is the secret."""
    return Kind(name, words or ("client", "config"), strategy.map(lambda v: (v, v)))


def assigned(name: str, *words: str) -> Kind:
    """A password-like value assigned to a secret-ish name."""
    return token(name, PASSWORD, *words)


def around(
    name: str, build: Callable[..., tuple[str, str]], *parts: st.SearchStrategy[str]
) -> Kind:
    """A kind whose secret sits inside a longer text (a URL, a header, a connection string)."""
    return Kind(name, ("client", "config"), st.tuples(*parts).map(lambda p: build(*p)))


def _url(scheme: str, user: str) -> Callable[[str], tuple[str, str]]:
    return lambda pw: (f"{scheme}://{user}:{pw}@db.internal:5432/app", pw)


def _pem(label: str) -> Callable[[list[str]], tuple[str, str]]:
    def build(lines: list[str]) -> tuple[str, str]:
        body = "\n".join(lines)
        return f"-----BEGIN {label}-----\n{body}\n-----END {label}-----", lines[1]

    return build


KINDS: tuple[Kind, ...] = (
    # the issue's leaks, each in the syntax it was found in and in every other
    around(
        "slack webhook",
        lambda t, b, s: (f"https://hooks.slack.com/services/T{t}/B{b}/{s}", f"T{t}/B{b}/{s}"),
        chars(ALNUM[26:], 8, 10),
        chars(ALNUM[26:], 8, 10),
        chars(ALNUM, 24),
    ),
    assigned("DB_PASSWORD", "db", "password"),
    token(
        "SECRET_KEY django",
        chars(ALNUM + "!@#%^*+-_", 50).map(lambda v: "django-insecure-" + v),
        "secret",
        "key",
    ),
    token("API_TOKEN tok_", chars(ALNUM, 24).map(lambda v: "tok_" + v + "9"), "api", "token"),
    assigned("ADMIN_PASSWORD", "admin", "password"),
    assigned("password", "password"),
    around(
        "opaque bearer token",
        lambda v: (f"Bearer {v}", v),
        st.builds(str.__add__, chars(ALNUM + "._~-", 20, 40), chars("0123456789", 1)),
    ),
    around(
        "azure storage AccountKey",
        lambda k: (
            "DefaultEndpointsProtocol=https;AccountName=acct;"
            f"AccountKey={k}==;EndpointSuffix=core.windows.net",
            f"{k}==",
        ),
        chars(B64, 86),
    ),
    token(
        "sendgrid",
        st.builds(lambda a, b: f"SG.{a}.{b}", chars(ALNUM + "-_", 22), chars(ALNUM + "-_", 43)),
    ),
    token("npm", chars(ALNUM, 36).map(lambda v: "npm_" + v)),
    around(
        "basic auth header",
        lambda u, p: (
            "Basic " + base64.b64encode(f"{u}:{p}".encode()).decode(),
            base64.b64encode(f"{u}:{p}".encode()).decode(),
        ),
        chars(ALNUM[:26], 3, 10),
        URL_PASSWORD,
    ),
    around("https user:password", _url("https", "deploy"), URL_PASSWORD),
    assigned("PGPASSWORD", "pgpassword"),
    # names secrets are assigned to
    assigned("passwd", "passwd"),
    assigned("pwd", "db", "pwd"),
    assigned("pass", "smtp", "pass"),
    assigned("passphrase", "key", "passphrase"),
    assigned("api_key", "api", "key"),
    assigned("apikey", "apikey"),
    assigned("access_key", "access", "key"),
    assigned("private_key", "private", "key"),
    assigned("credentials", "credentials"),
    assigned("auth", "auth"),
    assigned("client_secret", "client", "secret"),
    assigned("auth_token", "auth", "token"),
    assigned("access_token", "access", "token"),
    # connection strings
    around("postgres URL", _url("postgres", "app"), URL_PASSWORD),
    around("mysql URL", _url("mysql", "root"), URL_PASSWORD),
    around("mongodb+srv URL", _url("mongodb+srv", "admin"), URL_PASSWORD),
    around("redis URL", _url("redis", ""), URL_PASSWORD),
    around("amqp URL", _url("amqp", "guest"), URL_PASSWORD),
    around(
        "ADO.NET connection string",
        lambda p: (f"Server=db;Database=app;User Id=sa;Password={p};", p),
        PASSWORD,
    ),
    around("libpq keywords", lambda p: (f"host=db user=app password={p} dbname=app", p), PASSWORD),
    # well-known token formats (gitleaks, detect-secrets)
    token("AWS access key id", chars(ALNUM[26:], 16).map(lambda v: "AKIA" + v)),
    token(
        "AWS secret access key",
        st.builds(str.__add__, chars(B64, 39), chars("0123456789", 1)),
        "aws",
        "secret",
        "access",
        "key",
    ),
    token("GitHub PAT", chars(ALNUM, 36).map(lambda v: "ghp_" + v)),
    token("GitHub OAuth", chars(ALNUM, 36).map(lambda v: "gho_" + v)),
    token("GitHub fine-grained PAT", chars(ALNUM + "_", 82).map(lambda v: "github_pat_" + v)),
    token("GitLab PAT", chars(ALNUM + "_-", 20).map(lambda v: "glpat-" + v)),
    token(
        "Slack bot token",
        st.builds(
            lambda a, b, c: f"xoxb-{a}-{b}-{c}",
            chars("0123456789", 11),
            chars("0123456789", 12),
            chars(ALNUM, 24),
        ),
    ),
    token("Stripe secret key", chars(ALNUM, 24).map(lambda v: "sk_live_" + v)),
    token("Stripe restricted key", chars(ALNUM, 24).map(lambda v: "rk_test_" + v)),
    token("Google API key", chars(ALNUM + "_-", 35).map(lambda v: "AIza" + v)),
    around(
        "RSA private key block",
        _pem("RSA PRIVATE KEY"),
        st.lists(chars(B64, 64), min_size=3, max_size=5).map(tuple),
    ),
    around(
        "OpenSSH private key block",
        _pem("OPENSSH PRIVATE KEY"),
        st.lists(chars(B64, 70), min_size=3, max_size=5).map(tuple),
    ),
    token(
        "JWT",
        st.builds(
            lambda a, b, c: f"eyJ{a}.eyJ{b}.{c}",
            chars(ALNUM + "_-", 20, 40),
            chars(ALNUM + "_-", 20, 60),
            chars(ALNUM + "_-", 43),
        ),
    ),
    token("OpenAI project key", chars(ALNUM + "_-", 48, 120).map(lambda v: "sk-proj-" + v)),
    token("Anthropic key", chars(ALNUM + "_-", 93).map(lambda v: f"sk-ant-api03-{v}AA")),
    token("Twilio API key", chars(HEX, 32).map(lambda v: "SK" + v)),
    token("Mailgun key", chars(HEX, 32).map(lambda v: "key-" + v)),
    token(
        "Mailchimp key", st.builds(lambda v, n: f"{v}-us{n}", chars(HEX, 32), chars(HEX[:10], 1, 2))
    ),
    token(
        "Azure AD client secret",
        st.builds(
            lambda a, d, b: f"{a}{d}Q~{b}",
            chars(ALNUM, 3),
            chars("0123456789", 1),
            chars(ALNUM + "_~.-", 34),
        ),
    ),
    token("PyPI token", chars(ALNUM + "_-", 70, 120).map(lambda v: "pypi-AgEIcHlwaS5vcmc" + v)),
    token("Heroku key", chars(ALNUM + "_-", 58).map(lambda v: "HRKU-AA" + v)),
    token(
        "Heroku legacy key",
        st.uuids().map(str),
        "heroku",
        "api",
        "key",
    ),
    token(
        "Discord bot token",
        st.builds(
            lambda a, b, c: f"M{a}.{b}.{c}",
            chars(ALNUM + "_-", 23),
            chars(ALNUM + "_-", 6),
            chars(ALNUM + "_-", 27),
        ),
        "discord",
        "bot",
        "token",
    ),
    around(
        "Telegram bot token",
        lambda bot, s: (f"{bot}:AA{s}", f"AA{s}"),
        chars("0123456789", 9, 10),
        chars(ALNUM + "_-", 33),
    ),
    token("DigitalOcean PAT", chars(HEX, 64).map(lambda v: "dop_v1_" + v)),
    token("Hugging Face token", chars(ALNUM[:52], 34).map(lambda v: "hf_" + v)),
    token("Square secret", chars(ALNUM + "_-", 43).map(lambda v: "sq0csp-" + v)),
)


def names(words: tuple[str, ...]) -> dict[str, str]:
    return {
        "UPPER": "_".join(words).upper(),
        "snake": "_".join(words),
        "camel": words[0] + "".join(w.capitalize() for w in words[1:]),
        "Pascal": "".join(w.capitalize() for w in words),
    }


@dataclass(frozen=True)
class Plant:
    kind: str
    language: str
    line: str  # the planted line of code
    value: str  # what must not reach any output

    @property
    def code(self) -> str:
        return FILLER[self.language] + self.line + "\n" + "x = 1\n"


def plant(kind: Kind, language: str, template: int, text: str, value: str) -> Plant:
    templates = TEMPLATES[language]
    line = templates[template % len(templates)].format(v=text, **names(kind.words))
    return Plant(kind.name, language, line, value)


def record(trace_file: Path, plants: list[Plant]) -> None:
    """Each plant as one analysis, recorded as the server does: real SDK, our exporter."""
    provider = TracerProvider(resource=Resource.create({"service.name": "ai-lsp-tune"}))
    provider.add_span_processor(SimpleSpanProcessor(OtlpJsonFileSpanExporter(trace_file)))
    tracer = provider.get_tracer(genai.INSTRUMENTATION_SCOPE)
    for n, p in enumerate(plants):
        name = f"doc{n}.{p.language}"
        issues = [
            {"issue_snippet": p.line, "severity": "error", "message": f"Hard-coded {p.value}."},
            {"issue_snippet": p.value, "severity": "warning", "message": "Move it to a vault."},
        ]
        record = genai.AnalysisRecord(
            model="qwen-test",
            provider="openai",  # a teacher: the local model's own answers are left out
            system=SYSTEM_PROMPT,
            user=user_prompt(p.language, p.code, name),
            output=json.dumps({"issues": issues}),
            valid=True,
            document_uri=f"file:///project/{name}",
            language=p.language,
            document_name=name,
        )
        tracer.start_span(
            genai.ANALYSIS_SPAN_NAME, attributes=genai.analysis_attributes(record)
        ).end()
    provider.shutdown()


def assert_nothing_leaked(out: Path, plants: list[Plant]) -> None:
    files = [path for path in out.rglob("*") if path.is_file()]
    assert {p.name for p in files} >= {"dataset.json", "train.jsonl", "stats.json"}
    for path in files:
        text = path.read_text(encoding="utf-8")
        for p in plants:
            for form in (p.value, json.dumps(p.value)[1:-1]):
                assert form not in text, (
                    f"{p.kind} {p.value!r} ({p.language}) leaked into {path.name}"
                )
    rows = [json.loads(line) for line in (out / "dataset.json").open()]
    stats = json.loads((out / "dataset" / "stats.json").read_text())
    assert stats["examples"] == len(rows) == len(plants) - stats["duplicates"]
    for row in rows:  # no issue lost: each snippet still matches the redacted code
        issues = json.loads(row["assistant"])["issues"]
        assert len(issues) == 2 and all(i["issue_snippet"] in row["user"] for i in issues), row


@pytest.mark.slow  # three runs of the whole CLI: ~12 s on the 2-core machine
@settings(
    max_examples=3,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
@given(st.tuples(*(kind.planted for kind in KINDS)))
def test_every_kind_in_every_language_through_the_cli(
    monkeypatch: pytest.MonkeyPatch, drawn: tuple[tuple[str, str], ...]
) -> None:
    # Each kind in each language, the languages' assignment forms used in turn.
    plants = [
        plant(kind, language, k + n, *drawn[k])
        for k, kind in enumerate(KINDS)
        for n, language in enumerate(LANGUAGES)
    ]
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        record(root / "traces.jsonl", plants)
        monkeypatch.chdir(root)
        result = CliRunner().invoke(
            app,
            [
                *("finetune", "prepare-dataset", "traces.jsonl"),
                *("--output-file", "out/dataset.json", "--output-dir", "out/dataset"),
            ],
        )
        assert result.exit_code == 0, result.output
        assert_nothing_leaked(root / "out", plants)


def test_kinds_covered() -> None:
    assert len(KINDS) == 60 and len(LANGUAGES) == 11


@st.composite
def plants(draw: st.DrawFn) -> Plant:
    kind = draw(st.sampled_from(KINDS))
    text, value = draw(kind.planted)
    return plant(kind, draw(st.sampled_from(LANGUAGES)), draw(st.integers(0, 4)), text, value)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(plants(), min_size=1, max_size=4))
def test_no_planted_secret_reaches_any_output(planted: list[Plant]) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        record(root / "traces" / "ai-lsp-otel.jsonl", planted)
        prepare_dataset(
            [root / "traces"],
            output_file=root / "out" / "dataset.json",
            output_dir=root / "out" / "dataset",
        )
        assert_nothing_leaked(root / "out", planted)


@pytest.mark.parametrize(
    "code",
    [
        "password_field = form.password",
        "token = get_token()",
        "if secret is None:",
        "def login(password: str, token: str | None = None) -> bool:",
        "const token = req.headers.authorization;",
        "max_tokens = 4096",
        "tokenizer = AutoTokenizer.from_pretrained(name)",
        'author = "Jane Doe"',
        'auth_method = "oauth2"',
        "secretName: db-credentials",
        "token: ${{ secrets.GITHUB_TOKEN }}",
        "password: ${DB_PASSWORD}",
        "PASSWORD_MIN_LENGTH=12",
        "secret = secrets.token_urlsafe(32)",
        'api_key = os.environ["API_KEY"]',
        '"password": password,',
        'headers = {"Authorization": f"Bearer {token}"}',
        "Use Basic authentication for the admin API.",
        "A Bearer token is required.",
        "let token = lexer.next_token()?;",
        'password := os.Getenv("DB_PASSWORD")',
        "for token in tokens:",
        "PWD=/home/user/project",
        'type="password"',
        "credentials = service_account.Credentials.from_service_account_file(path)",
        'private_key_path = "/etc/ssl/private/key.pem"',
        "token_type = 'bearer'",
        "password = request.POST['password']",
        "token: Option<String>,",
        "pub token: u64,",
        "x = {password: pwd}",
        "secret_key = settings.SECRET_KEY",
        "const password = process.env.DB_PASSWORD;",
        "SECRET_KEY = env('SECRET_KEY')",
        "password_hash = make_password(raw)",
        "AUTH_USER_MODEL = 'accounts.User'",
        "'password': forms.CharField(widget=forms.PasswordInput)",
        "api_key: str = Field(..., description='The key')",
        "return {'token': token, 'expires': 3600}",
        "auth_required = True",
        "secret, err := client.Get(ctx, name)",
        "pwd = os.getcwd()",
        "local token = tokens[i]",
        # found in 100 MB of installed packages' code, once taken for secrets
        '_SK_START = b"-----BEGIN OPENSSH PRIVATE KEY-----"\n_SK_END = b"-----END OPENSSH',
        'ExtendedKeyUsageOID.SERVER_AUTH: "serverAuth",',
        'def __init__(self, token="fake_token", expired=False):',
        'bos_token="__start__"',
        '_PassArg.eval_context: "context.eval_ctx",',
        '"OAuth2Config": ".oauth2config",',
        'fetch(url, { credentials: "same-origin" })',
        'token_counter: str = "estimate"',
        "mock_auth_res429._response = res429",
        "# cached token: `get_token()` may refresh an OAuth token",
        "Token: '#cccccc',",
        "fsspec.open('smb://myuser:mypassword@myserver.com/share/file.txt')",
        'GEN_AI_CLIENT_TOKEN_USAGE: Final = "gen_ai.client.token.usage"',
        'build_hf_headers(token="hf_***")',
        'image_break_token="[IMG_BREAK]"',
    ],
)
def test_ordinary_code_about_secrets_is_left_alone(code: str) -> None:
    assert Redactor().redact(code) == code


def test_a_short_secret_is_redacted_where_it_stands_alone() -> None:
    redactor = Redactor()
    redacted = redactor.redact('url = "https://admin:hunter@db.internal/app"\nhunters = 3')
    assert redacted == 'url = "https://admin:REDACTED_URL_PASSWORD_1@db.internal/app"\nhunters = 3'
