"""Theft detection on reuse: a secret or token that its session already replaced, presented
after the grace window.

Renewal and `regenerate()` give a live session a new secret (server side) or a new token
generation (client side); the one replaced keeps working for `Lifetimes.grace` seconds, so
requests already in flight do not lose the session. Presented later, it is a strong sign
that it was copied: owner and thief both hold the session, and one of them is using an old
copy (RFC 9700 §4.14.2, refresh-token reuse). Which one cannot be told: if the thief
renewed first, the owner is the one presenting the old copy.

What is recognised, and for how long (docs/policies.md, "Theft detection on reuse"):

- server side, the last `RETIRED` secrets a renewal or `regenerate()` replaced for the
  session's handle (the record keeps their hashes, never the secrets), for as long as the
  session lives; a `login()` moves the session to a new handle and forgets them, so a
  secret from before the login is an unknown one (`session.unknown`);
- client side, a token of an older generation than a `regenerate()` gave the session, while
  the token itself is within its deadlines and its session is not revoked (the revocation
  list's generation entries); a token re-issued by a renewal keeps its generation and stays
  valid, so it is not recognised.

Every recognised reuse is logged as `session.reuse` on `coatcheck.security`, with the
salted hash of the session's handle (never the secret or token), and the request gets a
fresh anonymous session. With `SessionManager(on_reuse="revoke")`, the default, the live
session is also ended, exactly as `SessionAdmin.revoke` would: the owner's copy and the
thief's both stop working. With `"log"` the event is only logged.

Only the server's timestamps count: a request is a reuse if it arrives (its `now`, from the
manager's clock) at or after the grace window's end that the renewing replica wrote.
"""

from __future__ import annotations

import hmac
from typing import TYPE_CHECKING

from .ids import verifier_hash
from .session import fresh

if TYPE_CHECKING:
    from .plans import Context, Opening
    from .records import Credentials
    from .session import Session

__all__ = ["EVENT", "RETIRED", "detected", "is_retired", "report", "retire"]

#: The security event a reuse is logged as.
EVENT = "session.reuse"
#: How many replaced secrets of one handle a server-side record recognises: the previous
#: one (after its grace window) and the ones before it, newest first. At the default
#: renewal of 15 minutes, the last hour of an active session's secrets.
RETIRED = 4

_same = hmac.compare_digest


def retire(old: Credentials) -> tuple[tuple[str, float], ...]:
    """The retired verifiers to keep once a renewal replaces the secret of `old`: its
    previous secret joins them (with the end of its grace window), the oldest past
    `RETIRED` is forgotten (the current secret becomes the new `previous`, the first of the
    `RETIRED`)."""
    if old.previous is None:
        return old.retired[: RETIRED - 1]
    return ((old.previous, old.previous_until), *old.retired)[: RETIRED - 1]


def is_retired(
    secret: str, credentials: Credentials, now: float, keys: tuple[bytes | None, ...]
) -> bool:
    """Whether `secret`, which does not open the record of `credentials`, is one the record
    replaced at least its grace window before `now`: its previous secret (past the window,
    or it would have opened it) or one of the retired ones. One replaced again before its
    window ended (two renewals within `grace`) is not a reuse until the window's end: it
    is refused as an unknown secret meanwhile, as before. Compared in constant time, under
    every hash key of the ring."""
    known = credentials.retired
    if credentials.previous is not None:
        known = ((credentials.previous, credentials.previous_until), *known)
    if not known:
        return False
    for key in keys:  # newest first; one unless keys are being rotated
        presented = verifier_hash(secret, key)
        for verifier, until in known:
            if _same(presented, verifier):
                return now >= until
    return False


def report(context: Context, handle: str, mode: str) -> bool:
    """Log the reuse of a replaced secret or token of session `handle`; whether the
    session is to be ended (`on_reuse="revoke"`)."""
    revoke = context.on_reuse == "revoke"
    context.audit.security(EVENT, handle, f"action={context.on_reuse} mode={mode}")
    if revoke:
        context.audit.lifecycle("session.revoked", handle, "reason=reuse")
    return revoke


def detected(context: Context, opening: Opening, mode: str, handle: str) -> Session:
    """Server side: report the reuse of a replaced secret of session `handle` and give the
    request a fresh session; with `on_reuse="revoke"`, that session's commit deletes the
    record of `handle` (the `stale` key of `fresh`)."""
    if not report(context, handle, mode):
        return fresh(opening, mode, context.lifetimes)
    session = fresh(opening, mode, context.lifetimes, handle)
    session._state.reused = handle  # (for an adapter that commits no empty session: Django)
    return session
