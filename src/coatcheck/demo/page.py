"""The demo page: server-rendered HTML with plain forms, and a little JavaScript for the
cluster panel (the balancer's `/_cluster/` endpoints) and auto-refresh.

Everything the page shows comes from the `state` dict of `DemoApp.state`, which is also
what `GET /api/state` returns.
"""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from html import escape
from typing import Any

__all__ = ["render"]

PRODUCTS = ("coat", "hat", "scarf", "umbrella")
COLOURS = ("#2a9d8f", "#e76f51", "#457b9d", "#e9c46a", "#8e5ea2", "#6a994e")


def render(state: dict[str, Any], *, users: Sequence[str]) -> str:
    session = state["session"]
    csrf = escape(state["csrf_token"] or "")
    user = session["user"]
    replica = state["replica"]
    now = state["now"]
    colour = COLOURS[(int(replica.lstrip("r") or 0) - 1) % len(COLOURS)]

    def form(action: str, label: str, **fields: str) -> str:
        hidden = "".join(
            f'<input type="hidden" name="{escape(k)}" value="{escape(v)}">'
            for k, v in {"csrf_token": csrf, **fields}.items()
        )
        return (f'<form method="post" action="{action}">{hidden}'
                f"<button>{escape(label)}</button></form>")  # fmt: skip

    if user is None:
        who = "not logged in " + " ".join(form("/login", f"log in as {u}", user=u) for u in users)
    else:
        who = f"logged in as <b>{escape(user)}</b> " + form("/logout", "log out")
    cart = session["data"].get("cart", [])
    products = " ".join(form("/cart/add", f"+ {p}", item=p) for p in PRODUCTS)
    mine = _sessions_table(state["my_sessions"], now, session["id"], form, "/sessions/revoke")
    others = form("/sessions/logout-others", "log out other devices") if user else ""
    admin = "".join(
        f"<h3>{escape(u)}</h3>"
        + _sessions_table(infos, now, session["id"], form, "/admin/revoke")
        for u, infos in state["admin"].items()
    )
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>coatcheck demo · {escape(replica)}</title>
<meta name="viewport" content="width=device-width">
<style>
body {{ font: 15px/1.4 system-ui, sans-serif; max-width: 60rem; margin: 1rem auto }}
form {{ display: inline }} table {{ border-collapse: collapse; width: 100% }}
td, th {{ border-bottom: 1px solid #ddd; padding: .2rem .4rem; text-align: left; font-size: 13px }}
.replica {{ background: {colour}; color: #fff; padding: .2rem .6rem; border-radius: .3rem }}
.up {{ color: #2a9d8f }} .down {{ color: #c1121f }} code {{ font-size: 12px }}
section {{ border: 1px solid #ddd; border-radius: .4rem; padding: .4rem 1rem; margin: .6rem 0 }}
</style></head>
<body>
<h1>coatcheck demo: <code>{escape(state["strategy"])}</code> strategy</h1>
<p>{escape(state["summary"])}. Reload (or tick the box) to watch which replica answers;
kill the one that served you and see what survives.</p>
<p>This page was served by <span class="replica" id="replica">{escape(replica)}</span>
<label><input type="checkbox" id="auto"> reload every second</label></p>
<section><h2>Cluster</h2><div id="cluster">loading…</div></section>
<section><h2>Session</h2>
<p>{who}</p>
<p>session <code id="session-id">{escape(session["id"][:12])}…</code>
{"(new: nothing was found for the cookie this browser sent, if any)" if session["new"] else ""}
</p>
<p>cart: <b id="cart">{escape(", ".join(cart)) or "empty"}</b> {products}
{form("/cart/clear", "empty cart")}</p>
<pre id="data">{escape(_json(session["data"]))}</pre>
</section>
<section><h2>My sessions</h2>{mine if user else "<p>log in to see your devices</p>"}
{others}</section>
<section><h2>Admin: every session of the demo users</h2>{admin}</section>
<script>
const auto = document.getElementById("auto");
auto.checked = localStorage.getItem("coatcheck-auto") === "1";
auto.onchange = () => localStorage.setItem("coatcheck-auto", auto.checked ? "1" : "0");
setInterval(() => {{ if (auto.checked) location.reload(); }}, 1000);
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
</script>
</body></html>
"""


def _sessions_table(
    infos: list[dict[str, Any]], now: float, current: str, form: Any, action: str
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
    return ("<table><tr><th>session</th><th>IP</th><th>user agent</th><th>created</th>"
            f"<th>last seen</th><th></th></tr>{rows}</table>")  # fmt: skip


def _ago(now: float, then: float) -> str:
    seconds = max(0, int(now - then))
    stamp = time.strftime("%H:%M:%S", time.localtime(then))
    if seconds < 60:
        return f"{stamp} ({seconds} s ago)"
    return f"{stamp} ({seconds // 60} min ago)"


def _json(value: Any) -> str:
    return json.dumps(value, indent=2, sort_keys=True)
