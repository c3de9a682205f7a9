"""The `coatcheck` command: the replicated demo, session administration, keys and tokens.

Tables on a terminal, JSON with `--json`. Only the standard library is used here; each
command imports what it needs when it runs. Exit codes (also in docs/cli.md):

    0  success
    1  the command ran and found a failure (a demo --check strategy misbehaved, the demo
       could not start, a token did not verify)
    2  usage: bad arguments, a bad store URL, a missing optional dependency
    3  the store failed or could not be reached
    4  keys are missing or invalid
  130  interrupted (Ctrl-C)
  141  stdout was closed before the output was all written (`coatcheck ... | head`)
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
import time
from collections.abc import Callable, Sequence
from typing import Any, TextIO

__all__ = [
    "EXIT_FAILED",
    "EXIT_KEYS",
    "EXIT_PIPE",
    "EXIT_STORE",
    "EXIT_USAGE",
    "main",
    "render_table",
]

EXIT_FAILED = 1
EXIT_USAGE = 2
EXIT_STORE = 3
EXIT_KEYS = 4
EXIT_INTERRUPTED = 130
EXIT_PIPE = 141  # 128 + SIGPIPE: what a shell reports for a command its closed pipe ended
STORE_ENV = "COATCHECK_STORE"
KEYS_ENV = "COATCHECK_KEYS"
MAX_REPLICAS = 16  # processes on one machine; the demo makes its point with 3
_STDIN = "-"  # a token argument of "-": read it from stdin, out of the shell's history


class Failure(Exception):
    """A clean, expected failure: its message is printed without a traceback."""

    def __init__(self, message: str, code: int) -> None:
        super().__init__(message)
        self.code = code


# -- output -------------------------------------------------------------------------------


def render_table(headers: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    """A plain-text table with aligned columns (`None` shows as `-`)."""
    cells = [[_cell(v) for v in row] for row in rows]
    widths = [max([len(h), *(len(r[i]) for r in cells)]) for i, h in enumerate(headers)]
    lines = ["  ".join(h.ljust(w) for h, w in zip(headers, widths, strict=True)).rstrip()]
    lines.append("  ".join("-" * w for w in widths))
    lines += ["  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip() for r in cells]
    return "\n".join(lines)


def _cell(value: object) -> str:
    if value is None:
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        return f"{value:.1f}"
    return str(value)


def _when(timestamp: float | None) -> str | None:
    if timestamp is None:
        return None
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(timestamp))


def _emit(args: argparse.Namespace, value: Any, text: str, out: TextIO) -> None:
    print(json.dumps(value, indent=2) if args.json else text, file=out)


# -- sessions -----------------------------------------------------------------------------


def _open_store(url: str) -> Any:
    """The store at `url`, with failures turned into clean errors."""
    from .exceptions import ConfigurationError
    from .stores import from_url

    try:
        return from_url(url)
    except ConfigurationError as exc:
        raise Failure(f"bad store URL: {exc}", EXIT_USAGE) from None
    except ImportError as exc:
        raise Failure(
            f"this store needs {exc.name or 'a driver'}: "
            "pip install 'coatcheck[redis]' or 'coatcheck[postgres]'",
            EXIT_USAGE,
        ) from None


def _admin(args: argparse.Namespace) -> Any:
    from .admin import SessionAdmin
    from .manager import ServerSide, SessionManager

    url = args.store or os.environ.get(STORE_ENV)
    if not url:
        raise Failure(f"no store: pass --store URL or set {STORE_ENV}", EXIT_USAGE)
    if not args.client_side:
        return SessionAdmin(SessionManager(ServerSide(_open_store(url))))
    from .clientside import ClientSide

    _open_store(url).close()  # the same clean errors as server-side for a bad URL
    return SessionAdmin(SessionManager(ClientSide(_keyring(args), store=url)))


def _keyring(args: argparse.Namespace) -> Any:
    """The configured keys (`--keys-file`, else `$COATCHECK_KEYS`); exit 4 if missing or bad.
    Error messages from `KeyRing` name the key by position and never repeat it."""
    from .exceptions import ConfigurationError
    from .keys import KeyRing

    try:
        if args.keys_file:
            return KeyRing.from_file(args.keys_file)
        return KeyRing.from_env(KEYS_ENV)
    except ConfigurationError as exc:
        raise Failure(str(exc), EXIT_KEYS) from None


def _probe_store(url: str) -> None:
    """Fail now, with a clear error, if the demo's `--store` is bad or unreachable: the
    replicas would otherwise answer every request with 503."""
    store = _open_store(url)
    try:
        store.load("probe")  # any key: only reachability matters
    finally:
        store.close()


def _handle(value: str) -> str:
    from .ids import is_handle

    if not is_handle(value):
        raise Failure(
            "a session ID is its handle (22 base64url characters), as `sessions "
            "list` shows it; never a cookie or token",
            EXIT_USAGE,
        )
    return value


def _check_mode(args: argparse.Namespace, rows: list[Any]) -> None:
    """Refuse to "revoke" client-side sessions as server-side ones: deleting their registry
    records would hide them from the listing while their tokens keep working."""
    from .exceptions import StoreCorrupted
    from .records import decode

    if args.client_side:
        return
    for record in rows:
        try:
            client = decode(record.data).credentials is None
        except StoreCorrupted:
            continue
        if client:
            raise Failure(
                "these are client-side sessions (registry records): revoking them takes a "
                "revocation entry that every replica checks; run the same command with "
                "--client-side (keys from $COATCHECK_KEYS or --keys-file). Nothing was revoked.",
                EXIT_USAGE,
            )


def cmd_sessions_list(args: argparse.Namespace, out: TextIO) -> int:
    admin = _admin(args)
    infos = admin.sessions(args.user)
    rows = [
        {
            "id": i.id,
            "user": i.user,
            "created_at": i.created_at,
            "last_seen": i.last_seen,
            "authenticated_at": i.authenticated_at,
            "assurance": i.assurance,
            "ip": i.ip,
            "user_agent": i.user_agent,
        }
        for i in infos
    ]
    table = render_table(
        ["id", "created", "last seen", "ip", "user agent"],
        [
            [
                r["id"],
                _when(r["created_at"]),
                _when(r["last_seen"]),
                r["ip"],
                (r["user_agent"] or "")[:40] or None,
            ]
            for r in rows
        ],
    )
    _emit(args, rows, f"{len(rows)} session(s) of {args.user}\n{table}", out)
    return 0


def cmd_sessions_revoke(args: argparse.Namespace, out: TextIO) -> int:
    admin = _admin(args)
    key = _handle(args.id)
    record = admin.store.load(key)
    _check_mode(args, [] if record is None else [record])
    existed = admin.revoke(key)
    text = f"revoked {key}" if existed else f"no live session {key} (nothing to revoke)"
    if existed and args.client_side:
        text += "; every replica refuses its tokens from its next revocation sync"
    _emit(args, {"id": key, "revoked": existed}, text, out)
    return 0


def cmd_sessions_revoke_user(args: argparse.Namespace, out: TextIO) -> int:
    admin = _admin(args)
    keep = None if args.keep is None else _handle(args.keep)
    _check_mode(args, [record for _, record in admin.store.list_user(args.user)])
    count = admin.revoke_user(args.user, keep=keep)
    _emit(
        args,
        {"user": args.user, "revoked": count, "kept": keep},
        f"revoked {count} session(s) of {args.user}",
        out,
    )
    return 0


def cmd_sessions_purge(args: argparse.Namespace, out: TextIO) -> int:
    admin = _admin(args)
    count = admin.purge_expired()
    result = {"purged": count}
    text = f"purged {count} expired record(s)"
    revocations = getattr(admin.manager.mode, "revocations", None)
    if revocations is not None:
        result["purged_revocations"] = revocations.purge_expired()
        text += f" and {result['purged_revocations']} expired revocation(s)"
    _emit(args, result, text, out)
    return 0


# -- keys and tokens ----------------------------------------------------------------------


def cmd_keys_new(args: argparse.Namespace, out: TextIO) -> int:
    from .keys import generate_key

    if not 1 <= args.count <= 16:
        raise Failure("--count must be between 1 and 16", EXIT_USAGE)
    if args.alg != "HS256":
        from .asymmetric import generate_signing_key

        signing = [generate_signing_key(args.alg) for _ in range(args.count)]
        jwks = [json.dumps(k.private_jwk(), separators=(",", ":")) for k in signing]
        _emit(args, {"keys": jwks, "kids": [k.kid for k in signing]}, "\n".join(jwks), out)
        if not args.json:
            print(
                f"# a private {args.alg} key (one-line JWK): put it first in ${KEYS_ENV} or "
                "in a key file (one per line), keeping older keys after it until their tokens "
                "have expired; publish the public half with `coatcheck keys jwks` or "
                "SessionMiddleware(jwks_path=...)",
                file=sys.stderr,
            )
        return 0
    keys = [generate_key() for _ in range(args.count)]
    _emit(args, {"keys": keys}, "\n".join(keys), out)
    if not args.json:
        print(
            f"# put it first in ${KEYS_ENV} (comma-separated) or in a key file (one per "
            "line), keeping older keys after it until their tokens have expired",
            file=sys.stderr,
        )
    return 0


def cmd_keys_check(args: argparse.Namespace, out: TextIO) -> int:
    from .keys import JWE_A256GCM, JWS_HS256

    ring = _keyring(args)
    signing, encryption = ring.subkeys(JWS_HS256), ring.subkeys(JWE_A256GCM)
    rows = [
        {"position": i + 1, "current": i == 0, "jws_kid": s.kid, "jwe_kid": e.kid}
        for i, (s, e) in enumerate(zip(signing, encryption, strict=True))
    ]
    source = args.keys_file or f"${KEYS_ENV}"
    table = render_table(
        ["key", "role", "JWS kid", "JWE kid"],
        [
            [
                r["position"],
                "signs and verifies" if r["current"] else "verifies",
                r["jws_kid"],
                r["jwe_kid"],
            ]
            for r in rows
        ],
    )
    signing_rows = [
        {"position": i + 1, "current": i == 0, "alg": k.alg, "kid": k.kid}
        for i, k in enumerate(ring.signing_keys())
    ]
    text = f"{len(rows)} valid key(s) in {source} (newest first)\n{table}"
    if signing_rows:
        text = f"{len(signing_rows)} signing key(s) in {source} (newest first)\n" + render_table(
            ["key", "role", "alg", "kid"],
            [
                [r["position"], "signs and verifies" if r["current"] else "verifies"]
                + [r["alg"], r["kid"]]
                for r in signing_rows
            ],
        )
        text += f"\nsymmetric subkeys (JWE, ID hashing):\n{table}"
    _emit(args, {"source": source, "keys": rows, "signing_keys": signing_rows}, text, out)
    return 0


def cmd_keys_jwks(args: argparse.Namespace, out: TextIO) -> int:
    ring = _keyring(args)
    if not ring.signing_keys():
        raise Failure(
            "the configured keys are symmetric (HS256): they have no public JWK set; make a "
            "signing key with `coatcheck keys new --alg EdDSA`",
            EXIT_FAILED,
        )
    print(json.dumps(ring.jwks(), indent=2), file=out)
    return 0


def cmd_token_inspect(args: argparse.Namespace, out: TextIO) -> int:
    from .exceptions import InvalidToken
    from .tokens import JWECodec, JWSCodec, b64decode, check_times

    token = (sys.stdin.readline() if args.token == _STDIN else args.token).strip()
    segments = token.split(".")
    if len(segments) not in (3, 5):
        raise Failure("not a compact JWS (3 segments) or JWE (5 segments) token", EXIT_FAILED)
    try:
        header = json.loads(b64decode(segments[0].encode("ascii")))
    except (InvalidToken, ValueError, UnicodeError):
        raise Failure("the token's header is not base64url JSON", EXIT_FAILED) from None
    ring = _keyring(args)
    codec: Any = JWSCodec(ring) if len(segments) == 3 else JWECodec(ring)
    kind = "JWS HS256 (signed)" if len(segments) == 3 else "JWE dir/A256GCM (encrypted)"
    if len(segments) == 3 and isinstance(header, dict) and header.get("alg") != "HS256":
        if ring.signing_keys():
            from .asymmetric import AsymmetricJWSCodec

            codec = AsymmetricJWSCodec(ring.signing_keys())
            kind = f"JWS {ring.signing_algorithm} (signed)"
    report: dict[str, Any] = {"format": kind, "header": header}
    try:
        decoded = codec.decode(token)
    except InvalidToken as exc:
        report.update(valid=False, problem=str(exc))
        _emit(args, report, _inspect_text(report), out)
        return EXIT_FAILED
    claims = dict(decoded.claims)
    if "csrf" in claims:
        claims["csrf"] = "(hidden: a per-session secret)"
    now = time.time()
    report.update(
        kid=decoded.kid,
        current_key=decoded.is_current,
        claims=claims,
        deadlines=_deadlines(claims, now),
        valid=True,
    )
    try:
        check_times(decoded.claims, now=now)
    except InvalidToken as exc:
        report.update(valid=False, problem=str(exc))
    report["revoked"] = _revoked(args, ring, decoded.claims, now)
    _emit(args, report, _inspect_text(report), out)
    return 0 if report["valid"] and not report["revoked"] else EXIT_FAILED


def _deadlines(claims: dict[str, Any], now: float) -> dict[str, dict[str, Any]]:
    names = {
        "iat": "issued",
        "auth_time": "logged in",
        "rot": "ID rotated",
        "nbf": "not before",
        "idl": "idle deadline",
        "exp": "absolute deadline",
    }
    result = {}
    for claim, label in names.items():
        value = claims.get(claim)
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            delta = value - now
            relative = f"in {_duration(delta)}" if delta > 0 else f"{_duration(-delta)} ago"
            result[claim] = {
                "label": label,
                "at": value,
                "when": _when(value),
                "relative": relative,
            }
    return result


def _duration(seconds: float) -> str:
    for unit, size in (("d", 86400), ("h", 3600), ("min", 60)):
        if seconds >= size:
            return f"{seconds / size:.1f} {unit}"
    return f"{seconds:.0f} s"


def _revoked(args: argparse.Namespace, ring: Any, claims: dict[str, Any], now: float) -> Any:
    """True / False from the store's revocation list, or None without a store."""
    url = args.store or os.environ.get(STORE_ENV)
    if not url:
        return None
    from .clientside import ClientSide
    from .revocation import RevocationList

    _open_store(url).close()
    revocations = ClientSide(ring, store=url).revocations
    if revocations is None:
        return None
    copy, more = RevocationList(), True
    while more:
        entries, cursor = revocations.changes(copy.cursor)
        more = copy.apply(entries, cursor, now)
    sid, user, iat = claims.get("sid"), claims.get("sub"), claims.get("iat")
    if not isinstance(sid, str) or not isinstance(iat, (int, float)):
        return None
    return copy.is_revoked(sid, user if isinstance(user, str) else None, float(iat), now)


