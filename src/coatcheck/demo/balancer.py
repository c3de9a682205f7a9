"""A small HTTP/1.1 load balancer (reverse proxy) for the demo, on asyncio streams.

One request per connection (`Connection: close` on both sides), bounded sizes and timeouts.
Two policies:

- `round-robin`: each request goes to the next replica; a replica that refuses the
  connection (it is down) is skipped and the next one tried, since the request never
  reached it.
- `sticky`: the first response pins the browser to its replica with a balancer cookie
  (`coatcheck-replica`, as HAProxy's `cookie ... insert`); later requests go there. When
  the pinned replica is down the request is redispatched to the next live replica and the
  browser re-pinned (HAProxy's `option redispatch`): the session it had is gone.

A replica that accepts the request but fails or stalls gives `502 Bad Gateway`, as does a
cluster with no live replica. Paths under `/_cluster/` are the balancer's own: the status
of the replicas, and kill / restart buttons (unsafe methods pass coatcheck's cross-origin
check, so another site cannot kill the demo's replicas).
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
from dataclasses import dataclass
from urllib.parse import parse_qs, urlsplit

from ..csrf import check_origin
from ..request import RequestInfo
from ..transports import find_cookie
from .cluster import Cluster, Replica, ReplicaFailed
from .strategies import Balancing

__all__ = ["PIN_COOKIE", "Balancer"]

PIN_COOKIE = "coatcheck-replica"
MAX_HEAD = 64 * 1024  # bytes of request or response head
MAX_BODY = 1024 * 1024  # bytes of request body
READ_TIMEOUT = 10.0  # seconds to receive a request from the client
CONNECT_TIMEOUT = 2.0  # seconds to connect to a replica
RESPONSE_TIMEOUT = 15.0  # seconds a replica may take for each read of its response
HOP_BY_HOP = frozenset(
    {
        "connection",
        "keep-alive",
        "proxy-connection",
        "te",
        "trailer",
        "upgrade",
        "transfer-encoding",
        "x-forwarded-for",
        "x-forwarded-proto",
    }
)


class BadRequest(Exception):
    pass


@dataclass(frozen=True, slots=True)
class Request:
    method: str
    target: str
    headers: list[tuple[str, str]]
    body: bytes

    def header(self, name: str) -> str | None:
        return next((v for k, v in self.headers if k.lower() == name), None)


class Balancer:
    """Spreads requests over `cluster`'s replicas with `policy`."""

    def __init__(self, cluster: Cluster, policy: Balancing) -> None:
        self.cluster = cluster
        self.policy = policy
        self._turn = itertools.count()

    async def serve(self, host: str, port: int) -> asyncio.Server:
        return await asyncio.start_server(self._handle, host, port, limit=MAX_HEAD)

    def candidates(self, request: Request) -> tuple[list[Replica], bool]:
        """Replicas to try in order, and whether the response must (re-)pin the client."""
        replicas = self.cluster.replicas
        start = next(self._turn) % len(replicas)
        order = replicas[start:] + replicas[:start]
        if self.policy == "round-robin":
            return order, False
        cookies = (find_cookie(v, PIN_COOKIE) for k, v in request.headers if k.lower() == "cookie")
        pinned = self.cluster.get(next((name for name in cookies if name), ""))
        if pinned is None:
            return order, True
        return [pinned] + [r for r in order if r is not pinned], False

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            try:
                request = await asyncio.wait_for(_read_request(reader), READ_TIMEOUT)
            except (BadRequest, asyncio.IncompleteReadError, asyncio.LimitOverrunError, ValueError):
                await _reply(writer, 400, b"bad request\n")
                return
            except asyncio.TimeoutError:
                await _reply(writer, 408, b"request timeout\n")
                return
            peer = writer.get_extra_info("peername")
            client_ip = peer[0] if peer else "127.0.0.1"
            if urlsplit(request.target).path.startswith("/_cluster/"):
                await self._control(request, writer)
            elif (request.header("upgrade") or "").lower() == "websocket":
                await self._tunnel(request, client_ip, reader, writer)
            else:
                await self._proxy(request, client_ip, writer)
        except (ConnectionError, asyncio.TimeoutError):
            pass  # the client went away or stalled: nothing more to say to it
        finally:
            writer.close()
            with contextlib.suppress(OSError, asyncio.TimeoutError):
                await asyncio.wait_for(writer.wait_closed(), 1.0)

    async def _proxy(self, request: Request, client_ip: str, writer: asyncio.StreamWriter) -> None:
        replicas, pin = self.candidates(request)
        for index, replica in enumerate(replicas):
            try:
                up_reader, up_writer = await asyncio.wait_for(
                    asyncio.open_connection("127.0.0.1", replica.port), CONNECT_TIMEOUT
                )
            except (OSError, asyncio.TimeoutError):
                continue  # not reached: safe to try the next replica
            try:
                await self._forward(
                    request,
                    client_ip,
                    up_reader,
                    up_writer,
                    writer,
                    replica,
                    pin=pin or (self.policy == "sticky" and index > 0),
                )
            finally:
                up_writer.close()
            return
        await _reply(writer, 502, b"502 Bad Gateway: no replica is up\n")

    async def _forward(
        self,
        request: Request,
        client_ip: str,
        up_reader: asyncio.StreamReader,
        up_writer: asyncio.StreamWriter,
        writer: asyncio.StreamWriter,
        replica: Replica,
        *,
        pin: bool,
    ) -> None:
        headers = [(k, v) for k, v in request.headers if k.lower() not in HOP_BY_HOP]
        headers += [
            ("X-Forwarded-For", client_ip),
            ("X-Forwarded-Proto", "http"),
            ("Connection", "close"),
        ]
        if request.body or request.method in ("POST", "PUT", "PATCH"):
            headers = [(k, v) for k, v in headers if k.lower() != "content-length"]
            headers.append(("Content-Length", str(len(request.body))))
        head = f"{request.method} {request.target} HTTP/1.1\r\n" + "".join(
            f"{k}: {v}\r\n" for k, v in headers
        )
        try:
            up_writer.write(head.encode("latin-1") + b"\r\n" + request.body)
            await up_writer.drain()
            response_head = await asyncio.wait_for(
                up_reader.readuntil(b"\r\n\r\n"), RESPONSE_TIMEOUT
            )
        except (
            OSError,
            asyncio.IncompleteReadError,
            asyncio.LimitOverrunError,
            asyncio.TimeoutError,
        ):
            await _reply(writer, 502, f"502 Bad Gateway: {replica.name} failed\n".encode())
            return
        lines = response_head.decode("latin-1").split("\r\n")[:-2]
        kept = [
            line
            for line in lines[1:]
            if line.split(":", 1)[0].strip().lower() not in ("connection", "keep-alive")
        ]
        kept.append("Connection: close")
        if pin:
            kept.append(f"Set-Cookie: {PIN_COOKIE}={replica.name}; Path=/; HttpOnly; SameSite=Lax")
        writer.write("\r\n".join([lines[0], *kept, "", ""]).encode("latin-1"))
        while True:
            try:
                chunk = await asyncio.wait_for(up_reader.read(65536), RESPONSE_TIMEOUT)
            except (OSError, asyncio.TimeoutError):
                return  # the client sees a truncated response and the closed connection
            if not chunk:
                break
            writer.write(chunk)
            await writer.drain()
        await writer.drain()

    async def _tunnel(
        self,
        request: Request,
        client_ip: str,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
    ) -> None:
        """A WebSocket handshake goes to a replica as a request would; then the bytes are
        relayed both ways, with no timeout, until either side closes."""
        replicas, _ = self.candidates(request)
        for replica in replicas:
            try:
                up_reader, up_writer = await asyncio.wait_for(
                    asyncio.open_connection("127.0.0.1", replica.port), CONNECT_TIMEOUT
                )
            except (OSError, asyncio.TimeoutError):
                continue
            headers = [(k, v) for k, v in request.headers if k.lower() not in HOP_BY_HOP]
            headers += [
                ("Upgrade", "websocket"),
                ("Connection", "Upgrade"),
                ("X-Forwarded-For", client_ip),
                ("X-Forwarded-Proto", "http"),
            ]
            head = f"{request.method} {request.target} HTTP/1.1\r\n" + "".join(
                f"{k}: {v}\r\n" for k, v in headers
            )
            try:
                up_writer.write(head.encode("latin-1") + b"\r\n")
                await asyncio.gather(_relay(reader, up_writer), _relay(up_reader, writer))
            finally:
                up_writer.close()
            return
        await _reply(writer, 502, b"502 Bad Gateway: no replica is up\n")

    async def _control(self, request: Request, writer: asyncio.StreamWriter) -> None:
        parts = urlsplit(request.target)
        action = parts.path.removeprefix("/_cluster/")
        if action == "status" and request.method == "GET":
            await _reply_json(writer, 200, self.status())
            return
        if action not in ("kill", "restart") or request.method != "POST":
            await _reply(writer, 404, b"not found\n")
            return
        info = RequestInfo(
            method="POST",
            headers=[(k.lower(), v) for k, v in request.headers],
            scheme="http",
            host=request.header("host"),
        )
        if not check_origin(info):
            await _reply(writer, 403, b"cross-origin request rejected\n")
            return
        name = parse_qs(parts.query).get("replica", [""])[0]
        replica = self.cluster.get(name)
        if replica is None:
            await _reply(writer, 404, b"no such replica\n")
            return
        if action == "kill":
            self.cluster.kill(replica)
        else:
            try:
                await self.cluster.restart(replica)
            except ReplicaFailed as exc:
                await _reply(writer, 500, f"{exc}\n".encode())
                return
        await _reply_json(writer, 200, self.status())

    def status(self) -> dict[str, object]:
        return {
            "strategy": self.cluster.strategy.name,
            "balancing": self.policy,
            "replicas": [r.describe() for r in self.cluster.replicas],
        }


