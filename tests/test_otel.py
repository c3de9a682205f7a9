"""`coatcheck.otel` (docs/observability.md): events become the `coatcheck.session.events`
counter, store calls the `coatcheck.store.duration` histogram and `coatcheck.store <op>`
spans, and the revocation list's age and size observable gauges; read back through the
OpenTelemetry SDK's `InMemoryMetricReader` and `InMemorySpanExporter`, through real HTTP
(the ASGI middleware under httpx), in both modes, on memory and SQLite."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, StatusCode

from coatcheck import ClientSide, KeyRing, ServerSide, SessionManager
from coatcheck.otel import db_system, instrument
from coatcheck.stores import MemoryRevocationStore, MemoryStore, SQLiteRevocationStore, SQLiteStore
from helpers import DownStore, FakeClock, client
from test_events import make_app

MODES = pytest.mark.parametrize("mode", ["server", "client"])
STORES = pytest.mark.parametrize("store", ["memory", "sqlite"])


def points(reader: InMemoryMetricReader) -> dict[str, list[Any]]:
    """Metric name -> its data points, from one collection."""
    found: dict[str, list[Any]] = {}
    data = reader.get_metrics_data()
    assert data is not None
    for resource in data.resource_metrics:
        for scope in resource.scope_metrics:
            assert scope.scope.name == "coatcheck"
            for metric in scope.metrics:
                found.setdefault(metric.name, []).extend(metric.data.data_points)
    return found


def manager_for(mode: str, store: str, tmp_path: Path, clock: FakeClock) -> SessionManager:
    if store == "memory":
        sessions: Any = MemoryStore(clock=clock)
        revocations: Any = MemoryRevocationStore(clock=clock)
    else:
        sessions = SQLiteStore(tmp_path / "s.db", clock=clock)
        revocations = SQLiteRevocationStore(tmp_path / "s.db", clock=clock)
    if mode == "server":
        return SessionManager(ServerSide(sessions), clock=clock)
    chosen = ClientSide(KeyRing([b"o" * 32]), store=sessions, revocations=revocations)
    return SessionManager(chosen, clock=clock)


@pytest.fixture
def telemetry() -> Iterator[tuple[InMemoryMetricReader, InMemorySpanExporter, Any, Any]]:
    reader = InMemoryMetricReader()
    meters = MeterProvider(metric_readers=[reader])
    spans = InMemorySpanExporter()
    tracers = TracerProvider()
    tracers.add_span_processor(SimpleSpanProcessor(spans))
    yield reader, spans, meters, tracers
    meters.shutdown()
    tracers.shutdown()


@pytest.mark.anyio
@MODES
@STORES
async def test_events_store_calls_and_gauges(
    telemetry: Any, tmp_path: Path, mode: str, store: str
) -> None:
    reader, spans, meters, tracers = telemetry
    clock = FakeClock()
    manager = manager_for(mode, store, tmp_path, clock)
    instrumentation = instrument(manager, meter_provider=meters, tracer_provider=tracers)
    async with client(make_app(manager)) as http:
        assert (await http.post("/write")).status_code == 200
        assert (await http.post("/login")).status_code == 200
        assert (await http.get("/")).status_code == 200
    assert manager.events.flush(10)
    found = points(reader)

    counted = {
        (p.attributes["coatcheck.event.kind"], p.attributes["coatcheck.event.outcome"]): p.value
        for p in found["coatcheck.session.events"]
    }
    assert counted[("created", "ok")] == 1
    assert counted[("login", "ok")] == 1
    assert {p.attributes["coatcheck.session.mode"] for p in found["coatcheck.session.events"]} == {
        mode
    }

    system = "coatcheck.memory" if store == "memory" else "sqlite"
    durations = {p.attributes["db.operation.name"]: p for p in found["coatcheck.store.duration"]}
    assert {p.attributes["db.system"] for p in durations.values()} == {system}
    assert "save" in durations or "rotate" in durations or "admit" in durations
    assert all(p.count >= 1 and p.sum >= 0 for p in durations.values())
    if mode == "server":
        assert durations["load"].count >= 2  # the login's and the last request's

    finished = spans.get_finished_spans()
    assert finished
    for span in finished:
        operation = span.attributes["db.operation.name"]
        assert span.name == f"coatcheck.store {operation}"
        assert span.kind == SpanKind.CLIENT
        assert span.attributes["db.system"] == system
        assert span.status.status_code != StatusCode.ERROR

    if mode == "client":
        assert found["coatcheck.revocation.size"][0].value >= 1  # the login revoked a token
        assert found["coatcheck.revocation.staleness"][0].value >= 0
    else:
        assert "coatcheck.revocation.size" not in found

    instrumentation.close()
    assert manager.events.instrument is None and manager.events.subscribers == ()
    manager.events.close()


@pytest.mark.anyio
async def test_a_failing_store_call_is_an_error_span(telemetry: Any) -> None:
    reader, spans, meters, tracers = telemetry
    manager = SessionManager(ServerSide(DownStore()))
    instrument(manager, meter_provider=meters, tracer_provider=tracers)
    async with client(make_app(manager)) as http:
        assert (await http.post("/write")).status_code == 503
    assert manager.events.flush(10)
    manager.events.close()
    (span,) = spans.get_finished_spans()
    assert span.name == "coatcheck.store save"
    assert span.status.status_code == StatusCode.ERROR
    assert span.attributes["error.type"] == "StoreUnavailable"
    assert span.events == ()  # no exception message: it could quote a key
    (point,) = points(reader)["coatcheck.store.duration"]
    assert point.attributes["error.type"] == "StoreUnavailable"
    failed = [
        p
        for p in points(reader)["coatcheck.session.events"]
        if p.attributes["coatcheck.event.kind"] == "store_error"
    ]
    assert [p.value for p in failed] == [1]


def test_sync_drivers_are_timed_and_no_tracer_means_no_span(telemetry: Any) -> None:
    from coatcheck.drivers import commit_session, open_session
    from helpers import request

    reader, spans, meters, _ = telemetry
    manager = SessionManager(ServerSide(MemoryStore()))
    instrument(manager, meter_provider=meters)
    session = open_session(manager, request())
    session["k"] = 1
    commit_session(manager, session)
    operations = {
        p.attributes["db.operation.name"] for p in points(reader)["coatcheck.store.duration"]
    }
    assert operations == {"save"}
    assert spans.get_finished_spans() == ()
    manager.events.close()


def test_db_system_names() -> None:
    assert db_system(MemoryStore()) == "coatcheck.memory"
    assert db_system(object()) == "object"
