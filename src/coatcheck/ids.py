"""Session IDs: the secret the client carries and the public handle derived from it.

A session ID is 256 bits from `secrets`, written as 43 base64url characters. It is the
secret: whoever holds it holds the session. The store never sees it: records are keyed by
the *public ID*, the SHA-256 of the secret (also base64url, 43 characters). A store dump,
a log line or an admin page that shows public IDs therefore holds no usable cookie, and a
public ID cannot be turned back into the secret.
"""

from __future__ import annotations

import binascii
import hashlib
import hmac
import re
import secrets

__all__ = ["ID_LENGTH", "is_wellformed", "log_hash", "new_id", "public_id"]

ID_BYTES = 32  # 256 bits
ID_LENGTH = 43  # base64url of 32 bytes, unpadded
_WELLFORMED = re.compile(r"[A-Za-z0-9_-]{43}")


def new_id() -> str:
    """A fresh session ID: 256 bits from the operating system's CSPRNG."""
    return secrets.token_urlsafe(ID_BYTES)


def is_wellformed(value: str) -> bool:
    """Whether `value` has the length and alphabet of a session ID.

    Checked before anything reaches a store, so a crafted cookie can never become a store
    query of unexpected size or content.
    """
    return len(value) == ID_LENGTH and _WELLFORMED.fullmatch(value) is not None


_URLSAFE = bytes.maketrans(b"+/", b"-_")


def public_id(session_id: str) -> str:
    """The public handle of a session ID: base64url(SHA-256(id)), the key it is stored under."""
    digest = hashlib.sha256(session_id.encode("ascii")).digest()
    # binascii directly: `base64.urlsafe_b64encode` costs four times as much (every request).
    return binascii.b2a_base64(digest, newline=False)[:43].translate(_URLSAFE).decode("ascii")


def log_hash(salt: bytes, value: str) -> str:
    """A salted, truncated hash of `value` for log lines: it correlates events, never identifies.

    Replicas configured with the same salt produce the same hash for the same ID, so one
    session can be followed across a cluster's logs without the logs holding anything usable.
    """
    return hmac.new(salt, value.encode("utf-8", "surrogatepass"), hashlib.sha256).hexdigest()[:16]
