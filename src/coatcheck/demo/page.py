"""The demo page: the session's sections rendered on the server from the `state` dict of
`DemoApp.state` (also what `GET /api/state` returns), and a little JavaScript for the
cluster panel (the balancer's `/_cluster/` endpoints) and auto-refresh.

Two ways to carry the session, two pages around the same `sections`:

- `render` (cookie): the whole page, with plain forms; the browser posts them and attaches
  the cookie by itself.
- `render_shell` (header): a page without session whose module script loads the JavaScript
  client, fetches the state as JSON with the token attached (`?view=html` adds the rendered
  `sections`), and sends the same forms with `fetch` instead of posting them.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Sequence
from html import escape
from typing import Any

__all__ = ["render", "render_shell", "sections"]

PRODUCTS = ("coat", "hat", "scarf", "umbrella")
COLOURS = ("#2a9d8f", "#e76f51", "#457b9d", "#e9c46a", "#8e5ea2", "#6a994e")

Form = Callable[..., str]


def render(state: dict[str, Any], *, users: Sequence[str]) -> str:
    """The whole page for a cookie-carried session (reload shows the next replica)."""
    return _document(
        strategy=state["strategy"],
        summary=state["summary"],
        replica=state["replica"],
        body=sections(state, users=users),
        script=_RELOAD_SCRIPT + (_LIVE_SCRIPT if state["session"]["user"] else ""),
        controls="",
    )


def render_shell(*, strategy: str, summary: str, replica: str, script: str) -> str:
    """The page for a header-carried session: its script (`script` is the path of the
    JavaScript client) fills in `sections` from JSON fetched with the token."""
    return _document(
        strategy=strategy,
        summary=summary,
        replica=replica,
        body="<p>loading…</p>",
        script=_HEADER_SCRIPT.replace("__SCRIPT__", json.dumps(script)),
        # A reload fetches the page, the script and the state: with three replicas, the
        # same replica answers the state every time. One fetch shows the next one.
        controls='<button id="refresh">refresh</button> ',
    )


def sections(state: dict[str, Any], *, users: Sequence[str]) -> str:
    """Which replica answered, the session, "my sessions" and the admin view."""
    session = state["session"]
    csrf = state["csrf_token"]
    user = session["user"]
    replica = state["replica"]
    now = state["now"]
    colour = COLOURS[(int(replica.lstrip("r") or 0) - 1) % len(COLOURS)]
    header = state.get("carrier") == "header"

    def form(action: str, label: str, **fields: str) -> str:
        values = {"csrf_token": csrf, **fields} if csrf else fields
        hidden = "".join(
            f'<input type="hidden" name="{escape(k)}" value="{escape(v)}">'
            for k, v in values.items()
        )
        return (
            f'<form method="post" action="{action}">{hidden}<button>{escape(label)}</button></form>'
        )

    if user is None:
        who = "not logged in " + " ".join(form("/login", f"log in as {u}", user=u) for u in users)
    else:
        who = f"logged in as <b>{escape(user)}</b> " + form("/logout", "log out")
    cart = session["data"].get("cart", [])
    products = " ".join(form("/cart/add", f"+ {p}", item=p) for p in PRODUCTS)
    mine = _sessions_table(state["my_sessions"], now, session["id"], form, "/sessions/revoke")
    others = form("/sessions/logout-others", "log out other devices") if user else ""
    admin = "".join(
        f"<h3>{escape(u)}</h3>" + _sessions_table(infos, now, session["id"], form, "/admin/revoke")
        for u, infos in state["admin"].items()
    )
    carried = "token" if header else "cookie"
    new = (
        f"(new: nothing was found for the {carried} this browser sent, if any)"
        if session["new"]
        else ""
    )
    tokens = state.get("tokens")
    mode = ""
    if tokens:
        kind = (
            "an encrypted token (JWE): the browser cannot read it"
            if tokens["format"] == "JWE"
            else "a signed token (JWS): the browser can read it, not change it"
        )
        mode = (
            f"<p>The whole session travels in the {carried}, as {kind}. The replicas share "
            "only the registry of sessions and the revocation list; a revocation reaches "
            f"every replica within {tokens['staleness_ms']} ms.</p>"
        )
    return f"""<p>This {"answer" if header else "page"} was served by