def _inspect_text(report: dict[str, Any]) -> str:
    lines = [f"format    {report['format']}", f"header    {json.dumps(report['header'])}"]
    if "kid" in report:
        role = "the newest key" if report["current_key"] else "an older key (would be re-issued)"
        lines.append(f"key       {report['kid']}: {role}")
    if "claims" in report:
        lines.append(f"claims    {json.dumps(report['claims'], sort_keys=True)}")
        for d in report["deadlines"].values():
            lines.append(f"{d['label']:<18}{d['when']} ({d['relative']})")
    status = "valid" if report["valid"] else f"INVALID: {report['problem']}"
    lines.append(f"status    {status}")
    if "revoked" in report:
        revoked = report["revoked"]
        lines.append(
            "revoked   "
            + ("not checked (no --store)" if revoked is None else "YES" if revoked else "no")
        )
    return "\n".join(lines)


# -- demo ---------------------------------------------------------------------------------


def cmd_demo(args: argparse.Namespace, out: TextIO) -> int:
    from . import demo
    from .demo.strategies import STRATEGIES

    if not 1 <= args.replicas <= MAX_REPLICAS:
        raise Failure(f"--replicas must be between 1 and {MAX_REPLICAS}", EXIT_USAGE)
    if args.store is not None:
        _probe_store(args.store)
    if args.check:
        return _demo_check(args, out)
    strategy = STRATEGIES[args.strategy or "shared"]
    if args.exit_with_parent:
        _exit_with_parent()
    try:
        demo.run(
            strategy,
            replicas=args.replicas,
            port=args.port,
            store_url=args.store,
            encrypted=args.encrypted,
            out=out,
        )
    except demo.DemoError as exc:
        raise Failure(str(exc), EXIT_FAILED) from None
    return 0


