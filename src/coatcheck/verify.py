"""`Verifier`: check coatcheck's EdDSA / ES256 session tokens in another service, with the
public JWK set alone.

The service that owns the sessions signs its tokens with a private key
(`ClientSide(KeyRing with a signing key)`) and publishes the public keys
(`SessionMiddleware(jwks_path="/.well-known/jwks.json")`). Any other service, in Python,
builds a `Verifier` from that URL, a file or a dict, and calls `verify(token)`: it gets the
claims (`sid`, `sub`, `iat`, `exp`, `idl`, `dat`, ...) or `InvalidToken`, whose message names
the failed check (for a log; never the token).

What is checked, in order, each a refusal:
- the token's form and header exactly as `ClientSide` checks it (`coatcheck.asymmetric`):
  the `alg` must be one of `algorithms` (a fixed list, default EdDSA and ES256; HS256 and
  `none` are never accepted) *and* the algorithm of the key its `kid` names; `crit`, `jku`,
  `jwk`, `x5u`, `x5c`, `b64` and `zip` headers are refused;
- the signature;
- the time claims at the verifier's clock, with `leeway` seconds of skew (`check_times`):
  `iat` not in the future, `exp` and `idl` not past, `nbf` not in the future when present;
  `iat`, `exp` and `idl` are required;
- with `revocations`, the `sid` and `sub` against a `RevocationList` kept in sync with the
  owner's revocation store (the same URL the owner's `ClientSide(store=...)` uses), at most
  `staleness` seconds old, as `ClientSide` does it. If the store cannot be read, the copy is
  used for up to `max_staleness` seconds after the last successful sync; past that,
  `verify` raises `StoreUnavailable` rather than answer without revocations.

Key set cache: a set fetched from a URL is kept for `max_age` seconds (default 300) and
refetched after; a token whose `kid` is not in the set triggers a refetch at once, but at
most once per `min_refresh` seconds (default 30), so forged `kid`s cannot make the verifier
hammer the key server. A fetch that fails keeps the old set. Bound: a new key is accepted
here at most `min_refresh` seconds after it is published (plus any HTTP cache in between).

A `Verifier` is safe to share between threads: the key set is swapped as a whole.
"""

from __future__ import annotations

import json
import math
import threading
import time
import urllib.request
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any

from .asymmetric import ALGORITHMS, PublicKey, public_key_from_jwk, verify_compact
from .exceptions import ConfigurationError, InvalidToken, StoreError, StoreUnavailable
from .revocation import REVOKED, RevocationList, RevocationStore
from .tokens import MAX_TOKEN_LENGTH, check_times

__all__ = ["Verifier", "parse_jwks"]

#: Bytes a fetched JWK set may have; a larger answer is refused.
MAX_JWKS_BYTES = 64 * 1024


def parse_jwks(
    jwks: Mapping[str, Any], algorithms: Iterable[str] = ALGORITHMS
) -> dict[str, PublicKey]:
    """The usable keys of a JWK set by `kid`: Ed25519 and P-256 signature keys whose
    algorithm is in `algorithms`; other keys (symmetric, RSA, encryption) are skipped, and
    a JWK with a private member (`d`) or duplicate `kid` makes the whole set refused with
    `ConfigurationError`."""
    allowed = set(algorithms)
    keys = jwks.get("keys") if isinstance(jwks, Mapping) else None
    if not isinstance(keys, list):
        raise ConfigurationError("a JWK set is a JSON object with a 'keys' list")
    found: dict[str, PublicKey] = {}
    for position, jwk in enumerate(keys, 1):
        if not isinstance(jwk, Mapping):
            raise ConfigurationError(f"JWK {position} is not a JSON object")
        if "d" in jwk or "k" in jwk:
            raise ConfigurationError(
                f"JWK {position} holds a private or secret key: a verifier needs public keys "
                "only, and a published set must never hold others"
            )
        try:
            key = public_key_from_jwk(jwk)
        except ValueError:
            continue  # not a key this verifier can use (RSA, symmetric, encryption)
        if key.alg not in allowed:
            continue
        if key.kid in found:
            raise ConfigurationError(f"JWK {position}: kid appears twice in the set")
        found[key.kid] = key
    return found


