"""The listener of a revocation push feed, written once for Redis pub/sub and PostgreSQL
LISTEN/NOTIFY.

A push feed hands each new revocation entry to this process as it is written, so that a
`RevocationList` learns of it before its next poll. What the two feeds share is here:
running the listener (a daemon thread for a sync store, a task in the event loop for an
async one), reconnecting `RECONNECT_DELAY` seconds after the connection broke, stopping on
`close()` / `aclose()`, and handing every decoded entry to the callbacks, skipping payloads
that are not entries. A backend supplies only what differs: a generator that connects,
subscribes and yields what arrives (`SUBSCRIBED` once it listens, each payload, `None`
whenever a wait of `POLL_INTERVAL` seconds ended, so that a sync listener can check
whether to stop), the errors that mean "the server is away", and how to decode a payload.

A push is delivered at most once: a message sent while the listener reconnects is lost.
The drivers' poll every `staleness` seconds stays the resync that corrects that, so a
listener only shortens the delay and correctness never depends on it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
from collections.abc import AsyncGenerator, Callable, Generator
from typing import Any

from ..revocation import Revocation

__all__ = ["POLL_INTERVAL", "RECONNECT_DELAY", "SUBSCRIBED", "AsyncListener", "Listener"]

logger = logging.getLogger("coatcheck.revocation")

#: Seconds between a listener's reconnection attempts while the server is away.
RECONNECT_DELAY = 0.5
#: Seconds a listener waits for a message before checking whether it should stop.
POLL_INTERVAL = 0.2
#: What a backend's message generator yields once it is subscribed (listening).
SUBSCRIBED = object()

Callback = Callable[[Revocation], None]
#: A payload to the entry it carries; None to skip it quietly; ValueError or TypeError if it
#: is not an entry (skipped with a warning).
Decoder = Callable[[Any], Revocation | None]


class _Listening:
    """What both listeners share: the callbacks, the `listening` flag, delivery."""

    def __init__(self, decode: Decoder, errors: tuple[type[BaseException], ...]) -> None:
        self._decode = decode
        self._errors = errors
        self._callbacks: list[Callback] = []
        #: Set while the listener is subscribed (cleared while it reconnects).
        self.listening = threading.Event()

    def _receive(self, message: object) -> None:
        if message is SUBSCRIBED:
            self.listening.set()
        elif message is not None:
            self._deliver(message)

    def _deliver(self, payload: object) -> None:
        """Hand one pushed entry to every callback; a malformed payload or a failing
        callback is logged and skipped, never fatal to the listener."""
        try:
            entry = self._decode(payload)
        except (ValueError, TypeError):
            logger.warning("ignored a message on the revocation feed that is not an entry")
            return
        if entry is None:
            return
        for callback in self._callbacks:
            try:
                callback(entry)
            except Exception:
                logger.exception("revocation listener callback failed")

    def _failed(self, exc: Exception) -> None:
        """After the connection broke: quietly if the server is away, else loudly (a
        listener that dies silently would go unnoticed), and reconnect either way."""
        self.listening.clear()
        if not isinstance(exc, self._errors):
            logger.exception("revocation listener failed; reconnecting")


class Listener(_Listening):
    """A sync store's listener: a daemon thread, started by the first `listen`."""

    def __init__(
        self,
        messages: Callable[[], Generator[object, None, None]],
        *,
        decode: Decoder,
        errors: tuple[type[BaseException], ...],
        join_timeout: float,  # seconds `stop` waits for the thread
    ) -> None:
        super().__init__(decode, errors)
        self._messages = messages
        self._join_timeout = join_timeout
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    @property
    def running(self) -> bool:
        """Whether the listener thread was started and not stopped."""
        return self._thread is not None

    def listen(self, callback: Callback) -> None:
        """Hand every entry pushed from now on to `callback` (called on the listener's
        thread). The first call starts the listener; `stop()` stops it."""
        with self._lock:
            self._callbacks.append(callback)
            if self._thread is None:
                self._stop.clear()
                self._thread = threading.Thread(
                    target=self._run, name="coatcheck-revocations", daemon=True
                )
                self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            messages = self._messages()
            try:
                for message in messages:
                    if self._stop.is_set():
                        break
                    self._receive(message)
            except Exception as exc:
                self._failed(exc)
                self._stop.wait(RECONNECT_DELAY)
            finally:
                self.listening.clear()
                messages.close()

    def stop(self) -> None:
        """Stop the thread (waiting at most `join_timeout` seconds) and drop the callbacks."""
        with self._lock:
            thread, self._thread = self._thread, None
            self._callbacks.clear()
        if thread is not None:
            self._stop.set()
            thread.join(timeout=self._join_timeout)


class AsyncListener(_Listening):
    """An async store's listener: a task in the event loop of the first `listen`."""

    def __init__(
        self,
        messages: Callable[[], AsyncGenerator[object, None]],
        *,
        decode: Decoder,
        errors: tuple[type[BaseException], ...],
    ) -> None:
        super().__init__(decode, errors)
        self._messages = messages
        self._task: asyncio.Task[None] | None = None

    def listen(self, callback: Callback) -> None:
        """Hand every entry pushed from now on to `callback`, from a task in the running
        event loop (call it from inside that loop). `stop()` stops it."""
        self._callbacks.append(callback)
        if self._task is None or self._task.done():
            self._task = asyncio.get_running_loop().create_task(self._run())

    async def _run(self) -> None:
        while True:
            messages = self._messages()
            try:
                async for message in messages:
                    self._receive(message)
            except Exception as exc:
                self._failed(exc)
                await asyncio.sleep(RECONNECT_DELAY)
            finally:
                self.listening.clear()
                await messages.aclose()

    async def stop(self) -> None:
        """Cancel the task and drop the callbacks."""
        task, self._task = self._task, None
        self._callbacks.clear()
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