def _exit_with_parent() -> None:
    import signal

    from .demo.cluster import watch_parent

    watch_parent(os.getppid(), lambda: os.kill(os.getpid(), signal.SIGTERM))


def _demo_check(args: argparse.Namespace, out: TextIO) -> int:
    from .demo.check import run_checks
    from .demo.strategies import STRATEGIES

    if args.replicas < 2:
        raise Failure("--check needs at least 2 replicas", EXIT_USAGE)
    if args.requests < 1:
        raise Failure("--requests must be at least 1", EXIT_USAGE)
    plot = _plotter(args.plot) if args.plot else None
    chosen = [STRATEGIES[args.strategy]] if args.strategy else list(STRATEGIES.values())
    results = run_checks(
        chosen,
        replicas=args.replicas,
        requests=args.requests,
        store_url=args.store,
        progress=sys.stderr,
        encrypted=args.encrypted,
    )
    rows = [r.as_dict() for r in results]
    table = render_table(
        [
            "strategy",
            "requests",
            "right session",
            "read back",
            "survived death",
            "revoked everywhere",
            "logout everywhere",
            "p50 ms",
            "p99 ms",
            "result",
        ],
        [
            [
                r["strategy"],
                r["requests"],
                f"{r['right_session']:.0%}",
                r["read_back"],
                r["survived_replica_death"],
                f"{r['revocation_ms']:.0f} ms"
                if r["revocation_ms"] is not None
                else r["revocation_note"] or None,
                r["logout_everywhere"],
                r["latency_p50_ms"],
                r["latency_p99_ms"],
                "skipped: " + r["skipped"] if r["skipped"] else "ok" if r["ok"] else "FAILED",
            ]
            for r in rows
        ],
    )
    _emit(args, rows, table, out)
    if plot is not None:
        plot(rows)
        print(f"chart written to {args.plot}", file=sys.stderr)
    return EXIT_FAILED if any(r["failures"] for r in rows) else 0


