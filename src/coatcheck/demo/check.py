"""`coatcheck demo --check`: every strategy against a real cluster, judged.

For each strategy a real `coatcheck demo` runs as a subprocess (replicas, balancer and
all), and a scripted client plays three devices of one user:

1. device A logs in and adds to its cart over many requests through the balancer; each
   response must show A's user and the whole cart so far ("right session");
2. A's session is read back directly on every replica;
3. the replica that served A last is killed (SIGKILL) and A goes on; then it is restarted;
4. device B logs in as the same user, finds A in "my sessions" and revokes it; every
   replica is polled until none accepts A's session any more (how many ms that took; a
   probe sent later than the strategy's `revocation_within` that still sees A is a
   deviation);
5. device C logs in; B logs out its other devices, then itself; B and C must then be
   logged out on every replica (polled the same way).

The client is `http.client` with a hand-kept cookie jar: Python's cookie jars drop
`Secure` cookies over plain http, and the demo keeps coatcheck's default `__Host-` cookie.
For strategies whose `carrier` is "header" the devices act as the JavaScript client does:
they send `Authorization: Bearer <token>`, keep the token a `Session-Token` response header
hands out (an empty one: forget it), send `Session-Transport: header` while they have none,
and keep no cookies.
"""

from __future__ import annotations

import contextlib
import http.client
import json
import os
import select
import signal
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, TextIO
from urllib.parse import urlencode

from .app import MAX_CART
from .strategies import Settings, Strategy

__all__ = ["CheckResult", "Device", "check_strategy", "run_checks"]

USER = "alice"
REQUEST_TIMEOUT = 10.0  # seconds for one request
START_TIMEOUT = 60.0  # seconds for a demo cluster to come up
REVOKE_TIMEOUT = 3.0  # seconds to wait for a revocation to show on every replica
#: Seconds added to a strategy's `revocation_within` before a probe that still sees a
#: revoked session counts as late: the replicas measure staleness on their own clocks.
CLOCK_SLACK = 0.05


@dataclass(frozen=True, slots=True)
class Reply:
    status: int
    body: dict[str, Any]
    served_by: str | None
    seconds: float

    @property
    def user(self) -> str | None:
        session = self.body.get("session") or {}
        return session.get("user")

    @property
    def cart(self) -> list[str]:
        session = self.body.get("session") or {}
        return list((session.get("data") or {}).get("cart", []))

    @property
    def session_id(self) -> str | None:
        return (self.body.get("session") or {}).get("id")


