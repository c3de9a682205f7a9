"""OpenTelemetry metrics and spans for a `SessionManager` (`pip install coatcheck[otel]`).

`instrument(manager)` turns the manager's events into metrics, times its store calls and,
given a tracer provider, wraps each store call in a span::

    from coatcheck.otel import instrument
    instrumentation = instrument(manager, meter_provider=..., tracer_provider=...)
    ...
    instrumentation.close()         # stop: the drivers' store calls are plain again

Instruments (meter `coatcheck`):

- `coatcheck.session.events` (counter, `{event}`): every `coatcheck.events.Event`, with the
  attributes `coatcheck.event.kind`, `coatcheck.event.outcome` and `coatcheck.session.mode`.
  Counted on the event hub's thread, never in the request.
- `coatcheck.store.duration` (histogram, seconds): each store call the drivers make for a
  request (`load`, `save`, `rotate`, `delete`, `admit`...), with `db.system`,
  `db.operation.name` and, when it raised, `error.type`.
- `coatcheck.revocation.staleness` (gauge, seconds) and `coatcheck.revocation.size` (gauge,
  `{entry}`): how old this process's copy of the revocation list is and how many entries
  it holds, for a manager that accepts tokens (client-side, or migrating from it).

Spans (`coatcheck.store <operation>`, kind CLIENT, with `db.system` and `db.operation.name`)
are made only when a `tracer_provider` is given; a store call that raises records the
exception's type (`error.type`) and sets the span's status to error. The session's ID
never appears in a metric or a span: events carry a salted hash, and store calls are
timed without their arguments.

This module imports `opentelemetry`; nothing else in coatcheck imports this module.
"""

from __future__ import annotations

import inspect
import time
from collections.abc import Awaitable, Callable, Iterable
from typing import Any

from opentelemetry import metrics, trace
from opentelemetry.metrics import CallbackOptions, Observation

from .events import Event
from .manager import SessionManager

__all__ = ["Instrumentation", "instrument"]

#: Store class module -> `db.system` (OpenTelemetry's names where it has one).
_SYSTEMS = {
    "coatcheck.stores.redis": "redis",
    "coatcheck.stores.postgres": "postgresql",
    "coatcheck.stores.sqlite": "sqlite",
    "coatcheck.stores.memory": "coatcheck.memory",
}


#: Histogram buckets, seconds: from a memory store's microseconds to a stalled network store.
BUCKETS = (0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0)


def db_system(store: object) -> str:
    """The `db.system` of `store`: "redis", "postgresql", "sqlite", "coatcheck.memory", or
    the lower-cased class name of a store coatcheck does not ship."""
    cls = type(store)
    system = _SYSTEMS.get(cls.__module__)
    if system is None:
        inner = getattr(store, "store", None) or getattr(store, "_store", None)
        if inner is not None and inner is not store:
            system = _SYSTEMS.get(type(inner).__module__)
    return system if system is not None else cls.__name__.lower()


class Instrumentation:
    """What `instrument` set up on one manager; `close()` removes it."""

    def __init__(
        self,
        manager: SessionManager,
        meter_provider: metrics.MeterProvider | None = None,
        tracer_provider: trace.TracerProvider | None = None,
    ) -> None:
        from . import __version__

        self.manager = manager
        meter = metrics.get_meter("coatcheck", __version__, meter_provider=meter_provider)
        self.events = meter.create_counter(
            "coatcheck.session.events",
            unit="{event}",
            description="Session lifecycle and security events, by kind and outcome",
        )
        self.store_duration = meter.create_histogram(
            "coatcheck.store.duration",
            unit="s",
            description="Duration of the session store calls made for requests",
            # Seconds: the SDK's default buckets (0 to 10000) are for milliseconds.
            explicit_bucket_boundaries_advisory=BUCKETS,
        )
        self.tracer: trace.Tracer | None = None
        if tracer_provider is not None:
            self.tracer = trace.get_tracer(
                "coatcheck", __version__, tracer_provider=tracer_provider
            )
        if manager.client_mode is not None:
            meter.create_observable_gauge(
                "coatcheck.revocation.staleness",
                callbacks=[self._staleness],
                unit="s",
                description="Seconds since this process's revocation list was last synced",
            )
            meter.create_observable_gauge(
                "coatcheck.revocation.size",
                callbacks=[self._size],
                unit="{entry}",
                description="Entries in this process's revocation list",
            )
        self._closed = False
        manager.events.subscribe(self.record)
        manager.events.instrument = self.wrap

    def __repr__(self) -> str:
        return f"<Instrumentation of {self.manager!r}>"

    def close(self) -> None:
        """Stop counting events and timing store calls (the instruments stay registered)."""
        if not self._closed:
            self._closed = True
            self.manager.events.unsubscribe(self.record)
            if self.manager.events.instrument == self.wrap:
                self.manager.events.instrument = None

    def record(self, event: Event) -> None:
        """Count `event` (the hub's subscriber)."""
        self.events.add(
            1,
            {
                "coatcheck.event.kind": event.kind,
                "coatcheck.event.outcome": event.outcome,
                "coatcheck.session.mode": event.mode,
            },
        )

    def wrap(self, store: object) -> object:
        """`store`, its calls timed and traced (the hub's `instrument`)."""
        if isinstance(store, _Instrumented):
            return store
        return _Instrumented(store, self)

    def _staleness(self, options: CallbackOptions) -> Iterable[Observation]:
        client = self.manager.client_mode
        if client is None:
            return []
        synced_at = client.revocation_list.synced_at
        if synced_at == float("-inf"):
            return []  # never synced yet: no age to report
        return [Observation(max(self.manager.clock() - synced_at, 0.0))]

    def _size(self, options: CallbackOptions) -> Iterable[Observation]:
        client = self.manager.client_mode
        return [] if client is None else [Observation(len(client.revocation_list))]