def _plotter(path: str) -> Callable[[list[dict[str, Any]]], None]:
    """Fail early (before any cluster runs) if matplotlib is missing."""
    try:
        from .demo.plot import plot_results
    except ImportError:
        raise Failure("--plot needs matplotlib: pip install matplotlib", EXIT_USAGE) from None
    return lambda rows: plot_results(rows, path)


# -- parser -------------------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    from .demo.strategies import STRATEGIES

    parser = argparse.ArgumentParser(
        prog="coatcheck", description="Sessions for Python web apps that run on many servers."
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    output = argparse.ArgumentParser(add_help=False)
    output.add_argument("--json", action="store_true", help="print JSON instead of tables")

    demo = commands.add_parser(
        "demo",
        parents=[output],
        help="run a replicated demo app (or --check every strategy)",
        description="Start N replicas of a demo app behind a load balancer and watch what "
        "happens to sessions. With --check, run a scripted client against every strategy.",
    )
    demo.add_argument(
        "--strategy",
        choices=sorted(STRATEGIES),
        help="how replicas keep sessions (default: shared; --check: all)",
    )
    demo.add_argument("--replicas", type=int, default=3, help="number of replicas (default 3)")
    demo.add_argument(
        "--port",
        type=int,
        default=8000,
        help="balancer port on 127.0.0.1 (default 8000; 0: any free port)",
    )
    demo.add_argument(
        "--store",
        metavar="URL",
        help="shared store: sqlite:///path, redis://..., postgresql://... "
        "(default: a SQLite file in a temporary directory)",
    )
    demo.add_argument(
        "--encrypted",
        action="store_true",
        help="client and header strategies: encrypted tokens (JWE), not signed",
    )
    demo.add_argument(
        "--check",
        action="store_true",
        help="run the scripted client against each strategy and judge it",
    )
    demo.add_argument(
        "--requests",
        type=int,
        default=100,
        help="--check: cart requests per strategy (default 100)",
    )
    demo.add_argument("--plot", metavar="FILE.png", help="--check: also draw a chart")
    demo.add_argument("--exit-with-parent", action="store_true", help=argparse.SUPPRESS)
    demo.set_defaults(handler=cmd_demo)

    key_source = argparse.ArgumentParser(add_help=False)
    key_source.add_argument(
        "--keys-file", metavar="PATH", help=f"key file (default: the keys in ${KEYS_ENV})"
    )
    store = argparse.ArgumentParser(add_help=False, parents=[output])
    store.add_argument("--store", metavar="URL", help=f"session store URL (default: ${STORE_ENV})")
    session_store = argparse.ArgumentParser(add_help=False, parents=[store, key_source])
    session_store.add_argument(
        "--client-side",
        action="store_true",
        help="the store is the registry of client-side sessions: revocations also go to "
        "its revocation list (needs the keys)",
    )
    sessions = commands.add_parser("sessions", help="list and revoke sessions in a store")
    actions = sessions.add_subparsers(dest="action", required=True, metavar="ACTION")
    listing = actions.add_parser("list", parents=[session_store], help="a user's live sessions")
    listing.add_argument(
        "--user", required=True, help="whose sessions (stores index sessions per user)"
    )
    listing.set_defaults(handler=cmd_sessions_list)
    revoke = actions.add_parser("revoke", parents=[session_store], help="end one session by its ID")
    revoke.add_argument("id", help="public session ID, as `sessions list` shows it")
    revoke.set_defaults(handler=cmd_sessions_revoke)
    revoke_user = actions.add_parser(
        "revoke-user", parents=[session_store], help="end every session of a user"
    )
    revoke_user.add_argument("user")
    revoke_user.add_argument("--keep", metavar="ID", help="a session ID to spare")
    revoke_user.set_defaults(handler=cmd_sessions_revoke_user)
    purge = actions.add_parser("purge", parents=[session_store], help="delete expired records now")
    purge.set_defaults(handler=cmd_sessions_purge)

    keys = commands.add_parser("keys", help="make and check client-side session keys")
    key_actions = keys.add_subparsers(dest="action", required=True, metavar="ACTION")
    new = key_actions.add_parser("new", parents=[output], help="print a new key")
    new.add_argument("--count", type=int, default=1, help="how many keys (default 1)")
    new.add_argument(
        "--alg",
        choices=["HS256", "EdDSA", "ES256"],
        default="HS256",
        help="HS256: a symmetric key (default); EdDSA (Ed25519) or ES256 (P-256): a private "
        "signing key as a one-line JWK, whose public half other services verify with",
    )
    new.set_defaults(handler=cmd_keys_new)
    public = key_actions.add_parser(
        "jwks",
        parents=[key_source],
        help="print the public JWK set of the configured signing keys (no private key)",
    )
    public.set_defaults(handler=cmd_keys_jwks)
    check = key_actions.add_parser(
        "check",
        parents=[output, key_source],
        help="validate the configured keys (never prints them)",
    )
    check.set_defaults(handler=cmd_keys_check)

    token = commands.add_parser("token", help="look inside a client-side session token")
    token_actions = token.add_subparsers(dest="action", required=True, metavar="ACTION")
    inspect = token_actions.add_parser(
        "inspect",
        parents=[key_source, store],
        help="verify a token with the configured keys; print header, claims, deadlines "
        "and (with a store) whether it is revoked",
    )
    inspect.add_argument("token", help="the token, or - to read it from stdin")
    inspect.set_defaults(handler=cmd_token_inspect)
    return parser


_ID_SHAPE = re.compile(r"-[A-Za-z0-9_-]{15,}")  # a session ID that begins with "-"


def protect_ids(
    argv: Sequence[str], options: Sequence[str] = ("--keep",), positional_after: str = "revoke"
) -> list[str]:
    """Session IDs are base64url and may begin with "-", which argparse would take for an
    option: `--keep ID` (for each of `options`) becomes `--keep=ID`, and an ID right after
    `positional_after` moves behind a final `--`, so IDs can be pasted from `sessions list`
    as they are. (The Django management command uses it too.)"""
    args = list(argv)
    moved: list[str] = []
    for i in range(len(args) - 1, 0, -1):
        if _ID_SHAPE.fullmatch(args[i]):
            if args[i - 1] in options:
                args[i - 1 : i + 1] = [f"{args[i - 1]}={args[i]}"]
            elif args[i - 1] == positional_after and "--" not in args:
                moved.insert(0, args.pop(i))
    return args + ["--", *moved] if moved else args


def main(argv: Sequence[str] | None = None, out: TextIO | None = None) -> int:
    """Run the command line `argv` (default: `sys.argv[1:]`); returns the exit code."""
    from .exceptions import ConfigurationError, StoreError

    args = build_parser().parse_args(protect_ids(sys.argv[1:] if argv is None else argv))
    out = sys.stdout if out is None else out
    try:
        code: int = args.handler(args, out)
        out.flush()  # here, not at exit: a closed pipe is then an error caught below
    except BrokenPipeError:
        _discard(out)
        return EXIT_PIPE
    except Failure as exc:
        print(f"coatcheck: error: {exc}", file=sys.stderr)
        return exc.code
    except StoreError as exc:
        print(f"coatcheck: error: the store failed: {exc}", file=sys.stderr)
        return EXIT_STORE
    except ConfigurationError as exc:
        print(f"coatcheck: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        print("coatcheck: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    return code


def _discard(out: TextIO) -> None:
    """Quietly drop what is left of `out` after its reader went away (`| head`).

    What it still buffers would be flushed at exit into the closed pipe, and the
    interpreter would print `Exception ignored ... BrokenPipeError`; pointing its file
    descriptor at /dev/null makes that flush succeed, writing nothing (the recipe of the
    Python documentation, "Note on SIGPIPE"). SIGPIPE is not restored to its default
    instead: that would also kill the demo's servers when a client hangs up.
    """
    try:
        fd = out.fileno()
    except (OSError, ValueError):  # not a file (a StringIO in tests): nothing to flush at exit
        return
    devnull = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(devnull, fd)
    finally:
        os.close(devnull)