class Device:
    """One browser of the scripted client: a user agent and its cookies, or with `bearer`
    its token (the header transport, as `coatcheck.js` carries it)."""

    def __init__(self, port: int, name: str, *, bearer: bool = False) -> None:
        self.port = port
        self.name = name
        self.bearer = bearer
        self.cookies: dict[str, str] = {}
        self.token: str | None = None
        self.csrf: str | None = None
        #: `Set-Cookie` headers a bearer device was sent (it keeps none of them).
        self.stray_cookies = 0

    def __repr__(self) -> str:
        return f"Device({self.name!r}, bearer={self.bearer})"  # never the cookies or token

    def copy(self, name: str) -> Device:
        """Another device holding the same cookies or token (a copied credential)."""
        twin = Device(self.port, name, bearer=self.bearer)
        twin.cookies, twin.token, twin.csrf = dict(self.cookies), self.token, self.csrf
        return twin

    def request(
        self, method: str, path: str, form: dict[str, str] | None = None, *, port: int | None = None
    ) -> Reply:
        """Send one request; `port` sends it to a replica directly, as a probe whose
        cookie changes are not kept."""
        probe = port is not None
        target = self.port if port is None else port
        headers = {
            "Host": f"localhost:{target}",
            "User-Agent": f"coatcheck-check/{self.name}",
            "Accept": "application/json",
        }
        if self.bearer:
            if self.token:
                headers["Authorization"] = f"Bearer {self.token}"
            else:
                headers["Session-Transport"] = "header"
        elif self.cookies:
            headers["Cookie"] = "; ".join(f"{k}={v}" for k, v in self.cookies.items())
        body = None
        if form is not None:
            body = urlencode(form)
            headers["Content-Type"] = "application/x-www-form-urlencoded"
            if self.csrf:
                headers["X-CSRF-Token"] = self.csrf
        started = time.perf_counter()
        connection = http.client.HTTPConnection("127.0.0.1", target, timeout=REQUEST_TIMEOUT)
        try:
            connection.request(method, path, body=body, headers=headers)
            response = connection.getresponse()
            raw = response.read()
        except (OSError, http.client.HTTPException):
            return Reply(0, {}, None, time.perf_counter() - started)
        finally:
            connection.close()
        seconds = time.perf_counter() - started
        if not probe:
            set_cookies = response.headers.get_all("set-cookie") or ()
            if self.bearer:
                self.stray_cookies += len(set_cookies)
                token = response.getheader("session-token")
                if token is not None:
                    self.token = token.strip() or None
            else:
                for header in set_cookies:
                    self._keep(header)
        try:
            parsed = json.loads(raw) if raw else {}
        except ValueError:
            parsed = {}
        if not isinstance(parsed, dict):
            parsed = {}
        if not probe and parsed.get("csrf_token"):
            self.csrf = parsed["csrf_token"]
        return Reply(response.status, parsed, response.getheader("x-served-by"), seconds)

    def _keep(self, header: str) -> None:
        pair, *attributes = header.split(";")
        name, _, value = pair.partition("=")
        gone = any(a.strip().lower() == "max-age=0" for a in attributes)
        if gone or not value:
            self.cookies.pop(name.strip(), None)
        else:
            self.cookies[name.strip()] = value.strip()


@dataclass
class CheckResult:
    """What one strategy did; `failures` lists where it differed from its expectations."""

    strategy: str
    requests: int = 0
    right: int = 0
    before_death: int = 0
    right_before_death: int = 0
    replicas: int = 0
    read_back: int = 0
    survived: bool | None = None
    revocation_ms: float | None = None
    revocation_bound_ms: float | None = None
    revocation_late: bool = False
    revocation_note: str = ""
    logout_everywhere: bool | None = None
    logout_ms: float | None = None
    stray_cookies: int = 0
    latencies: list[float] = field(default_factory=list)
    failures: list[str] = field(default_factory=list)
    skipped: str | None = None

    @property
    def share(self) -> float:
        return self.right / self.requests if self.requests else 0.0

    def percentile(self, q: float) -> float | None:
        if not self.latencies:
            return None
        ordered = sorted(self.latencies)
        return ordered[min(len(ordered) - 1, int(q * len(ordered)))] * 1000

    def as_dict(self) -> dict[str, Any]:
        return {
            "strategy": self.strategy,
            "skipped": self.skipped,
            "requests": self.requests,
            "right_session": round(self.share, 4),
            "right_before_death": self.right_before_death,
            "requests_before_death": self.before_death,
            "read_back": f"{self.read_back}/{self.replicas}",
            "survived_replica_death": self.survived,
            "revocation_ms": None if self.revocation_ms is None else round(self.revocation_ms, 1),
            "revocation_bound_ms": _round(self.revocation_bound_ms),
            "revocation_late": self.revocation_late,
            "revocation_note": self.revocation_note,
            "logout_everywhere": self.logout_everywhere,
            "logout_ms": None if self.logout_ms is None else round(self.logout_ms, 1),
            "latency_p50_ms": _round(
                statistics.median(self.latencies) * 1000 if self.latencies else None
            ),
            "latency_p99_ms": _round(self.percentile(0.99)),
            "ok": not self.failures and self.skipped is None,
            "failures": self.failures,
        }


def _round(value: float | None) -> float | None:
    return None if value is None else round(value, 2)


