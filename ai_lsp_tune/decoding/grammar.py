"""Grammar-constrained decoding: every token the model picks keeps its answer a DiagnosticResult.

llguidance compiles the answer's JSON schema (``schema.answer_json_schema``, derived from the
model the server validates with) against the model's tokenizer; a logits processor for mlx-lm's
``generate_step`` masks, at each step, every token that could not continue a valid answer. One
compiled grammar per tokenizer is cached for the process, so it is built once, at model load.
"""

from __future__ import annotations

import hashlib
import json
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any

from ai_lsp_tune.schema import answer_json_schema

log = logging.getLogger(__name__)

LogitsProcessor = Callable[[Any, Any], Any]  # (tokens: mx.array, logits: mx.array) -> logits


class GrammarUnavailable(RuntimeError):
    """The grammar library cannot constrain this model; ``reason`` says why in one line."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


# Tokens that end what is open, most wanted first, when the answer must be closed in time.
CLOSERS = ['"', "}", "]", "null", ","]
# The deepest fresh state of an answer: closing from here is the most one token can add (a
# token such as `,{` opening an issue or a fix commits to writing all its required fields).
DEEPEST_OPENING = (
    '{"issues":[{"issue_snippet":"","severity":"error","message":"","suggested_fixes":[{'
)
BUDGET_MARGIN = 2


@dataclass
class AnswerGrammar:
    """The DiagnosticResult grammar compiled for one tokenizer; hands out a matcher per answer."""

    matcher: Any  # llguidance.LLMatcher in its start state (deep-copied per answer)
    vocab_size: int  # the width of the model's logits
    eos: list[int]
    closers: list[int]  # token ids of CLOSERS (those the tokenizer has as one token)
    reserve: int  # tokens kept for closing an answer beyond what closing it needs now
    compile_s: float
    lltokenizer: Any = None  # llguidance's view of the tokenizer (compiles per-code grammars)

    def logits_processor(self, max_tokens: int) -> LogitsProcessor:
        """A fresh processor for one answer (it is stateful: it follows the tokens chosen)."""
        return _Constrainer(self, self.matcher.deep_copy(), max_tokens)

    def for_prompt(self, user: str) -> AnswerGrammar:
        """The grammar for one request whose user message is ``user``: for an analysis prompt,
        grounded in the code it shows (a small model cannot point at text that is not there);
        any other prompt, or a code llguidance cannot compile, keeps this grammar."""
        from ai_lsp_tune.prompts import parse_user_prompt

        parts = parse_user_prompt(user)
        if parts is None:
            return self
        try:
            return self.grounded(parts.code)
        except GrammarUnavailable as exc:
            log.warning("answers not grounded in the code: %s", exc.reason)
            return self

    def grounded(self, code: str) -> AnswerGrammar:
        """This grammar with every issue_snippet a non-empty piece of one of ``code``'s lines
        (what the LSP can place): an answer cannot point at text the code does not have.
        Compiled per code (milliseconds; the tokenizer is shared). Raises GrammarUnavailable
        when llguidance cannot compile it."""
        import llguidance

        if self.lltokenizer is None:
            raise GrammarUnavailable("the answer grammar was compiled without its tokenizer")
        started = time.perf_counter()
        try:
            matcher = llguidance.LLMatcher(
                self.lltokenizer,
                grounded_lark(code),
                log_level=0,
                limits=llguidance.LLParserLimits(precompute_large_lexemes=False),
            )
            if matcher.is_error():
                raise ValueError(matcher.get_error())
        except ValueError as exc:
            raise GrammarUnavailable(
                f"llguidance cannot compile the grounded answer grammar ({_first_line(exc)})"
            ) from exc
        return replace(self, matcher=matcher, compile_s=time.perf_counter() - started)


def grounded_lark(code: str) -> str:
    """An llguidance (Lark) grammar for compact answers, keys in the schema's order, whose
    issue_snippet is a non-empty piece of one line of ``code`` as JSON writes it (each
    character's JSON form is one chunk, so an escape is never cut in half); no issue at all
    when the code has no non-blank line."""
    schema = answer_json_schema()
    issue = schema["$defs"]["Issue"]["properties"]
    fix = schema["$defs"]["SuggestedFix"]
    fixes = {
        "anyOf": [{"type": "array", "items": fix}, {"type": "null"}],
        "x-guidance": {"whitespace_flexible": False},
    }

    def literal(text: str) -> str:
        return json.dumps(text, ensure_ascii=False)

    lines = [line for line in dict.fromkeys(code.splitlines()) if line.strip()]
    pieces = [
        f"LINE_{n}: %regex "
        + json.dumps({"substring_chunks": [literal(c)[1:-1] for c in line]}, ensure_ascii=False)
        for n, line in enumerate(lines)
    ]
    severities = " | ".join(literal(json.dumps(s)) for s in issue["severity"]["enum"])
    answer = (literal('{"issues":['), literal(","), literal("]}"))
    keys = [literal(k) for k in ('{"issue_snippet":"', '","severity":', ',"message":')]
    fixes_key, close = literal(',"suggested_fixes":'), literal("}")
    if not lines:
        return f"start: {answer[0]} {answer[2]}"
    return "\n".join(
        [
            f"start: {answer[0]} (issue ({answer[1]} issue)*)? {answer[2]}",
            f"issue: {keys[0]} SNIPPET {keys[1]} severity {keys[2]} message fixes? {close}",
            f"fixes: {fixes_key} fix_list",
            f"severity: {severities}",
            'message: %json {"type": "string"}',
            f"fix_list: %json {json.dumps(fixes)}",
            "SNIPPET: (" + " | ".join(f"LINE_{n}" for n in range(len(lines))) + ") & /.+/",
            *pieces,
        ]
    )


class _Constrainer:
    """Masks the logits to the tokens the grammar allows next, following each sampled token.

    Near the end of the token budget it closes the answer: once what is open needs about all
    the tokens left, it picks closing tokens (a quote, a brace, ...) wherever the grammar allows
    one, so the answer is cut short but still valid rather than cut mid-JSON.
    """

    def __init__(self, grammar: AnswerGrammar, matcher: Any, max_tokens: int) -> None:
        import mlx.core as mx
        import numpy as np

        self.grammar = grammar
        self.matcher = matcher
        self.max_tokens = max_tokens
        self.eos_only = mx.zeros((grammar.vocab_size,), dtype=mx.bool_)
        self.eos_only[mx.array(grammar.eos)] = True
        self.words = np.zeros(((grammar.vocab_size + 31) // 32,), dtype=np.int32)
        self.prompt_length: int | None = None
        self.consumed = 0
        self.closing = False
        self.failed = False

    def __call__(self, tokens: Any, logits: Any) -> Any:
        import mlx.core as mx
        import numpy as np

        if self.prompt_length is None:
            self.prompt_length = int(tokens.size)
        else:
            # Queue the new token, then this step's forward behind it: llguidance computes the
            # mask while the forward runs, rather than before it is queued.
            chosen = tokens[self.prompt_length + self.consumed :]
            mx.async_eval(chosen)
            mx.async_eval(logits)
            new = chosen.tolist()
            self.consumed += len(new)
            stopped = self.failed or self.matcher.is_stopped()
            if not stopped and not self.matcher.consume_tokens(new):
                self._fail()
        if self.failed:
            return logits
        width = logits.shape[-1]
        if self.matcher.is_stopped():  # the answer is complete: only an end token may follow
            return mx.where(self.eos_only[:width], logits, -mx.inf)
        self.matcher.unsafe_compute_mask_ptr(self.words.ctypes.data, self.words.nbytes)
        if self.matcher.is_error():
            self._fail()
            return logits
        if self._must_close():
            token = _closer(self.words, self.grammar.closers)
            if token is not None:
                return mx.where(mx.arange(width) == token, logits, -mx.inf)
        # The 32-bit mask words unpacked in numpy: one MLX op per step, not one per bit trick.
        bits = np.unpackbits(self.words.view(np.uint8), count=width, bitorder="little")
        return mx.where(mx.array(bits.view(np.bool_)), logits, -mx.inf)

    def _must_close(self) -> bool:
        left = self.max_tokens - self.consumed - self.grammar.reserve - BUDGET_MARGIN
        if not self.closing and left <= 2 * self.grammar.reserve:
            self.closing = left <= closing_length(self.matcher, self.grammar)
        return self.closing

    def _fail(self) -> None:
        self.failed = True
        log.warning("the answer grammar stopped matching (%s)", self.matcher.get_error())


def closing_length(matcher: Any, grammar: AnswerGrammar, limit: int = 256) -> int:
    """About how many tokens closing the answer from ``matcher``'s state takes (an upper bound:
    where no closing token is allowed it counts single bytes)."""
    import numpy as np

    probe = matcher.deep_copy()
    words = np.zeros(((grammar.vocab_size + 31) // 32,), dtype=np.int32)
    for steps in range(limit):
        if probe.is_accepting() or probe.is_stopped():
            return steps
        probe.unsafe_compute_mask_ptr(words.ctypes.data, words.nbytes)
        token = _closer(words, grammar.closers)
        if token is None:
            allowed = np.flatnonzero(np.unpackbits(words.view(np.uint8), bitorder="little"))
            if not len(allowed):
                return steps
            token = int(allowed[0])
        if not probe.consume_token(token):
            return steps
    return limit


def _closer(words: Any, closers: list[int]) -> int | None:
    """The first closing token the mask (32-bit words) allows."""
    for token in closers:
        if (int(words[token >> 5]) >> (token & 31)) & 1:
            return token
    return None


_cache: dict[str, AnswerGrammar] = {}
_cache_lock = threading.Lock()


def answer_grammar(
    tokenizer: Any, vocab_size: int, schema: dict[str, Any] | None = None
) -> AnswerGrammar:
    """The DiagnosticResult grammar for this tokenizer, compiled once per process.

    ``tokenizer`` is mlx-lm's TokenizerWrapper; ``vocab_size`` the model's logits width.
    Raises GrammarUnavailable when llguidance cannot read the tokenizer or compile the schema.
    """
    hf = getattr(tokenizer, "_tokenizer", tokenizer)
    backend = getattr(hf, "backend_tokenizer", None)
    if backend is None:
        raise GrammarUnavailable(
            f"its tokenizer ({type(hf).__name__}) is not a fast Hugging Face tokenizer"
        )
    eos = sorted(getattr(tokenizer, "eos_token_ids", None) or [hf.eos_token_id])
    schema = answer_json_schema() if schema is None else schema
    identity = f"{backend.to_str()}\0{eos}\0{vocab_size}\0{json.dumps(schema)}"
    key = hashlib.sha256(identity.encode()).hexdigest()
    with _cache_lock:
        if key not in _cache:
            _cache[key] = _compile(hf, eos, vocab_size, schema)
        return _cache[key]


def _compile(hf: Any, eos: list[int], vocab_size: int, schema: dict[str, Any]) -> AnswerGrammar:
    try:
        import llguidance
        import llguidance.hf
    except ImportError as exc:  # pragma: no cover - a dependency of the package
        raise GrammarUnavailable(f"llguidance is not installed ({exc})") from exc

    started = time.perf_counter()
    n_vocab = max(vocab_size, len(hf))
    try:
        lltokenizer = llguidance.hf.from_tokenizer(hf, n_vocab=n_vocab, eos_token=eos)
    except BaseException as exc:  # a Rust panic arrives as PanicException (a BaseException)
        if isinstance(exc, KeyboardInterrupt | SystemExit):
            raise
        reason = f"llguidance cannot read its tokenizer ({_first_line(exc)})"
        raise GrammarUnavailable(reason) from exc
    try:
        matcher = llguidance.LLMatcher(lltokenizer, grammar_for(schema), log_level=0)
        if matcher.is_error():
            raise ValueError(matcher.get_error())
    except ValueError as exc:
        reason = f"llguidance cannot compile the answer schema ({_first_line(exc)})"
        raise GrammarUnavailable(reason) from exc
    # Computing the first mask builds the lexer's start state: pay for it now, not in an analysis.
    matcher.compute_bitmask()
    closers = [ids[0] for text in CLOSERS if len(ids := lltokenizer.tokenize_str(text)) == 1]
    grammar = AnswerGrammar(matcher, n_vocab, eos, closers, 0, 0.0, lltokenizer)
    deepest = matcher.deep_copy()
    if deepest.consume_tokens(lltokenizer.tokenize_str(DEEPEST_OPENING)):
        grammar.reserve = closing_length(deepest, grammar)
    else:
        grammar.reserve = len(DEEPEST_OPENING)
    grammar.compile_s = time.perf_counter() - started
    return grammar


def grammar_for(schema: dict[str, Any]) -> str:
    """An llguidance grammar for compact JSON (the form answers are trained in) of ``schema``."""
    import llguidance

    return str(
        llguidance.LLMatcher.grammar_from_json_schema(
            json.dumps(schema), defaults={"whitespace_flexible": False}
        )
    )


def _first_line(value: object) -> str:
    text = str(value).strip()
    return (text.splitlines()[0] if text else type(value).__name__)[:200]
