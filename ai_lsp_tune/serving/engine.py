"""The model host's engine: one loaded MLX model, its tokenizer and the system prompt's KV cache;
greedy (optionally constrained) generation, and switching to other weights in place.

A ``switch`` loads another model of the same architecture (a fine-tune of the loaded model, or
its base) into the loaded one; a model of another architecture is refused with kind
"architecture", and the server starts a second host for it instead. A switch (or a start,
``--adapter``) with a LoRA adapter serves base + adapter (``adapters.py``): LoRA layers over the
base's weights, reloaded in place first only if another base is loaded.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any

from ai_lsp_tune.decoding.decode import decode_answer, model_vocab_size
from ai_lsp_tune.decoding.grammar import AnswerGrammar, GrammarUnavailable, answer_grammar
from ai_lsp_tune.models.load import load_model
from ai_lsp_tune.models.resolve import resolve_model
from ai_lsp_tune.prompts import LOCAL_SYSTEM_PROMPT, has_chat_template, render_chat
from ai_lsp_tune.serving.adapters import Adapter
from ai_lsp_tune.serving.compatibility import architecture_difference, tokenizer_identity
from ai_lsp_tune.serving.loading import describe_load_error, read_weights, set_weights
from ai_lsp_tune.serving.protocol import (
    Cancelled,
    ChatMessage,
    GenerateRequest,
    Generation,
    Switched,
    SwitchRefused,
    SwitchRequest,
)
from ai_lsp_tune.shorten import NAME_CHARS, shorten

log = logging.getLogger("ai_lsp_tune.host")
NO_CHAT_TEMPLATE = "it has no chat template, so prompts are sent to it as plain text"


class Engine:
    """A loaded model, its tokenizer and the KV cache of the system prompt."""

    def __init__(
        self, model: Any, tokenizer: Any, name: str = "", path: Path | None = None
    ) -> None:
        self.model = model
        self.tokenizer = tokenizer
        self.name = name  # as the server asked for it: the path reported everywhere
        self.path = path  # the local folder whose weights the model holds
        self.adapter: Path | None = None  # LoRA layers applied on top (``finetune.fuse`` false)
        self.prefix_tokens: list[int] = []
        self.cache: list[Any] | None = None
        self.grammar: AnswerGrammar | None = None
        self.grammar_problem: str | None = None
        self.template_problem: str | None = None
        self.plan: Any = None  # the quantized layers served dequantized (training.precision)

    def prepare_grammar(self) -> None:
        """Compile the answer grammar now (at load), so no analysis waits for it."""
        try:
            self.grammar = answer_grammar(self.tokenizer, model_vocab_size(self.model))
        except GrammarUnavailable as exc:
            self.grammar_problem = exc.reason
            log.warning("constrained decoding unavailable: %s", exc.reason)
        else:
            log.info("answer grammar compiled in %.2f s", self.grammar.compile_s)

    def render(self, messages: list[ChatMessage]) -> list[int]:
        """Token ids of a chat, as training renders it (``prompts.render_chat``)."""
        if not has_chat_template(self.tokenizer):
            self.template_problem = NO_CHAT_TEMPLATE
        return render_chat(self.tokenizer, [m.model_dump() for m in messages])

    def warm(self, system: str = LOCAL_SYSTEM_PROMPT) -> int:
        """Prefill the system prompt once; return how many tokens the cache holds."""
        import mlx.core as mx
        from mlx_lm.models.cache import can_trim_prompt_cache, make_prompt_cache

        probe = [ChatMessage(role="system", content=system), ChatMessage(role="user", content="x")]
        other = [ChatMessage(role="system", content=system), ChatMessage(role="user", content="y")]
        a, b = self.render(probe), self.render(other)
        shared = 0
        while shared < min(len(a), len(b)) and a[shared] == b[shared]:
            shared += 1
        cache = make_prompt_cache(self.model)
        if shared < 2 or not can_trim_prompt_cache(cache):
            return 0
        self.prefix_tokens = a[:shared]
        self.model(mx.array(self.prefix_tokens)[None], cache=cache)
        mx.eval([c.state for c in cache])
        self.cache = cache
        return shared

    def generate(self, request: GenerateRequest, cancelled: set[int]) -> Generation | Cancelled:
        """Greedy generation, stopping early when the request is cancelled."""
        from mlx_lm.models.cache import make_prompt_cache, trim_prompt_cache

        started = time.perf_counter()
        tokens = self.render(request.messages)
        prefix = len(self.prefix_tokens)
        use_cache = self.cache is not None and tokens[:prefix] == self.prefix_tokens
        cache = self.cache if use_cache else make_prompt_cache(self.model)
        prompt = tokens[prefix:] if use_cache else tokens
        grammar = self.grammar if request.constrained else None
        user = next((m.content for m in reversed(request.messages) if m.role == "user"), None)
        if grammar is not None and user is not None:
            grammar = grammar.for_prompt(user)  # snippets limited to the code analysed
        try:
            answer = decode_answer(
                self.model,
                self.tokenizer,
                prompt,
                request.max_tokens,
                grammar=grammar,
                prompt_cache=cache,
                should_stop=lambda: request.id in cancelled,
            )
        finally:
            if use_cache and cache is not None:
                trim_prompt_cache(cache, cache[0].offset - prefix)
        if request.id in cancelled:
            return Cancelled(id=request.id)
        return Generation(
            id=request.id,
            text=answer.text,
            input_tokens=len(tokens),
            output_tokens=answer.output_tokens,
            cached_tokens=prefix if use_cache else 0,
            finish_reason=answer.finish_reason,
            seconds=time.perf_counter() - started,
            constrained=grammar is not None,
            grammar_problem=self.grammar_problem if request.constrained else None,
            template_problem=self.template_problem,
            model=self.name,
        )

    def switch(self, request: SwitchRequest) -> Switched | SwitchRefused:
        """Load ``request.model``'s weights into the loaded model (same architecture only), and
        ``request.adapter`` on top when given. Never raises: the host outlives any model it is
        asked to serve, and keeps serving the old one."""
        name = request.adapter or request.model
        try:
            return self._switch(request, name)
        except Exception as exc:
            log.warning("could not switch to %s: %s", shorten(name, NAME_CHARS), exc)
            log.debug("the switch failed here", exc_info=True)  # expected: no traceback at INFO
            failed = describe_load_error(name, exc)
            return SwitchRefused(
                id=request.id, model=name, kind=failed.kind, message=failed.message
            )

    def _switch(self, request: SwitchRequest, name: str) -> Switched | SwitchRefused:
        started = time.perf_counter()
        loaded = self.path
        path = resolve_model(request.model)
        adapter = Adapter(Path(request.adapter)) if request.adapter else None
        difference = architecture_difference(loaded, path) if loaded else "it has no folder"
        if difference is not None or loaded is None:
            return SwitchRefused(
                id=request.id,
                model=name,
                kind="architecture",
                message=f"'{shorten(request.model, NAME_CHARS)}' is not a model of "
                f"{shorten(self.name, NAME_CHARS)}'s architecture ({difference})",
            )
        # Adapter layers keep the base's weights intact: the same base needs no reload.
        layered = self.adapter is not None or adapter is not None
        same_weights = layered and path.resolve() == loaded.resolve()
        weights = {} if same_weights else read_weights(self.model, path, self.plan)
        tokenizer = self.tokenizer
        reload_tokenizer = tokenizer_identity(loaded) != tokenizer_identity(path)
        if reload_tokenizer:
            from mlx_lm.utils import load_config, load_tokenizer

            eos = load_config(path).get("eos_token_id")
            tokenizer = load_tokenizer(path, eos_token_ids=eos)
            render_chat(tokenizer, [{"role": "user", "content": "x"}])  # a template that fails
        before = (self.name, self.path, self.adapter, self.tokenizer, self.grammar,
                  self.grammar_problem)  # fmt: skip
        self._set_weights(weights, adapter)
        self.tokenizer = tokenizer
        self.name, self.path, self.adapter = name, path, adapter.folder if adapter else None
        self.template_problem = None
        self.cache, self.prefix_tokens = None, []
        try:
            cached = self.warm()  # the system prompt's keys and values depend on the weights
            if reload_tokenizer:
                self.grammar, self.grammar_problem = None, None
                self.prepare_grammar()  # cached per tokenizer: free when only the files differ
        except Exception:
            self._restore(before)
            raise
        return Switched(
            id=request.id,
            model=name,
            load_s=time.perf_counter() - started,
            prompt_cache_tokens=cached,
            tokenizer_reloaded=reload_tokenizer,
        )

    def _restore(self, before: tuple[Any, ...]) -> None:
        """Serve the model held before a switch that failed once the new weights were in."""
        name, path, adapter, tokenizer, grammar, grammar_problem = before
        failed_path, self.path = self.path, path
        weights = read_weights(self.model, path, self.plan) if path and path != failed_path else {}
        self._set_weights(weights, Adapter(adapter) if adapter else None)
        self.name, self.adapter, self.tokenizer = name, adapter, tokenizer
        self.grammar, self.grammar_problem = grammar, grammar_problem
        self.cache, self.prefix_tokens = None, []
        self.warm()

    def _set_weights(self, weights: dict[str, Any], adapter: Adapter | None) -> None:
        set_weights(
            self.model,
            weights,
            adapter,
            served=self.path,
            served_adapter=self.adapter,
            plan=self.plan,
        )


def load_engine(model_name: str, adapter: str | None = None) -> Engine:
    """Load a model folder, GGUF file or hub name (and an adapter's LoRA layers on top)."""
    from ai_lsp_tune.training import precision

    model, tokenizer, _, path = load_model(model_name)
    plan, note = precision.for_serving(model)  # faster decode on a Linux CPU (issue 20)
    if note:
        log.info("%s", note)
    if adapter is not None:
        Adapter(Path(adapter)).apply(model)
    engine = Engine(model, tokenizer, name=adapter or model_name, path=path)
    engine.adapter = Path(adapter) if adapter else None
    engine.plan = plan
    return engine
