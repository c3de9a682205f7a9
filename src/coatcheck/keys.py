"""`KeyRing`: the master keys of client-side sessions and the subkeys derived from them.

A ring holds one or more master keys, **newest first**: the first key signs and encrypts,
every key verifies and decrypts. To rotate, put a new key in front and keep the old ones
until every token they made has expired; a token that verifies under an older key is
re-issued under the newest one (`Decoded.is_current` in `coatcheck.tokens`).

Master keys are never used directly. Each purpose gets its own 256-bit subkey, derived with
HKDF-SHA256 (RFC 5869, no salt, `info` = the purpose's label, 32 bytes), so a signing key
can never be confused with an encryption key or the ID-hashing key::

    coatcheck/jws-hs256      JWS HS256 signing key
    coatcheck/jwe-a256gcm    JWE dir/A256GCM content encryption key
    coatcheck/id-hash        key for hashing session IDs

Each subkey has a `kid`: 12 bytes of HKDF output from the same master key under the label
plus `#kid`, in base64url (16 characters). It names the key in token headers and JWK sets
and reveals nothing about either key.

Key text format (environment variable or file): base64url keys (`secrets.token_urlsafe(32)`
makes one; `=` padding is allowed) separated by commas or newlines, newest first; blank
lines and lines starting with `#` are ignored. Every key must decode to at least 32 bytes
(256 bits). Errors say which key (by position) is wrong and how to generate one, and never
repeat key material.

Asymmetric signing keys (EdDSA / ES256, `coatcheck.asymmetric`) may stand beside or instead
of those: a private key as a one-line JWK (`{...}`, what `coatcheck keys new --alg EdDSA`
prints) or a PEM block (`-----BEGIN PRIVATE KEY-----` ... `-----END PRIVATE KEY-----`),
newest first among themselves. The first signs client-side tokens, all verify, and
`KeyRing.jwks()` publishes their public halves only. A ring with signing keys and no
symmetric key derives its symmetric subkeys (JWE, ID hashing) from the signing keys' private
bytes, through HKDF under a label of its own, so one key file is enough.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import os
import re
import secrets
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from .exceptions import ConfigurationError

if TYPE_CHECKING:
    from .asymmetric import SigningKey

__all__ = [
    "ID_HASH",
    "JWE_A256GCM",
    "JWS_HS256",
    "MIN_KEY_BYTES",
    "KeyRing",
    "Purpose",
    "SubKey",
    "generate_key",
]

MIN_KEY_BYTES = 32  # 256 bits
DEFAULT_ENV = "COATCHECK_KEYS"
_KID_BYTES = 12
_B64URL = re.compile(r"[A-Za-z0-9_-]+={0,2}")
# One key of key text: a PEM block, a one-line JSON object (a JWK), or a base64url key.
_ENTRY = re.compile(
    r"-----BEGIN ([A-Z0-9 ]+)-----.*?-----END \1-----|\{[^{}]*\}|[^,\s][^,\n]*", re.S
)
_FROM_SIGNING_KEY = b"coatcheck/master-from-signing-key"
_HOW_TO_GENERATE = (
    "Generate a key with `coatcheck keys new` or "
    '`python -c "import secrets; print(secrets.token_urlsafe(32))"`, '
    "and list keys newest first, separated by commas or newlines."
)


@dataclass(frozen=True, slots=True)
class Purpose:
    """What a subkey is for: its HKDF label and how it is described in a JWK."""

    label: bytes  # HKDF info
    alg: str  # JWK "alg"
    use: str  # JWK "use": "sig" or "enc"
    length: int = 32  # bytes


JWS_HS256 = Purpose(b"coatcheck/jws-hs256", "HS256", "sig")
# A direct-encryption key's JWK "alg" is "dir" (the key management algorithm), which is
# what JOSE libraries match against a JWE header; its "enc" is A256GCM.
JWE_A256GCM = Purpose(b"coatcheck/jwe-a256gcm", "dir", "enc")
ID_HASH = Purpose(b"coatcheck/id-hash", "HS256", "sig")


@dataclass(frozen=True, slots=True)
class SubKey:
    """A derived key: its `kid`, its purpose and the secret (never shown in a repr)."""

    kid: str
    purpose: Purpose
    secret: bytes = field(repr=False)
    is_current: bool  # derived from the newest master key

    def jwk(self, *, include_secret: bool = False) -> dict[str, str]:
        """This key as a JWK (RFC 7517, `kty` "oct"); `k` only with `include_secret`."""
        jwk = {"kty": "oct", "kid": self.kid, "alg": self.purpose.alg, "use": self.purpose.use}
        if include_secret:
            jwk["k"] = _b64url(self.secret)
        return jwk


def generate_key() -> str:
    """A new 256-bit master key as base64url text, ready for `COATCHECK_KEYS` or a key file."""
    return secrets.token_urlsafe(MIN_KEY_BYTES)


def _b64url(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode("ascii")


def _hkdf(master: bytes, info: bytes, length: int) -> bytes:
    return HKDF(algorithm=hashes.SHA256(), length=length, salt=None, info=info).derive(master)


class KeyRing:
    """Master keys, newest first: the first signs and encrypts, all verify and decrypt.

    Build one from raw bytes (`KeyRing([key])`), from text (`KeyRing.parse`), from the
    environment (`KeyRing.from_env`), from a file (`KeyRing.from_file`), or make a fresh one
    for tests and development (`KeyRing.generate`). Subkeys are derived once, here; a ring is
    immutable and safe to share between threads.
    """

    __slots__ = ("_count", "_signing", "_subkeys")

    def __init__(self, keys: Iterable[bytes], *, signing: Iterable[SigningKey] = ()) -> None:
        # `Any`: checked below, where the compiled core would raise TypeError first.
        masters: list[Any] = list(keys)
        self._signing: tuple[SigningKey, ...] = _signing_keys(signing)
        if not masters and self._signing:
            masters = [
                _hkdf(key.secret_bytes(), _FROM_SIGNING_KEY, MIN_KEY_BYTES) for key in self._signing
            ]
        if not masters:
            raise ConfigurationError(f"a KeyRing needs at least one key. {_HOW_TO_GENERATE}")
        seen: set[bytes] = set()
        for position, key in enumerate(masters, 1):
            if not isinstance(key, bytes):
                raise ConfigurationError(
                    f"key {position} is a {type(key).__name__}, not bytes; "
                    f"use KeyRing.parse() for base64url text. {_HOW_TO_GENERATE}"
                )
            if len(key) < MIN_KEY_BYTES:
                raise ConfigurationError(
                    f"key {position} is {len(key) * 8} bits; keys must have at least "
                    f"{MIN_KEY_BYTES * 8} bits. {_HOW_TO_GENERATE}"
                )
            digest = hashlib.sha256(key).digest()
            if digest in seen:
                raise ConfigurationError(f"key {position} appears twice in the key ring")
            seen.add(digest)
        self._count = len(masters)
        self._subkeys: dict[bytes, tuple[SubKey, ...]] = {}
        for purpose in (JWS_HS256, JWE_A256GCM, ID_HASH):
            self._subkeys[purpose.label] = tuple(
                SubKey(
                    kid=_b64url(_hkdf(master, purpose.label + b"#kid", _KID_BYTES)),
                    purpose=purpose,
                    secret=_hkdf(master, purpose.label, purpose.length),
                    is_current=index == 0,
                )
                for index, master in enumerate(masters)
            )

    # -- construction -------------------------------------------------------------------

    @classmethod
    def generate(cls, count: int = 1, *, algorithm: str | None = None) -> KeyRing:
        """A ring of `count` fresh random keys (for tests and development): symmetric ones,
        or with `algorithm` ("EdDSA", "ES256") signing keys of that type."""
        if algorithm is not None:
            from .asymmetric import generate_signing_key

            return cls((), signing=[generate_signing_key(algorithm) for _ in range(count)])
        return cls(secrets.token_bytes(MIN_KEY_BYTES) for _ in range(count))

    @classmethod
    def parse(cls, text: str, *, source: str = "key text") -> KeyRing:
        """A ring from base64url keys separated by commas or newlines (see the module doc).

        `source` names where the text came from in error messages.
        """
        keys: list[bytes] = []
        signing: list[SigningKey] = []
        lines = [line for line in text.splitlines() if not line.strip().startswith("#")]
        for match in _ENTRY.finditer("\n".join(lines)):
            item = match.group(0).strip()
            if not item:
                continue
            position = len(keys) + len(signing) + 1
            if item.startswith(("{", "-----BEGIN")):
                from .asymmetric import load_private_key

                signing.append(load_private_key(item, position, source))
            else:
                keys.append(_decode_key(item, position, source))
        if not keys and not signing:
            raise ConfigurationError(f"{source} holds no key. {_HOW_TO_GENERATE}")
        try:
            return cls(keys, signing=signing)
        except ConfigurationError as exc:
            raise ConfigurationError(f"{source}: {exc}") from None

    @classmethod
    def from_env(
        cls, name: str = DEFAULT_ENV, *, environ: Mapping[str, str] | None = None
    ) -> KeyRing:
        """A ring from the environment variable `name` (default `COATCHECK_KEYS`)."""
        env = os.environ if environ is None else environ
        text = env.get(name)
        if text is None or not text.strip():
            raise ConfigurationError(
                f"the environment variable {name} is not set or empty. {_HOW_TO_GENERATE}"
            )
        return cls.parse(text, source=f"the environment variable {name}")

    @classmethod
    def from_file(cls, path: str | os.PathLike[str]) -> KeyRing:
        """A ring from a key file (one key per line or comma-separated, `#` comments)."""
        try:
            text = Path(path).read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            raise ConfigurationError(
                f"cannot read the key file {os.fspath(path)!r}: {type(exc).__name__}. "
                f"{_HOW_TO_GENERATE}"
            ) from None
        return cls.parse(text, source=f"the key file {os.fspath(path)!r}")

    # -- use ----------------------------------------------------------------------------

    def __len__(self) -> int:
        return self._count

    def signing_keys(self) -> tuple[SigningKey, ...]:
        """The asymmetric signing keys (EdDSA, ES256), newest first; empty for an HS256 ring."""
        return self._signing

    @property
    def signing_algorithm(self) -> str | None:
        """The algorithm of the newest signing key (the one that signs), or None."""
        return self._signing[0].alg if self._signing else None

    def __repr__(self) -> str:
        return f"<KeyRing keys={self._count}>"

    def __str__(self) -> str:  # its own method: an alias of `__repr__` breaks compiled
        return self.__repr__()

    def __reduce__(self) -> Any:
        raise TypeError("a KeyRing holds secrets and cannot be pickled")

    def subkeys(self, purpose: Purpose) -> tuple[SubKey, ...]:
        """The subkeys for `purpose`, newest master key first."""
        try:
            return self._subkeys[purpose.label]
        except KeyError:
            raise ConfigurationError(f"unknown key purpose {purpose.label!r}") from None

    def current(self, purpose: Purpose) -> SubKey:
        """The subkey of the newest master key for `purpose`: the one that signs or encrypts."""
        return self.subkeys(purpose)[0]

    def jwks(
        self,
        *,
        include_secret: bool = False,
        purposes: Iterable[Purpose] | None = None,
    ) -> dict[str, list[dict[str, str]]]:
        """The token keys as a JWK set (RFC 7517), newest first, for another service.

        A ring with signing keys publishes their public halves only (`kty` OKP or EC, with
        `kid`, `alg` and `use`): what a downstream service needs to verify its tokens, and
        safe to serve to anyone. A private or symmetric key is never in that set.

        Otherwise (HS256, or `purposes` naming symmetric subkeys), without `include_secret`
        the set lists each key's `kid`, `alg` and `use` only (what is in use, safe to show);
        with it, each JWK carries `k`, enough to verify or decrypt every token this ring
        accepts. Treat that output like the keys themselves.
        """
        if purposes is None:
            if self._signing and not include_secret:
                return {"keys": [key.public.jwk() for key in self._signing]}
            purposes = (JWS_HS256, JWE_A256GCM)
        return {
            "keys": [
                key.jwk(include_secret=include_secret)
                for purpose in purposes
                for key in self.subkeys(purpose)
            ]
        }


def _signing_keys(signing: Iterable[Any]) -> tuple[SigningKey, ...]:
    """The signing keys, newest first, each marked current or not; duplicates refused."""
    from dataclasses import replace

    from .asymmetric import SigningKey

    keys: list[SigningKey] = []
    for position, key in enumerate(signing, 1):
        if not isinstance(key, SigningKey):
            raise ConfigurationError(
                f"signing key {position} is a {type(key).__name__}, not a SigningKey"
            )
        if any(k.kid == key.kid for k in keys):
            raise ConfigurationError(f"signing key {position} appears twice in the key ring")
        keys.append(replace(key, is_current=position == 1))
    return tuple(keys)


def _decode_key(text: str, position: int, source: str) -> bytes:
    if _B64URL.fullmatch(text) is None or len(text.rstrip("=")) % 4 == 1:
        raise ConfigurationError(
            f"{source}: key {position} is not base64url text. {_HOW_TO_GENERATE}"
        )
    try:
        return base64.urlsafe_b64decode(text.rstrip("=") + "=" * (-len(text.rstrip("=")) % 4))
    except (binascii.Error, ValueError):  # pragma: no cover - the regex rules this out
        raise ConfigurationError(
            f"{source}: key {position} is not base64url text. {_HOW_TO_GENERATE}"
        ) from None
