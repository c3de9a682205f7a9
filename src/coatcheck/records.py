"""The bytes a server-side session is stored as: compact JSON, never pickle.

A record is `{"d": data, "c": created, "s": last_seen, "r": rotated, "u": user,
"a": authenticated, "ip": ..., "ua": ..., "p": persistent, "x": csrf secret, "v": verifier,
"pv": previous verifier, "pe": until when the previous one is accepted, "rv": the
`[verifier, until]` pairs replaced before that, newest first, "pa" / "pi": the absolute /
idle limit a persistent session asked for at `set_persistent`, "l": assurance level}`,
keyed by the session's handle; keys with empty values are left out, and so is the lowest
assurance level (`session.DEFAULT_ASSURANCE`). `v` is the SHA-256 (with
`ServerSide(keys=...)`, an HMAC) of the secret the client holds (`ids.verifier_hash`); a
client-side registry record has none, so no secret opens it. Anything else decodes to
`StoreCorrupted`.
"""

from __future__ import annotations

import math
from typing import Any, NamedTuple

from ._fast import fast_constructor
from .exceptions import StoreCorrupted
from .jsonio import dumps, loads
from .lifetimes import RECORD_LIMITS, put_limits, read_limits
from .reuse import RETIRED
from .session import DEFAULT_ASSURANCE, Session

__all__ = ["Credentials", "Stored", "decode", "dumps", "encode"]

_isfinite = math.isfinite


class Credentials(NamedTuple):
    """The secrets that open a server-side record: the hash of the current one, and the
    hash of the one it replaced with the time it stops being accepted (the grace window
    after a renewal), if any; and the hashes of the secrets replaced before that one, newest
    first, with the end of their grace windows: they open nothing, but are recognised if
    presented (`coatcheck.reuse`)."""

    verifier: str
    previous: str | None = None
    previous_until: float = 0.0
    retired: tuple[tuple[str, float], ...] = ()


class Stored(NamedTuple):
    """A decoded session record. (A NamedTuple, not a frozen dataclass: it is built on
    every request, and costs a fifth as much.)"""

    data: dict[str, Any]
    created_at: float
    last_seen: float
    rotated_at: float
    user: str | None
    authenticated_at: float | None
    ip: str | None
    user_agent: str | None
    persistent: bool
    csrf_secret: str | None
    credentials: Credentials | None
    #: `Session.persistent_limits`: what a persistent session asked for (None: nothing).
    persistent_limits: tuple[float, float] | None = None
    #: The assurance level of the latest authentication; None: the lowest (or no user).
    assurance: str | None = None


new_credentials = fast_constructor(Credentials, "verifier", "previous", "previous_until", "retired")
new_stored = fast_constructor(
    Stored,
    "data",
    "created_at",
    "last_seen",
    "rotated_at",
    "user",
    "authenticated_at",
    "ip",
    "user_agent",
    "persistent",
    "csrf_secret",
    "credentials",
    "persistent_limits",
    "assurance",
)


def encode(
    fields: Session | Stored,
    data: dict[str, Any] | None = None,
    credentials: Credentials | None = None,
) -> bytes:
    """The record bytes of `fields` (a session, or a `Stored` record being rebased: they
    name their fields alike), with `data` instead of the session's own if given, opened by
    `credentials` (none: a registry record). The one place the format is written."""
    doc: dict[str, Any] = {
        "d": fields.data() if data is None else data,  # type: ignore[operator]
        "c": fields.created_at,
        "s": fields.last_seen,
        "r": fields.rotated_at,
    }
    if fields.user is not None:
        doc["u"] = fields.user
    if fields.authenticated_at is not None:
        doc["a"] = fields.authenticated_at
    if fields.ip is not None:
        doc["ip"] = fields.ip
    if fields.user_agent is not None:
        doc["ua"] = fields.user_agent
    if fields.persistent:
        doc["p"] = 1
        put_limits(doc, fields.persistent_limits, RECORD_LIMITS)
    if fields.csrf_secret is not None:
        doc["x"] = fields.csrf_secret
    level = fields.assurance
    if level is not None and level != DEFAULT_ASSURANCE and fields.user is not None:
        doc["l"] = level
    if credentials is not None:
        doc["v"] = credentials.verifier
        if credentials.previous is not None:
            doc["pv"] = credentials.previous
            doc["pe"] = credentials.previous_until
        if credentials.retired:
            doc["rv"] = [list(pair) for pair in credentials.retired]
    return dumps(doc)


def decode(raw: bytes) -> Stored:
    """Decode record bytes; raises `StoreCorrupted` for anything coatcheck did not write.

    Every field is type-checked, so a record planted or damaged in the store cannot smuggle
    a string where a timestamp belongs (or a NaN, which compares false with everything: a
    session stamped NaN would never expire). The checks for what coatcheck itself writes
    come first; this runs on every request.
    """
    try:
        doc = loads(raw)
        data = doc["d"]
        if data.__class__ is not dict:
            raise TypeError
        created, seen, rotated = doc["c"], doc["s"], doc["r"]
        if not (created.__class__ is seen.__class__ is rotated.__class__ is float):
            created, seen, rotated = _time(created), _time(seen), _time(rotated)
        auth = doc.get("a")
        if auth is not None:
            auth = _time(auth)
        user, ip, agent, csrf = doc.get("u"), doc.get("ip"), doc.get("ua"), doc.get("x")
        level = doc.get("l")
        if (
            (user is not None and user.__class__ is not str)
            or (level is not None and (level.__class__ is not str or not level or user is None))
            or (ip is not None and ip.__class__ is not str)
            or (agent is not None and agent.__class__ is not str)
            or (csrf is not None and csrf.__class__ is not str)
        ):
            raise TypeError
        verifier = doc.get("v")
        credentials = None
        if verifier is not None:
            previous = doc.get("pv")
            if verifier.__class__ is not str or (
                previous is not None and previous.__class__ is not str
            ):
                raise TypeError
            rv = doc.get("rv")
            retired = () if rv is None else _verifiers(rv)
            credentials = new_credentials(
                (verifier, previous, 0.0 if previous is None else _time(doc["pe"]), retired)
            )
        return new_stored(
            (
                data,
                created,
                seen,
                rotated,
                user,
                auth,
                ip,
                agent,
                bool(doc.get("p")),
                csrf,
                credentials,
                None if "pa" not in doc and "pi" not in doc else _limits(doc),
                level,
            )
        )
    except (ValueError, TypeError, KeyError, AttributeError, OverflowError):
        raise StoreCorrupted("session record is not valid coatcheck JSON") from None


def _limits(doc: dict[str, Any]) -> tuple[float, float]:
    # Only a persistent session has limits of its own, each a number of seconds > 0.
    if not doc.get("p"):
        raise ValueError
    return read_limits(doc, RECORD_LIMITS)


def _verifiers(value: object) -> tuple[tuple[str, float], ...]:
    # At most `reuse.RETIRED` pairs: a planted record cannot make a request compare a
    # thousand hashes.
    if not isinstance(value, list) or len(value) > RETIRED:
        raise TypeError
    pairs = []
    for pair in value:
        if pair.__class__ is not list or len(pair) != 2 or pair[0].__class__ is not str:
            raise TypeError
        pairs.append((pair[0], _time(pair[1])))
    return tuple(pairs)


def _time(value: object) -> float:
    # Only JSON numbers (orjson refuses NaN and infinities): not a string ("1e9") or a bool.
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError
    seconds = float(value)  # OverflowError for an integer beyond float range
    if not _isfinite(seconds):
        raise ValueError
    return seconds
