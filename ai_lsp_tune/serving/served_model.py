"""The served local model, hot-swappable with no failed request.

A swap to a model of the served model's architecture (every fine-tune of it, its base, a
rollback) happens in place: the running host loads the new weights into the model it holds,
between two requests; the ones sent before finish on the old weights, the next on the new.

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
from collections.abc import Sequence

from ai_lsp_tune.serving.client import HostClient, HostGone, ModelLoadError
from ai_lsp_tune.serving.protocol import ChatMessage, Generation
from ai_lsp_tune.serving.registry import ModelRegistry

log = logging.getLogger(__name__)
MAX_RESTARTS = 3
RESTART_WINDOW_S = 60.0


class NoPreviousModel(RuntimeError):
    """Rollback asked for, but no model was served before this one."""


class ServedModel:
    """Routes generations to the current model host; swaps and rolls back between hosts."""

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
        self._swap_lock = asyncio.Lock()
        self._retiring: set[asyncio.Task[None]] = set()
        self._restarts: list[float] = []  # monotonic times of recent restarts

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
        host = await HostClient.start(model, load_timeout_s=load_timeout_s)
        return cls(
            host, previous_path=previous_path, registry=registry, load_timeout_s=load_timeout_s
        )

    @property
    def current_path(self) -> str:
        return self._host.model

    @property
    def previous_path(self) -> str | None:
        """The model a rollback serves (the registry's trail when there is one)."""
        if self._registry is not None:
            return self._registry.previous
        return self._previous_path

    @property
    def swapping(self) -> bool:
        return self._swap_lock.locked()

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
        async with self._swap_lock:
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
            self._host = await HostClient.start(gone.model, load_timeout_s=self._load_timeout_s)

    async def swap(self, path: str, *, rollback: bool = False) -> None:
        """Serve ``path`` from now on; raise ModelLoadError (old model kept) if it cannot load."""
        async with self._swap_lock:
            old_path = self._host.model
            if not await self._switch_in_place(path):
                new_host = await HostClient.start(path, load_timeout_s=self._load_timeout_s)
                old_host, self._host = self._host, new_host
                task = asyncio.create_task(self._retire(old_host), name=f"retire-{old_path}")
                self._retiring.add(task)
                task.add_done_callback(self._retiring.discard)
            self._previous_path = old_path
            if self._registry is not None and rollback:
                self._registry.record_rollback()
            elif self._registry is not None:
                self._registry.record_swap(served=path, previous=old_path)
            log.info("now serving %s (was %s)", path, old_path)

    async def _switch_in_place(self, path: str) -> bool:
        """Load ``path`` into the running host; False when it needs a host of its own."""
        try:
            await self._host.switch(path, timeout_s=self._load_timeout_s)
        except ModelLoadError as exc:
            if exc.kind != "architecture":
                raise
            log.info("starting a second model host: %s", exc.message)
            return False
        except HostGone:
            log.warning("the model host exited during the swap; starting one for %s", path)
            return False
        return True

    async def rollback(self) -> None:
        """Serve the model served before this one (one step back per call, down to the base)."""
        previous = self.previous_path
        if previous is None:
            raise NoPreviousModel("there is no previous model to roll back to")
        await self.swap(previous, rollback=self._registry is not None)

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


__all__ = ["ModelLoadError", "NoPreviousModel", "ServedModel"]