<span class="replica" id="replica" style="background: {colour}">{escape(replica)}</span></p>
<section><h2>Session</h2>
<p>{who}</p>
<p>session <code id="session-id">{escape(session["id"][:12])}…</code> {new}</p>{mode}
<p>cart: <b id="cart">{escape(", ".join(cart)) or "empty"}</b> {products}
{form("/cart/clear", "empty cart")}</p>
<pre id="data">{escape(_json(session["data"]))}</pre>
</section>
<section><h2>My sessions</h2>{mine if user else "<p>log in to see your devices</p>"}
{others}</section>
<section><h2>Admin: every session of the demo users</h2>{admin}{_metrics(state)}</section>"""


def _metrics(state: dict[str, Any]) -> str:
    """The replica's event counters (`GET /api/metrics`), live with the page's refresh."""
    metrics = state.get("metrics")
    if not metrics:
        return ""
    cells = "".join(
        f"<tr><td>{escape(kind)}</td><td>{count}</td></tr>"
        for kind, count in metrics["events"].items()
    )
    return (
        f"<h3>Events on {escape(state['replica'])}</h3>"
        f'<table id="metrics"><tr><th>kind</th><th>count</th></tr>{cells}</table>'
    )


def _document(
    *, strategy: str, summary: str, replica: str, body: str, script: str, controls: str
) -> str:
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>coatcheck demo · {escape(replica)}</title>
<meta name="viewport" content="width=device-width">
<link rel="icon" href="data:,">
<style>
body {{ font: 15px/1.4 system-ui, sans-serif; max-width: 60rem; margin: 1rem auto }}
form {{ display: inline }} table {{ border-collapse: collapse; width: 100% }}
td, th {{ border-bottom: 1px solid #ddd; padding: .2rem .4rem; text-align: left; font-size: 13px }}
.replica {{ color: #fff; padding: .2rem .6rem; border-radius: .3rem }}
.up {{ color: #2a9d8f }} .down {{ color: #c1121f }} code {{ font-size: 12px }}
section {{ border: 1px solid #ddd; border-radius: .4rem; padding: .4rem 1rem; margin: .6rem 0 }}
#problem {{ color: #c1121f }}
</style></head>
<body>
<h1>coatcheck demo: <code>{escape(strategy)}</code> strategy</h1>
<p>{escape(summary)}. {"Refresh" if controls else "Reload"} (or tick the box) to watch
which replica answers; kill the one that served you and see what survives.
{controls}<label><input type="checkbox" id="auto"> refresh every second</label></p>
<section><h2>Cluster</h2><div id="cluster">loading…</div></section>
<p id="problem"></p>
<div id="app">{body}</div>
<script>
async function cluster(action, name) {{
  const url = action ? `/_cluster/${{action}}?replica=${{name}}` : "/_cluster/status";
  const response = await fetch(url, {{method: action ? "POST" : "GET"}});
  if (!response.ok) {{ document.getElementById("cluster").textContent = "balancer said " +
    response.status; return; }}
  const status = await response.json();
  const rows = status.replicas.map(r => `<tr><td>${{r.name}}</td><td>:${{r.port}}</td>
    <td class="${{r.up ? "up" : "down"}}">${{r.up ? "up" : "down"}}</td>
    <td><button onclick="cluster('${{r.up ? "kill" : "restart"}}', '${{r.name}}')">
    ${{r.up ? "kill" : "restart"}}</button></td></tr>`);
  document.getElementById("cluster").innerHTML = `<p>balancer: ${{status.balancing}}</p>
    <table><tr><th>replica</th><th>port</th><th>state</th><th></th></tr>${{rows.join("")}}</table>`;
}}
cluster();
const auto = document.getElementById("auto");
auto.checked = localStorage.getItem("coatcheck-auto") === "1";
auto.onchange = () => localStorage.setItem("coatcheck-auto", auto.checked ? "1" : "0");
</script>
{script}
</body></html>
"""