def _fetch_url(url: str, timeout: float) -> Mapping[str, Any]:
    if not url.startswith(("https://", "http://")):
        raise ConfigurationError("a JWK set URL is http:// or https://")
    request = urllib.request.Request(url, headers={"accept": "application/jwk-set+json"})  # noqa: S310
    with urllib.request.urlopen(request, timeout=timeout) as answer:  # noqa: S310
        body = answer.read(MAX_JWKS_BYTES + 1)
    if len(body) > MAX_JWKS_BYTES:
        raise ValueError("JWK set larger than the limit")
    document: Mapping[str, Any] = json.loads(body)
    return document


class Verifier:
    """Verifies EdDSA / ES256 coatcheck tokens with public keys (see the module doc).

    `jwks` is a JWK set (a dict); `fetch`, if given, is called (no arguments) to get a
    fresh set when the cache is `max_age` old or a `kid` is unknown. `clock` returns
    seconds since the epoch (default `time.time`; tests inject one).
    """

    def __init__(
        self,
        jwks: Mapping[str, Any] | None = None,
        *,
        fetch: Callable[[], Mapping[str, Any]] | None = None,
        algorithms: Iterable[str] = ALGORITHMS,
        leeway: float = 5.0,
        required: Iterable[str] = ("iat", "exp", "idl"),
        revocations: RevocationStore | str | None = None,
        staleness: float = 1.0,
        max_staleness: float = 60.0,
        max_age: float = 300.0,
        min_refresh: float = 30.0,
        max_length: int = MAX_TOKEN_LENGTH,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.algorithms = tuple(algorithms)
        refused = [a for a in self.algorithms if a not in ALGORITHMS]
        if refused or not self.algorithms:
            raise ConfigurationError(
                f"a Verifier accepts {' and '.join(ALGORITHMS)} only (asymmetric signatures: "
                "HS256 would need the secret, and `none` is never accepted)"
            )
        if jwks is None and fetch is None:
            raise ConfigurationError("a Verifier needs a JWK set or a way to fetch one")
        self.leeway = leeway
        self.required = tuple(required)
        self.max_age = max_age
        self.min_refresh = min_refresh
        self.max_length = max_length
        self.clock = clock
        self._fetch = fetch
        self._lock = threading.Lock()
        self._keys: dict[str, PublicKey] = {}
        self._fetched_at = -math.inf
        self._tried_at = -math.inf
        if jwks is not None:
            self._keys = parse_jwks(jwks, self.algorithms)
            self._fetched_at = clock()
        else:
            self._refresh(clock(), force=True, raise_errors=True)
        if isinstance(revocations, str):
            from .stores import revocations_for

            revocations = revocations_for(revocations)
        self.revocations: RevocationStore | None = revocations
        self.revocation_list = RevocationList()
        self.staleness = staleness
        self.max_staleness = max(max_staleness, staleness)

    def __repr__(self) -> str:
        return f"<Verifier keys={len(self._keys)} algorithms={','.join(self.algorithms)}>"

    # -- construction -------------------------------------------------------------------

    @classmethod
    def from_jwks_url(cls, url: str, *, timeout: float = 5.0, **options: Any) -> Verifier:
        """A verifier that fetches its keys from `url` (the owner's `jwks_path`), now and
        whenever the cache is due or a `kid` is unknown (rate-limited: `min_refresh`)."""
        return cls(fetch=lambda: _fetch_url(url, timeout), **options)

    @classmethod
    def from_jwks_file(cls, path: str | Path, **options: Any) -> Verifier:
        """A verifier with the JWK set in the JSON file `path`, reread when due or a `kid`
        is unknown (a deployment can replace the file)."""

        def read() -> Mapping[str, Any]:
            document: Mapping[str, Any] = json.loads(Path(path).read_text(encoding="utf-8"))
            return document

        return cls(fetch=read, **options)

    # -- use ----------------------------------------------------------------------------

    def public_keys(self) -> dict[str, PublicKey]:
        """The keys in use, by `kid` (a copy)."""
        return dict(self._keys)

    def verify(self, token: str | bytes) -> dict[str, Any]:
        """The claims of `token`, or `InvalidToken` (see the module doc)."""
        now = self.clock()
        if self._fetch is not None and now - self._fetched_at >= self.max_age:
            self._refresh(now)
        keys = self._keys
        try:
            claims = self._check(token, keys)
        except _UnknownKid:
            if self._fetch is None or not self._refresh(now):
                raise InvalidToken("JWS: unknown kid") from None
            try:
                claims = self._check(token, self._keys)
            except _UnknownKid:
                raise InvalidToken("JWS: unknown kid") from None
        check_times(claims, now=now, leeway=self.leeway, required=self.required)
        if self.revocations is not None:
            self._check_revocation(claims, now)
        return claims

    def _check(self, token: str | bytes, keys: dict[str, PublicKey]) -> dict[str, Any]:
        by_kid = {kid: (key, True) for kid, key in keys.items()}
        try:
            claims, _kid, _current, _raw = verify_compact(token, {}, by_kid, self.max_length)
        except InvalidToken as exc:
            if str(exc) == "JWS: unknown kid":
                raise _UnknownKid from None
            raise
        return claims

    def _refresh(self, now: float, *, force: bool = False, raise_errors: bool = False) -> bool:
        """Fetch the set again unless tried less than `min_refresh` ago; whether it was."""
        with self._lock:
            if not force and now - self._tried_at < self.min_refresh:
                return False
            self._tried_at = now
            assert self._fetch is not None  # noqa: S101 - callers check
            try:
                keys = parse_jwks(self._fetch(), self.algorithms)
            except (OSError, ValueError, ConfigurationError) as exc:
                if raise_errors:
                    raise ConfigurationError(
                        f"cannot load the JWK set: {type(exc).__name__}: {exc}"
                    ) from None
                import logging

                logging.getLogger("coatcheck").warning(
                    "JWK set refresh failed (%s); keeping the %d keys held",
                    type(exc).__name__,
                    len(self._keys),
                    extra={"event": "jwks.refresh_failed"},
                )
                return False
            self._keys, self._fetched_at = keys, now
            return True

    def _check_revocation(self, claims: Mapping[str, Any], now: float) -> None:
        sid, user, iat = claims.get("sid"), claims.get("sub"), claims.get("iat")
        if (
            not isinstance(sid, str)
            or (user is not None and not isinstance(user, str))
            or type(iat) not in (int, float)
        ):
            raise InvalidToken("token claims have the wrong types")
        rlist = self.revocation_list
        if rlist.due(now, self.staleness):
            assert self.revocations is not None  # noqa: S101 - the caller checks
            with self._lock:
                more = rlist.due(now, self.staleness)
                while more:  # page by page, as the driver polls
                    try:
                        entries, cursor = self.revocations.changes(rlist.cursor)
                    except StoreError as exc:
                        if now - rlist.synced_at >= self.max_staleness:
                            raise StoreUnavailable(
                                "revocation store unreachable past max_staleness: "
                                "revocations can no longer be trusted"
                            ) from exc
                        break
                    more = rlist.apply(entries, cursor, now)
        generation = claims.get("gen", 0)
        if type(generation) is not int:
            raise InvalidToken("token claims have the wrong types")
        if rlist.check(sid, user, float(iat), generation, now) == REVOKED:  # type: ignore[arg-type]
            raise InvalidToken("token revoked")


class _UnknownKid(Exception):
    """Internal: the token names a `kid` the verifier does not hold (yet)."""