async def _relay(source: asyncio.StreamReader, sink: asyncio.StreamWriter) -> None:
    """Copy `source` to `sink` until `source` ends, then close `sink` (a tunnel's half)."""
    try:
        while chunk := await source.read(65536):
            sink.write(chunk)
            await sink.drain()
    except OSError:
        pass
    finally:
        sink.close()


async def _read_request(reader: asyncio.StreamReader) -> Request:
    head = await reader.readuntil(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")[:-2]
    try:
        method, target, version = lines[0].split(" ")
    except ValueError:
        raise BadRequest from None
    if not version.startswith("HTTP/1.") or not target.startswith("/"):
        raise BadRequest
    headers: list[tuple[str, str]] = []
    for line in lines[1:]:
        name, sep, value = line.partition(":")
        if not sep or not name or name != name.strip():
            raise BadRequest
        headers.append((name, value.strip()))
    request = Request(method, target, headers, b"")
    if request.header("transfer-encoding") is not None:
        raise BadRequest  # browsers send forms with a Content-Length
    length = int(request.header("content-length") or 0)
    if not 0 <= length <= MAX_BODY:
        raise BadRequest
    body = await reader.readexactly(length) if length else b""
    return Request(method, target, headers, body)


async def _reply(
    writer: asyncio.StreamWriter, status: int, body: bytes, content_type: str = "text/plain"
) -> None:
    reason = {
        200: "OK",
        400: "Bad Request",
        403: "Forbidden",
        404: "Not Found",
        408: "Request Timeout",
        500: "Internal Server Error",
        502: "Bad Gateway",
    }.get(status, "")
    head = (
        f"HTTP/1.1 {status} {reason}\r\ncontent-type: {content_type}; charset=utf-8\r\n"
        f"content-length: {len(body)}\r\ncache-control: no-store\r\nconnection: close\r\n\r\n"
    )
    writer.write(head.encode() + body)
    with contextlib.suppress(ConnectionError):
        await writer.drain()


async def _reply_json(writer: asyncio.StreamWriter, status: int, value: object) -> None:
    await _reply(writer, status, json.dumps(value).encode(), "application/json")
