"""The demo page's live socket, for real: two replica processes on one store behind the
balancer; a logged-in page's WebSocket (tunnelled by the balancer to some replica) is
closed with 4401 when an admin revokes the session through the other one."""

from __future__ import annotations

import asyncio
import json

from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed

from coatcheck.adapters.websocket import CLOSE_CODE, ENDED

from .conftest import Demo


def test_an_admin_revocation_closes_the_pages_live_socket(shared_demo: Demo) -> None:
    demo = shared_demo
    origin = f"http://127.0.0.1:{demo.port}"
    base = {"Host": f"127.0.0.1:{demo.port}", "Origin": origin, "Accept": "application/json"}
    code, headers, _ = demo.request("POST", "/login", base, body="user=alice")
    assert code == 200
    cookie = next(
        c.split(";", 1)[0]
        for c in headers["set-cookie"].split("\n")
        if c.startswith("__Host-session=")
    )
    with_cookie = {**base, "Cookie": cookie}
    code, _, page = demo.request("GET", "/", {**with_cookie, "Accept": "text/html"})
    assert code == 200 and b'id="live"' in page  # a logged-in page opens the socket
    state = json.loads(demo.request("GET", "/api/state", with_cookie)[2])
    session_id = state["session"]["id"]

    async def watch() -> tuple[int | None, str | None, str]:
        async with connect(
            f"ws://127.0.0.1:{demo.port}/ws",
            origin=origin,  # type: ignore[arg-type]
            additional_headers={"cookie": cookie},
            open_timeout=30,
        ) as socket:
            hello = json.loads(await asyncio.wait_for(socket.recv(), 30))
            assert hello["user"] == "alice"
            form = f"id={session_id}&csrf_token={state['csrf_token']}"
            code, _, _ = await asyncio.to_thread(
                demo.request, "POST", "/admin/revoke", with_cookie, form
            )
            assert code == 200
            try:
                await asyncio.wait_for(socket.recv(), 30)
            except ConnectionClosed as closed:
                rcvd = closed.rcvd
                return (
                    (None, None, hello["replica"])
                    if rcvd is None
                    else (
                        rcvd.code,
                        rcvd.reason,
                        hello["replica"],
                    )
                )
            raise AssertionError("the socket stayed open")

    closed_code, reason, _ = asyncio.run(watch())
    assert (closed_code, reason) == (CLOSE_CODE, ENDED)
