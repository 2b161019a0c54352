"""The served local model: the one owner of which model serves; swaps with no failed request.

Every change of the served model goes through this object, one at a time under its one lock: a
fine-tune's ``swap``, ``use`` of a listed model, ``rollback``, the user's ``model`` setting
(``configure``) and the restart of a host that died. The workspace's registry (the order models
were served in, the model history, retention) is written only from here, under the same lock.

A swap to a model of the served model's architecture (every fine-tune of it, its base, a
rollback) happens in place: the running host loads the new weights into the model it holds,
between two requests; the ones sent before finish on the old weights, the next on the new.

A LoRA adapter (``finetune.fuse`` false) is served on top of its base, in place too: the host
puts the adapter's layers over the base it holds (see ``_switch_in_place`` for another base).

A model of another architecture gets a second model host, started beside the first; once it is
loaded and warm, new requests are routed to it. Requests already sent to the old host finish
there, and the old host is stopped once it has drained. Memory holds both models for that moment.

A host that dies (killed, out of memory) is started again with the same model and the request
retried there, unless it died ``MAX_RESTARTS`` times within ``RESTART_WINDOW_S``: a model that
crashes its host every time is reported, not restarted forever.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from ai_lsp_tune.serving.adapters import adapter_base
from ai_lsp_tune.serving.protocol import ChatMessage, Generation
from ai_lsp_tune.serving.registry import ModelEntry, ModelRegistry
from ai_lsp_tune.serving.runner import HostClient, HostGone, ModelLoadError

log = logging.getLogger(__name__)
MAX_RESTARTS = 3
RESTART_WINDOW_S = 60.0


class NoPreviousModel(RuntimeError):
    """Rollback asked for, but no model was served before this one."""


@dataclass(frozen=True)
class ModelSource:
    """What a host serves: a model folder (a fused fine-tune) or hub name, or a base model with
    a LoRA adapter folder on top (``finetune.fuse`` false: no fused copy written). ``path`` is
    the name reported and kept in the registry (the adapter's folder)."""

    model: str
    adapter: str | None = None

    @property
    def path(self) -> str:
        return self.adapter or self.model

    @classmethod
    def of(cls, path: str) -> ModelSource:
        """A listed path: an adapter folder serves on the base its config names."""
        base = adapter_base(path)
        return cls(base, adapter=path) if base else cls(path)


class ServedModel:
    """Routes generations to the current model host; every change of model goes through it."""

    def __init__(
        self,
        host: HostClient,
        *,
        previous_path: str | None = None,
        registry: ModelRegistry | None = None,
        load_timeout_s: float = 600.0,
    ) -> None:
        self._host = host
        self._previous_path = previous_path
        self._registry = registry
        self._load_timeout_s = load_timeout_s
        self._lock = asyncio.Lock()  # one change of model (or registry write) at a time
        self._retiring: set[asyncio.Task[None]] = set()
        self._restarts: list[float] = []  # monotonic times of recent restarts
        self.on_switched: Callable[[str], None] | None = None  # told the path now served

    @classmethod
    async def start(
        cls,
        model: str,
        *,
        previous_path: str | None = None,
        registry: ModelRegistry | None = None,
        load_timeout_s: float = 600.0,
    ) -> ServedModel:
        """Serve ``model`` (a folder or hub name). Raises ModelLoadError if it cannot load."""
        source = ModelSource.of(model)
        host = await HostClient.start(
            source.model, adapter=source.adapter, load_timeout_s=load_timeout_s
        )
        return cls(
            host, previous_path=previous_path, registry=registry, load_timeout_s=load_timeout_s
        )

    @classmethod
    async def for_workspace(
        cls,
        configured: str,
        registry: ModelRegistry,
        *,
        on_fallback: Callable[[str, ModelLoadError], None],
        load_timeout_s: float = 600.0,
    ) -> ServedModel:
        """Serve what the workspace served last, unless the user configured another model since.

        A swapped-in model that no longer loads gives way to ``configured`` (``on_fallback`` is
        told why); ModelLoadError when ``configured`` cannot load either.
        """
        model = registry.start_serving(configured)
        try:
            return await cls.start(model, registry=registry, load_timeout_s=load_timeout_s)
        except ModelLoadError as exc:
            if model == configured:
                raise
            on_fallback(model, exc)
        registry.set_configured(configured)
        return await cls.start(configured, registry=registry, load_timeout_s=load_timeout_s)

    @property
    def current_path(self) -> str:
        return self._host.model

    @property
    def previous_path(self) -> str | None:
        """The model a rollback serves: the served model's parent in the workspace's lineage
        (its registry), else the model served before it."""
        if self._registry is not None:
            return self._registry.previous
        return self._previous_path

    async def generate(
        self, messages: Sequence[ChatMessage], max_tokens: int, *, constrained: bool = True
    ) -> Generation:
        """Generate on the current model; a swap meanwhile lets this one finish where it began.

        If the host has died, it is started again and the request retried once there.
        """
        host = self._host
        try:
            return await host.generate(messages, max_tokens, constrained=constrained)
        except HostGone:
            await self._restart(host)
        return await self._host.generate(messages, max_tokens, constrained=constrained)

    async def _restart(self, gone: HostClient) -> None:
        """Start the host that died again (once, however many requests saw it go)."""
        async with self._lock:
            if self._host is not gone:  # restarted (or swapped) while this request waited
                return
            now = time.monotonic()
            self._restarts = [t for t in self._restarts if now - t < RESTART_WINDOW_S]
            code = gone.process.returncode
            if len(self._restarts) >= MAX_RESTARTS:
                raise HostGone(
                    f"the model host for {gone.model} exited (code {code}) "
                    f"{len(self._restarts) + 1} times in {RESTART_WINDOW_S:.0f} s; not restarting "
                    "it again (is the model too large for this machine's memory?)"
                )
            self._restarts.append(now)
            log.warning("model host for %s exited (code %s); starting it again", gone.model, code)
            await gone.close()
            source = ModelSource.of(gone.model)
            self._host = await HostClient.start(
                source.model, adapter=source.adapter, load_timeout_s=self._load_timeout_s
            )

    # --- changes of model: each under the lock, each with its registry record ---------------
    async def swap(self, model: str | ModelSource) -> None:
        """Serve a new model from now on; ModelLoadError (old model kept) if it cannot load."""
        source = model if isinstance(model, ModelSource) else ModelSource.of(model)
        async with self._lock:
            old_path = await self._switch(source)
            if self._registry is not None:
                self._registry.record_swap(served=source.path, previous=old_path)

    async def use(self, path: str) -> None:
        """Serve ``path``, a model from the workspace's list (its base or a fine-tune)."""
        await self.swap(path)

    async def rollback(self) -> str:
        """Serve the served model's parent (a fine-tune's base: one step down its lineage per
        call, whatever was served in between); return it. NoPreviousModel at a base model."""
        async with self._lock:
            previous = self.previous_path  # read under the lock: no change can come between
            if previous is None:
                raise NoPreviousModel("there is no previous model to roll back to")
            await self._switch(ModelSource.of(previous))
            if self._registry is not None:
                self._registry.record_rollback()
            return previous

    async def configure(self, model: str) -> None:
        """The user set ``model``: serve it; what was served before is forgotten (no rollback)."""
        async with self._lock:
            await self._switch(ModelSource.of(model))
            if self._registry is not None:
                self._registry.set_configured(model)

    async def remember(self, entry: ModelEntry) -> None:
        """Add a fine-tuned model to the workspace's model history (served or not)."""
        if self._registry is None:
            return
        async with self._lock:
            self._registry.record_model(entry)

    async def retain(self, keep: int, *, protect: set[str | None], runs_dir: Path) -> list[str]:
        """Delete fine-tuned models beyond the newest ``keep``; never the served one or its
        lineage (its parent, grandparent...), nor ``protect``. Returns what was deleted (in a
        thread: rmtree is slow)."""
        if self._registry is None:
            return []
        async with self._lock:
            kept = {p for p in (*protect, self.current_path, self.previous_path) if p}
            kept |= set(self._registry.lineage(self.current_path))  # rollbacks step down it
            kept |= {b for p in kept if (b := adapter_base(p))}  # an adapter's base stays
            return await asyncio.to_thread(
                self._registry.prune, keep, protect=kept, runs_dir=runs_dir
            )

    async def _switch(self, source: ModelSource) -> str:
        """Route new requests to ``source`` (in place, else on a host of its own); the old path."""
        old_path = self._host.model
        if not await self._switch_in_place(source):
            new_host = await HostClient.start(
                source.model, adapter=source.adapter, load_timeout_s=self._load_timeout_s
            )
            old_host, self._host = self._host, new_host
            task = asyncio.create_task(self._retire(old_host), name=f"retire-{old_path}")
            self._retiring.add(task)
            task.add_done_callback(self._retiring.discard)
        self._previous_path = old_path
        log.info("now serving %s (was %s)", source.path, old_path)
        if self.on_switched is not None:
            self.on_switched(source.path)
        return old_path

    async def _switch_in_place(self, source: ModelSource) -> bool:
        """Load ``source`` into the running host; False when it needs a host of its own.

        An adapter is trained from ``finetune.baseModel``, which the host normally holds: it only
        adds the adapter's layers. Holding another base (``continueFromServed``, a changed
        ``model``), the host reloads the adapter's base weights in place when the architecture
        matches (no second copy in memory), and refuses otherwise: then a fresh host loads
        base + adapter, as for any model of another architecture.
        """
        path = source.path
        try:
            await self._host.switch(
                source.model, adapter=source.adapter, timeout_s=self._load_timeout_s
            )
        except ModelLoadError as exc:
            if exc.kind != "architecture":
                raise
            log.info("starting a second model host: %s", exc.message)
            return False
        except HostGone:
            log.warning("the model host exited during the swap; starting one for %s", path)
            return False
        return True

    async def close(self) -> None:
        """Stop every host this object started (after letting in-flight requests finish)."""
        for task in list(self._retiring):
            with contextlib.suppress(Exception):
                await task
        await self._host.close()

    @staticmethod
    async def _retire(host: HostClient) -> None:
        await host.drain()
        await host.close()
        log.info("stopped the model host for %s", host.model)


__all__ = ["ModelLoadError", "ModelSource", "NoPreviousModel", "ServedModel"]