# A logged-in page opens a WebSocket to `/ws`; when an admin revokes the session (or it
# is logged out elsewhere, or expires) the server closes it with 4401 and the page says so.
_LIVE_SCRIPT = """<p id="live">live socket: connecting…</p>
<script>
(() => {
  const live = document.getElementById("live");
  const scheme = location.protocol === "https:" ? "wss" : "ws";
  const socket = new WebSocket(`${scheme}://${location.host}/ws`);
  socket.onmessage = (event) => {
    live.textContent = `live socket: open (${JSON.parse(event.data).replica})`;
  };
  socket.onclose = (event) => {
    const why = event.reason === "session ended" ? "session revoked" : event.reason;
    live.textContent =
      event.code === 4401 ? `closed: ${why}` : `live socket: closed (${event.code})`;
  };
})();
</script>"""

_RELOAD_SCRIPT = """<script>
setInterval(() => { if (auto.checked) location.reload(); }, 1000);
</script>"""

# The header transport, as an application would use it: the token is kept by coatcheck.js
# (in this tab's sessionStorage, so that a reload keeps it) and attached to every request.
_HEADER_SCRIPT = """<script type="module">
import { createClient } from __SCRIPT__;

const session = createClient({ storage: "session" });
const app = document.getElementById("app");
const problem = document.getElementById("problem");

async function show(path, init = {}) {
  let response;
  try {
    response = await session.fetch(`${path}?view=html`,
                                   { ...init, headers: { Accept: "application/json" } });
  } catch (error) {
    problem.textContent = `request failed: ${error}`;
    return;
  }
  if (!(response.headers.get("content-type") || "").startsWith("application/json")) {
    problem.textContent = `${response.status}: ${await response.text()}`;
    return;
  }
  const state = await response.json();
  problem.textContent = response.ok ? "" : `the replica answered ${response.status}`;
  app.innerHTML = state.html;
  document.title = `coatcheck demo · ${state.replica}`;
}

// The forms of the page are sent with fetch, never posted: only script can attach the
// token. Each may replace it (a new session, log in, log out), hence exclusive: requests
// of this tab wait until the new token is stored.
app.addEventListener("submit", (event) => {
  event.preventDefault();
  const body = new URLSearchParams(new FormData(event.target));
  show(event.target.getAttribute("action"), { method: "POST", body, exclusive: true });
});
session.addEventListener("expired", () => { problem.textContent = "session expired"; });
document.getElementById("refresh").onclick = () => show("/api/state");
setInterval(() => { if (auto.checked) show("/api/state"); }, 1000);
show("/api/state");
</script>"""


def _sessions_table(
    infos: list[dict[str, Any]], now: float, current: str, form: Form, action: str
) -> str:
    if not infos:
        return "<p>no sessions</p>"
    rows = "".join(
        f"<tr><td><code>{escape(i['id'][:8])}</code>"
        f"{' (this device)' if i['id'] == current else ''}</td>"
        f"<td>{escape(i['ip'] or '')}</td><td>{escape((i['user_agent'] or '')[:60])}</td>"
        f"<td>{_ago(now, i['created_at'])}</td><td>{_ago(now, i['last_seen'])}</td>"
        f"<td>{form(action, 'revoke', id=i['id'])}</td></tr>"
        for i in infos
    )
    return (
        "<table><tr><th>session</th><th>IP</th><th>user agent</th><th>created</th>"
        f"<th>last seen</th><th></th></tr>{rows}</table>"
    )


def _ago(now: float, then: float) -> str:
    seconds = max(0, int(now - then))
    stamp = time.strftime("%H:%M:%S", time.localtime(then))
    if seconds < 60:
        return f"{stamp} ({seconds} s ago)"
    return f"{stamp} ({seconds // 60} min ago)"


def _json(value: Any) -> str:
    return json.dumps(value, indent=2, sort_keys=True)
