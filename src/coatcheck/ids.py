"""Session secrets and handles: what the client carries and what everyone else may see.

A session has two names, never confused:

- its **handle**: at least 128 random bits (22 base64url characters), given when the session begins
  and kept until it ends. Renewal and `regenerate()` never change it; `login()` and logout
  end it. It is what listings show, what logs correlate, what `revoke()` takes and what the
  store keys the record by. It opens nothing on its own.
- its **secret**: the handle followed by a verifier of at least 256 random bits (65
  characters in all), carried
  by the cookie or header. The store keeps only the SHA-256 of the current secret (and of
  the previous one during a renewal's grace window), so a store dump holds no usable cookie,
  and a presented secret is checked against that hash in constant time.

This is the split-token pattern: the handle selects the record, the verifier proves
possession. Because the record's key never moves, ending a session is one delete that no
concurrent renewal can dodge.
"""

from __future__ import annotations

import binascii
import hashlib
import hmac
import os
import re

__all__ = [
    "HANDLE_LENGTH",
    "SECRET_LENGTH",
    "handle_of",
    "is_handle",
    "is_wellformed",
    "log_hash",
    "new_handle",
    "new_secret",
    "verifier_hash",
]

HANDLE_BYTES = 16  # 128 bits: unique, and guessing one gains nothing without a verifier
HANDLE_LENGTH = 22  # base64url of 16 bytes, unpadded
VERIFIER_BYTES = 32  # 256 bits
SECRET_LENGTH = HANDLE_LENGTH + 43  # + base64url of 32 bytes
_SECRET = re.compile(r"[A-Za-z0-9_-]{65}")
_HANDLE = re.compile(r"[A-Za-z0-9_-]{22}")


def new_handle() -> str:
    """A fresh session handle: 128 bits from the operating system's CSPRNG (what
    `secrets.token_urlsafe(16)` gives, in one Python call instead of five: every new
    client-side visitor makes one)."""
    return _b64url(os.urandom(HANDLE_BYTES))[:HANDLE_LENGTH]


def new_secret(handle: str | None = None) -> str:
    """A fresh secret for session `handle`: 256 new CSPRNG bits after it. With no handle, a
    new session's: one draw of 49 random bytes gives both parts (a 132-bit handle and a
    258-bit verifier), a third cheaper than two draws (every new visitor makes one)."""
    if handle is None:
        return _b64url(os.urandom(49))[:SECRET_LENGTH]
    return handle + _b64url(os.urandom(VERIFIER_BYTES))[:43]


def is_wellformed(value: str) -> bool:
    """Whether `value` has the length and alphabet of a session secret.

    Checked before anything reaches a store, so a crafted cookie can never become a store
    query of unexpected size or content.
    """
    return len(value) == SECRET_LENGTH and _SECRET.fullmatch(value) is not None


def is_handle(value: object) -> bool:
    """Whether `value` has the length and alphabet of a session handle."""
    return isinstance(value, str) and len(value) == HANDLE_LENGTH and bool(_HANDLE.fullmatch(value))


def handle_of(secret: str) -> str:
    """The handle of a well-formed secret (its first 22 characters)."""
    return secret[:HANDLE_LENGTH]


_URLSAFE = bytes.maketrans(b"+/", b"-_")


def _b64url(raw: bytes) -> str:
    # binascii directly: `base64.urlsafe_b64encode` costs four times as much.
    return binascii.b2a_base64(raw, newline=False).translate(_URLSAFE).decode("ascii")


def verifier_hash(secret: str, key: bytes | None = None) -> str:
    """What the store keeps of a secret: SHA-256(secret) in hex, or HMAC-SHA-256(key,
    secret) with a `key`, which binds the record to whoever holds it. (Hex: one C call,
    half the cost of base64url, on every request.)"""
    raw = secret.encode("ascii")
    if key is None:
        return hashlib.sha256(raw).hexdigest()
    return hmac.digest(key, raw, "sha256").hex()  # OpenSSL's one-shot HMAC: no hmac.HMAC


def log_hash(salt: bytes, value: str) -> str:
    """A salted, truncated hash of `value` for log lines: it correlates events, never identifies.

    Replicas configured with the same salt produce the same hash for the same ID, so one
    session can be followed across a cluster's logs without the logs holding anything usable.
    """
    return hmac.digest(salt, value.encode("utf-8", "surrogatepass"), "sha256").hex()[:16]
