"""Session lifecycle and security events, logged as OWASP's cheat sheet asks (CS-34).

Two loggers: `coatcheck.security` for input that failed a check (malformed, unknown,
expired, tampered or revoked IDs and tokens, CSRF failures) and `coatcheck.session` for the
normal lifecycle (created, login, rotated, logout, revoked). Every line names the event
and carries a salted hash of the session ID (`ids.log_hash`), never the ID or token itself;
the same hash is also attached as `extra={"session_hash": ...}` for structured handlers.
"""

from __future__ import annotations

import logging

from .ids import log_hash

__all__ = ["Audit"]

security_log = logging.getLogger("coatcheck.security")
session_log = logging.getLogger("coatcheck.session")


class Audit:
    """Writes events with the manager's log salt. Replicas sharing a salt share hashes."""

    __slots__ = ("_salt",)

    def __init__(self, salt: bytes) -> None:
        self._salt = salt

    def __repr__(self) -> str:
        return "<Audit>"

    def hash(self, value: str | None) -> str:
        return "-" if value is None else log_hash(self._salt, value)

    def security(self, event: str, value: str | None, detail: str = "") -> None:
        """A security event about the ID or token `value` (warning level)."""
        if security_log.isEnabledFor(logging.WARNING):
            digest = self.hash(value)
            security_log.warning(
                "%s session=%s%s", event, digest, f" {detail}" if detail else "",
                extra={"event": event, "session_hash": digest},
            )  # fmt: skip

    def lifecycle(self, event: str, value: str | None, detail: str = "") -> None:
        """A normal lifecycle event about the session whose handle is `value`."""
        if session_log.isEnabledFor(logging.INFO):
            digest = self.hash(value)
            session_log.info(
                "%s session=%s%s", event, digest, f" {detail}" if detail else "",
                extra={"event": event, "session_hash": digest},
            )  # fmt: skip