def instrument(
    manager: SessionManager,
    *,
    meter_provider: metrics.MeterProvider | None = None,
    tracer_provider: trace.TracerProvider | None = None,
) -> Instrumentation:
    """Metrics (and spans, given `tracer_provider`) for `manager`; the global providers of
    `opentelemetry.metrics` when `meter_provider` is None."""
    return Instrumentation(manager, meter_provider, tracer_provider)


class _Instrumented:
    """A store whose public methods are timed, and traced when there is a tracer; anything
    else passes through. Made per request, so it holds nothing but the two references."""

    __slots__ = ("_instrumentation", "_store", "_system")

    def __init__(self, store: object, instrumentation: Instrumentation) -> None:
        self._store = store
        self._instrumentation = instrumentation
        self._system = db_system(store)

    def __repr__(self) -> str:
        return f"<instrumented {self._store!r}>"

    def __getattr__(self, name: str) -> Any:
        value = getattr(self._store, name)
        if name.startswith("_") or not callable(value):
            return value
        return self._timed(name, value)

    def _timed(self, operation: str, call: Callable[..., Any]) -> Callable[..., Any]:
        inst = self._instrumentation
        attributes = {"db.system": self._system, "db.operation.name": operation}

        def timed(*args: Any, **kwargs: Any) -> Any:
            span = _start(inst.tracer, operation, attributes)
            start = time.perf_counter()
            try:
                result = call(*args, **kwargs)
            except BaseException as exc:
                _ended(inst, span, attributes, start, exc)
                raise
            if inspect.isawaitable(result):
                return _awaited(inst, span, attributes, start, result)
            _ended(inst, span, attributes, start, None)
            return result

        return timed


def _start(
    tracer: trace.Tracer | None, operation: str, attributes: dict[str, str]
) -> trace.Span | None:
    if tracer is None:
        return None
    return tracer.start_span(
        f"coatcheck.store {operation}", kind=trace.SpanKind.CLIENT, attributes=attributes
    )


async def _awaited(
    inst: Instrumentation,
    span: trace.Span | None,
    attributes: dict[str, str],
    start: float,
    result: Awaitable[Any],
) -> Any:
    try:
        value = await result
    except BaseException as exc:
        _ended(inst, span, attributes, start, exc)
        raise
    _ended(inst, span, attributes, start, None)
    return value


def _ended(
    inst: Instrumentation,
    span: trace.Span | None,
    attributes: dict[str, str],
    start: float,
    exc: BaseException | None,
) -> None:
    elapsed = time.perf_counter() - start
    if exc is not None:
        attributes = {**attributes, "error.type": type(exc).__qualname__}
    inst.store_duration.record(elapsed, attributes)
    if span is not None:
        if exc is not None:  # (the type only: a message could quote a key or a URL)
            span.set_status(trace.Status(trace.StatusCode.ERROR, type(exc).__qualname__))
            span.set_attribute("error.type", type(exc).__qualname__)
        span.end()
