"""What a secret looks like where it is assigned: values given to secret-ish names.

The names secrets are assigned to follow detect-secrets' ``keyword`` plugin (Apache License
2.0). Names in an assignment (``DISCORD_TOKEN=``, ``HEROKU_API_KEY=``) are left to the secret
words below; token formats are in ``redact_formats``.
"""

from __future__ import annotations

import re

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
# [MASK], #cccccc, a special token (▁<PRE>, |SPEAKER|, ]<]image[>[); or it is interpolated
# ({{ x }}, ${x}, #{x}, %{x}, $(cmd)).
_PLACEHOLDER = re.compile(
    r"""\$[A-Za-z_]\w*|<[^<>]+>|%\(\w+\)[sd]|%\w+%|\{[\w.]*\}|!{1,2}[A-Za-z]+
    |[*&][A-Za-z_][A-Za-z_.-]*|(?=.*[<>\[\]|])[<>\[\]|▁]*[A-Za-z_]+[<>\[\]|▁]*
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
_PROSE_BEFORE = re.compile(r"(?<![\w.-])[A-Za-z][a-z]+[,;]?[ \t]+$")  # a word, then a space


def word_ends(text: str, at: int, word: str) -> bool:
    """Whether the secret word at ``at`` ends a word of the name (``DB_PASSWORD``, ``dbPass``)."""
    end = at + len(word)
    if word == "pass" and at > 0 and text[at - 1].isalpha() and not text[at].isupper():
        return False  # bypass, compass; but smtpPass
    if end >= len(text) or not text[end].isalpha():
        return True
    return text[end - 1].islower() and text[end].isupper()  # camelCase: passwordHash


def assigned_secret(text: str, start: int, at: int) -> str | None:
    """The secret assigned to the name whose secret word (at ``start``) ends at ``at``."""
    found = ASSIGNED.match(text, at)
    if found is None:
        return None
    value = found["bare"] or found["quoted"] or found["long"]
    if found["op"] == ":" and _in_prose(text, start) and not any(c.isdigit() for c in value):
        return None  # "Possible hardcoded password: 'dot-atom'": a message naming a word
    words = _WORDS_IN_NAME.findall(found["suffix"])
    if words and words[-1].lower() in _NOT_SECRET_SUFFIXES:
        return None
    op, bare = found["op"], found["bare"]
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


def _in_prose(text: str, start: int) -> bool:
    """Whether the name at ``start`` is a word of a sentence ("hardcoded password: x")."""
    name = start
    while name > 0 and (text[name - 1].isalnum() or text[name - 1] in "_.-"):
        name -= 1
    before = text[max(0, name - 40) : name]
    return _PROSE_BEFORE.search(before) is not None


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