class Scenario:
    """The scripted run against one cluster (see the module docstring)."""

    def __init__(
        self, strategy: Strategy, port: int, requests: int, progress: Callable[[str], None]
    ) -> None:
        self.strategy = strategy
        self.port = port
        self.n = requests
        self.say = progress
        bound = strategy.expect.revocation_within
        self.result = CheckResult(
            strategy.name, revocation_bound_ms=None if bound is None else bound * 1000
        )
        self.bearer = strategy.carrier == "header"
        self.devices: list[Device] = []
        self.a = self.device("device-a")
        self.expected: list[str] = []

    def device(self, name: str) -> Device:
        """A new device of the user, carrying its session as the strategy's browser does."""
        device = Device(self.port, name, bearer=self.bearer)
        self.devices.append(device)
        return device

    @property
    def cart(self) -> list[str]:
        """The cart A should see: what it added, as far as a cart keeps items."""
        return self.expected[-MAX_CART:]

    def via(
        self, device: Device, method: str, path: str, form: dict[str, str] | None = None
    ) -> Reply:
        reply = device.request(method, path, form)
        self.result.latencies.append(reply.seconds)
        return reply

    def replicas(self) -> list[dict[str, Any]]:
        status = self.a.request("GET", "/_cluster/status").body
        return list(status.get("replicas", []))

    def add_to_cart(self, count: int, label: str) -> tuple[int, str | None]:
        """`count` cart additions by A; returns how many saw the right session, and the
        replica that served the last one."""
        right, last = 0, None
        for i in range(count):
            item = f"{label}-{i}"
            self.expected.append(item)
            reply = self.via(self.a, "POST", "/cart/add", {"item": item})
            ok = reply.status == 200 and reply.user == USER and reply.cart == self.cart
            right += ok
            last = reply.served_by or last
        self.result.requests += count
        self.result.right += right
        return right, last

    def logged_in_on_every_replica(self, device: Device) -> list[bool]:
        """For each live replica, whether it sees `device` logged in (probes)."""
        return [
            device.request("GET", "/api/session", port=r["port"]).user == USER
            for r in self.replicas()
            if r["up"]
        ]

    def run(self) -> CheckResult:
        r = self.result
        name = self.strategy.name
        self.via(self.a, "GET", "/api/state")
        login = self.via(self.a, "POST", "/login", {"user": USER})
        if login.user != USER:
            r.failures.append("could not log in")
            return r
        right, last = self.add_to_cart(self.n, "before")
        r.before_death, r.right_before_death = self.n, right
        self.say(
            f"[{name}] {self.n} cart requests through the balancer: {right} saw the right session"
        )

        replicas = self.replicas()
        r.replicas = len(replicas)
        seen = [self.a.request("GET", "/api/session", port=x["port"]) for x in replicas]
        r.read_back = sum(s.user == USER and s.cart == self.cart for s in seen)
        self.say(f"[{name}] read back directly on every replica: {r.read_back}/{r.replicas}")

        victim = last or replicas[0]["name"]
        self.a.request("POST", f"/_cluster/kill?replica={victim}", {})
        after = max(2 * len(replicas), self.n // 4)
        right, _ = self.add_to_cart(after, "after")
        r.survived = right == after
        self.say(
            f"[{name}] killed {victim} (it served the last request); {after} more "
            f"requests: {right} saw the right session"
        )
        restarted = self.a.request("POST", f"/_cluster/restart?replica={victim}", {})
        self.say(
            f"[{name}] restarted {victim}: {'ok' if restarted.status == 200 else restarted.status}"
        )

        self.revoke_from_second_device()
        self.log_out_everywhere()
        r.stray_cookies = sum(d.stray_cookies for d in self.devices)
        return r

    def wait_refused(self, devices: list[Device]) -> float | None:
        """Probe every live replica with each device's session until none accepts any;
        returns the milliseconds that took (None: not within `REVOKE_TIMEOUT`). A round
        of probes sent after the strategy's `revocation_within` that still finds one
        accepted marks the result `revocation_late`. A strategy that promises no bound
        gets one round: nothing would reach its other replicas by waiting."""
        bound = self.strategy.expect.revocation_within
        timeout = 0.0 if bound is None else REVOKE_TIMEOUT
        start = time.perf_counter()
        while True:
            sent = time.perf_counter() - start
            if not any(any(self.logged_in_on_every_replica(d)) for d in devices):
                return (time.perf_counter() - start) * 1000
            if bound is not None and sent > bound + CLOCK_SLACK:
                self.result.revocation_late = True
            if time.perf_counter() - start >= timeout:
                return None
            time.sleep(0.005)

    def revoke_from_second_device(self) -> None:
        r, name = self.result, self.strategy.name
        if self.via(self.a, "GET", "/api/state").user != USER:
            self.via(self.a, "POST", "/login", {"user": USER})
        state = self.via(self.a, "GET", "/api/state")
        b = self.device("device-b")
        self.via(b, "POST", "/login", {"user": USER})
        listed = self.via(b, "GET", "/api/state").body.get("my_sessions", [])
        target = state.session_id if state.user == USER else None
        if target is None or target not in {s.get("id") for s in listed}:
            r.revocation_note = "not listed"
            self.say(f"[{name}] device B cannot see device A's session: nothing to revoke")
            return
        revoked = self.via(b, "POST", "/sessions/revoke", {"id": target})
        if revoked.status != 200:
            r.revocation_note = f"revoke answered {revoked.status}"
            return
        r.revocation_ms = self.wait_refused([self.a])
        if r.revocation_ms is None:
            waited = self.strategy.expect.revocation_within is not None
            r.revocation_note = (
                f"still valid after {REVOKE_TIMEOUT:.0f} s" if waited else "not gone"
            )
            self.say(f"[{name}] device B revoked device A, but A is still logged in somewhere")
            return
        bound = "" if r.revocation_bound_ms is None else f" (bound: {r.revocation_bound_ms:.0f} ms)"
        self.say(
            f"[{name}] device B revoked device A: gone on every replica after "
            f"{r.revocation_ms:.0f} ms{bound}"
        )

    def log_out_everywhere(self) -> None:
        r, name = self.result, self.strategy.name
        b, c = self.device("device-b2"), self.device("device-c")
        logged_in = all(self.via(d, "POST", "/login", {"user": USER}).user == USER for d in (b, c))
        c_before = self.logged_in_on_every_replica(c)
        others = self.via(b, "POST", "/sessions/logout-others", {})
        b_copy = b.copy("device-b2")
        self.via(b, "POST", "/logout", {})
        # B's copy: had the logout only made B forget its token, the copy would still work.
        r.logout_ms = self.wait_refused([c, b_copy])
        r.logout_everywhere = (
            logged_in and all(c_before) and others.user == USER and r.logout_ms is not None
        )
        self.say(
            f"[{name}] log out other devices, then log out: "
            + (
                f"gone everywhere after {r.logout_ms:.0f} ms"
                if r.logout_everywhere
                else "not gone everywhere"
            )
        )


def judge(strategy: Strategy, r: CheckResult) -> None:
    """Record in `r.failures` each way the run differed from `strategy.expect`."""
    e = strategy.expect
    keeps = r.before_death > 0 and r.right_before_death == r.before_death
    if keeps != e.keeps_sessions:
        r.failures.append(
            "expected every request to see the right session while all replicas were up"
            if e.keeps_sessions
            else "expected sessions to be lost across replicas, none was"
        )
    if e.keeps_sessions and strategy.shared_store and r.read_back != r.replicas:
        r.failures.append(f"session readable on {r.read_back}/{r.replicas} replicas, not all")
    if e.survives_replica_death is not None and r.survived != e.survives_replica_death:
        r.failures.append(
            "expected the session to "
            + ("survive" if e.survives_replica_death else "be lost with")
            + " its replica's death"
        )
    if e.revocation_everywhere is not None:
        everywhere = r.revocation_ms is not None and bool(r.logout_everywhere)
        if everywhere != e.revocation_everywhere:
            r.failures.append(
                "expected revocation and log-out to "
                + ("reach" if e.revocation_everywhere else "miss")
                + " every replica"
            )
    if e.revocation_within is not None and r.revocation_late:
        r.failures.append(
            f"a replica still accepted a revoked session more than "
            f"{e.revocation_within * 1000:.0f} ms after the revocation"
        )
    if strategy.carrier == "header" and r.stray_cookies:
        r.failures.append(f"the header transport answered with {r.stray_cookies} Set-Cookie")


def check_strategy(
    strategy: Strategy,
    *,
    replicas: int,
    requests: int,
    store_url: str | None,
    progress: Callable[[str], None],
    encrypted: bool = False,
) -> CheckResult:
    """Start a demo cluster for `strategy`, run the scenario, stop the cluster.
    `encrypted` asks client-side strategies for encrypted tokens."""
    reason = strategy.unavailable(Settings(store_url=store_url, encrypted=encrypted))
    if reason is not None:
        progress(f"[{strategy.name}] skipped: {reason}")
        return CheckResult(strategy.name, skipped=reason)
    command = [
        sys.executable,
        "-m",
        "coatcheck",
        "demo",
        "--strategy",
        strategy.name,
        "--replicas",
        str(replicas),
        "--port",
        "0",
        "--exit-with-parent",
    ]
    if store_url is not None and strategy.shared_store:
        command += ["--store", store_url]
        problem = strategy.store_problem(store_url)
        if problem is not None:
            progress(
                f"[{strategy.name}] --store not used ({problem}): the cluster uses a "
                "SQLite file instead"
            )
    if encrypted and strategy.client_side:
        command.append("--encrypted")
    progress(f"[{strategy.name}] starting {replicas} replicas and the balancer…")
    demo = subprocess.Popen(  # noqa: S603 - our own interpreter and module
        command, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )
    try:
        port = _wait_for_url(demo)
        progress(f"[{strategy.name}] cluster up: http://localhost:{port}/ ({strategy.balancing})")
        result = Scenario(strategy, port, requests, progress).run()
    except RuntimeError as exc:
        result = CheckResult(strategy.name, failures=[str(exc)])
    finally:
        _stop(demo)
        _close(demo)
    judge(strategy, result)
    verdict = "as expected" if not result.failures else "; ".join(result.failures)
    progress(f"[{strategy.name}] {verdict}")
    return result


def _wait_for_url(demo: subprocess.Popen[bytes]) -> int:
    assert demo.stdout is not None  # noqa: S101 - created with stdout=PIPE
    deadline = time.monotonic() + START_TIMEOUT
    buffer = b""
    while time.monotonic() < deadline:
        ready, _, _ = select.select([demo.stdout], [], [], 0.1)
        if ready:
            chunk = os.read(demo.stdout.fileno(), 4096)
            if not chunk:
                break
            buffer += chunk
            for line in buffer.decode(errors="replace").splitlines():
                if line.startswith("coatcheck demo: http://localhost:"):
                    return int(line.rsplit(":", 1)[1].strip("/ "))
        elif demo.poll() is not None:
            break
    _stop(demo)
    errors = demo.stderr.read().decode(errors="replace") if demo.stderr else ""
    raise RuntimeError(f"the demo cluster did not start: {errors.strip()[-800:]}")


def _stop(demo: subprocess.Popen[bytes]) -> None:
    if demo.poll() is None:
        demo.send_signal(signal.SIGTERM)
        try:
            demo.wait(15)
        except subprocess.TimeoutExpired:
            demo.kill()
            demo.wait()


def _close(demo: subprocess.Popen[bytes]) -> None:
    for stream in (demo.stdout, demo.stderr):
        if stream is not None:
            with contextlib.suppress(OSError):
                stream.close()


def run_checks(
    strategies: list[Strategy],
    *,
    replicas: int,
    requests: int,
    store_url: str | None,
    progress: TextIO,
    encrypted: bool = False,
) -> list[CheckResult]:
    def say(line: str) -> None:
        print(line, file=progress, flush=True)

    results = []
    for strategy in strategies:
        results.append(
            check_strategy(
                strategy,
                replicas=replicas,
                requests=requests,
                store_url=store_url,
                progress=say,
                encrypted=encrypted,
            )
        )
    return results
