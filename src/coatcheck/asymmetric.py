"""Asymmetric signing keys for client-side tokens: EdDSA (Ed25519) and ES256 (P-256).

With an HS256 ring, whoever can verify a token can also make one: a downstream service that
only needs to read sessions must hold the secret. With a signing key, the app signs with the
private key and every other service verifies with the public key alone, fetched from the
JWK set the app publishes (`KeyRing.jwks()`, `SessionMiddleware(jwks_path=...)`) and
checked with `coatcheck.verify.Verifier`.

    EdDSA  BASE64URL({"alg":"EdDSA","kid":K}) . BASE64URL(claims) . BASE64URL(64-byte sig)
    ES256  BASE64URL({"alg":"ES256","kid":K}) . BASE64URL(claims) . BASE64URL(R || S)

The algorithm is fixed by the key, never read from the token: each `kid` names one public
key of one type, and a token whose header names another `alg` (HS256 signed with the public
key as an HMAC secret, `none`, the other curve) is refused, as are unknown `kid`s and the
`crit`, `b64`, `zip`, `jku`, `jwk`, `x5u` and `x5c` headers, exactly as `JWSCodec` refuses
them. Segments must be canonical unpadded base64url; a signature must be exactly 64 bytes
(ES256: the JOSE `R || S` form, RFC 7518 3.4, not DER).

`kid` is the key's RFC 7638 JWK thumbprint (SHA-256, base64url): anyone holding the public
key computes the same name, and it reveals nothing of the private key.

Key text (in `COATCHECK_KEYS` or a key file, beside or instead of base64url symmetric keys):
a private key as a one-line JWK (`{"kty":"OKP","crv":"Ed25519","d":...,"x":...}`, what
`coatcheck keys new --alg EdDSA` prints) or a PKCS#8 PEM block (`-----BEGIN PRIVATE
KEY-----`). Signing keys are listed newest first, like symmetric ones: the first signs,
all verify.

ECDSA signatures are randomized and malleable (`(r, s)` and `(r, n - s)` both verify), so
two ES256 token texts may carry the same claims; only the key holder can make either.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519
from cryptography.hazmat.primitives.asymmetric.utils import (
    decode_dss_signature,
    encode_dss_signature,
)

from .exceptions import ConfigurationError, InvalidToken
from .tokens import (
    _FORBIDDEN_JWS,
    MAX_TOKEN_LENGTH,
    SEEN_TOKENS,
    Decoded,
    _ascii,
    _claims,
    _header_bytes,
    _parse_header,
    _payload,
    _Seen,
    _too_large,
    b64decode,
    b64encode,
    new_decoded,
)

__all__ = [
    "ALGORITHMS",
    "EDDSA",
    "ES256",
    "AsymmetricJWSCodec",
    "PublicKey",
    "SigningKey",
    "generate_signing_key",
    "load_private_key",
    "public_key_from_jwk",
]

EDDSA = "EdDSA"
ES256 = "ES256"
#: The asymmetric algorithms coatcheck signs and verifies with; nothing else is accepted.
ALGORITHMS = (EDDSA, ES256)
_SIGNATURE_BYTES = 64
_P256_BYTES = 32


def _b64(raw: bytes) -> str:
    return b64encode(raw).decode("ascii")


def _public_members(public: Any) -> dict[str, str]:
    """The required members of a public JWK (RFC 7638 3.2: what the thumbprint hashes)."""
    if isinstance(public, ed25519.Ed25519PublicKey):
        raw = public.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
        return {"crv": "Ed25519", "kty": "OKP", "x": _b64(raw)}
    numbers = public.public_numbers()
    return {
        "crv": "P-256",
        "kty": "EC",
        "x": _b64(numbers.x.to_bytes(_P256_BYTES, "big")),
        "y": _b64(numbers.y.to_bytes(_P256_BYTES, "big")),
    }


def thumbprint(members: Mapping[str, str]) -> str:
    """The RFC 7638 SHA-256 thumbprint of a public JWK's required members, base64url."""
    canonical = json.dumps(dict(members), sort_keys=True, separators=(",", ":"))
    return _b64(hashlib.sha256(canonical.encode("utf-8")).digest())


@dataclass(frozen=True, slots=True)
class PublicKey:
    """A verification key: its `kid`, its one algorithm and the key (never in a repr)."""

    kid: str
    alg: str
    key: Any = field(repr=False)  # Ed25519PublicKey | EllipticCurvePublicKey (P-256)

    def verify(self, signature: bytes, data: bytes) -> bool:
        """Whether `signature` (64 raw bytes) signs `data` under this key."""
        if len(signature) != _SIGNATURE_BYTES:
            return False
        try:
            if self.alg == EDDSA:
                self.key.verify(signature, data)
            else:
                r = int.from_bytes(signature[:_P256_BYTES], "big")
                s = int.from_bytes(signature[_P256_BYTES:], "big")
                self.key.verify(encode_dss_signature(r, s), data, ec.ECDSA(hashes.SHA256()))
        except InvalidSignature:
            return False
        return True

    def jwk(self) -> dict[str, str]:
        """This key as a public JWK (RFC 7517): no private member, ever."""
        return {**_public_members(self.key), "kid": self.kid, "alg": self.alg, "use": "sig"}


@dataclass(frozen=True, slots=True)
class SigningKey:
    """A private signing key: `kid` (RFC 7638 thumbprint), `alg`, and the key (never in a
    repr). `is_current`: the newest of its ring, the one that signs."""

    kid: str
    alg: str
    private: Any = field(repr=False)  # Ed25519PrivateKey | EllipticCurvePrivateKey (P-256)
    is_current: bool = False

    @property
    def public(self) -> PublicKey:
        """The public half, for verifying and publishing."""
        return PublicKey(self.kid, self.alg, self.private.public_key())

    def sign(self, data: bytes) -> bytes:
        """The 64-byte JOSE signature of `data`."""
        if self.alg == EDDSA:
            signature: bytes = self.private.sign(data)
            return signature
        r, s = decode_dss_signature(self.private.sign(data, ec.ECDSA(hashes.SHA256())))
        return r.to_bytes(_P256_BYTES, "big") + s.to_bytes(_P256_BYTES, "big")

    def secret_bytes(self) -> bytes:
        """The raw private key (Ed25519 seed or P-256 scalar): what the ring derives its
        symmetric subkeys from when it holds no symmetric key. Never logged."""
        if self.alg == EDDSA:
            raw: bytes = self.private.private_bytes_raw()
            return raw
        value: int = self.private.private_numbers().private_value
        return value.to_bytes(_P256_BYTES, "big")

    def private_jwk(self) -> dict[str, str]:
        """The private JWK (with `d`): the key text `coatcheck keys new --alg` prints. Treat
        it like the key itself."""
        return {
            **_public_members(self.private.public_key()),
            "d": _b64(self.secret_bytes()),
            "kid": self.kid,
            "alg": self.alg,
            "use": "sig",
        }


def _signing_key(private: Any) -> SigningKey:
    if isinstance(private, ed25519.Ed25519PrivateKey):
        alg = EDDSA
    elif isinstance(private, ec.EllipticCurvePrivateKey) and isinstance(
        private.curve, ec.SECP256R1
    ):
        alg = ES256
    else:
        raise ConfigurationError(
            "a signing key must be Ed25519 (EdDSA) or P-256 (ES256); other key types are "
            "not accepted"
        )
    return SigningKey(thumbprint(_public_members(private.public_key())), alg, private)


def generate_signing_key(alg: str = EDDSA) -> SigningKey:
    """A fresh private key for `alg` ("EdDSA" or "ES256")."""
    if alg == EDDSA:
        return _signing_key(ed25519.Ed25519PrivateKey.generate())
    if alg == ES256:
        return _signing_key(ec.generate_private_key(ec.SECP256R1()))
    raise ConfigurationError(f"signing algorithm must be one of {', '.join(ALGORITHMS)}")


def _jwk_bytes(jwk: Mapping[str, Any], name: str, length: int) -> bytes:
    value = jwk.get(name)
    if not isinstance(value, str):
        raise ValueError(f"member {name!r} missing")
    try:
        raw = b64decode(value.encode("ascii"))
    except (InvalidToken, UnicodeEncodeError, ValueError):
        raise ValueError(f"member {name!r} is not base64url") from None
    if len(raw) != length:
        raise ValueError(f"member {name!r} has the wrong length")
    return raw


def _public_from_jwk(jwk: Mapping[str, Any]) -> Any:
    kty, crv = jwk.get("kty"), jwk.get("crv")
    if kty == "OKP" and crv == "Ed25519":
        return ed25519.Ed25519PublicKey.from_public_bytes(_jwk_bytes(jwk, "x", 32))
    if kty == "EC" and crv == "P-256":
        x = int.from_bytes(_jwk_bytes(jwk, "x", _P256_BYTES), "big")
        y = int.from_bytes(_jwk_bytes(jwk, "y", _P256_BYTES), "big")
        return ec.EllipticCurvePublicNumbers(x, y, ec.SECP256R1()).public_key()
    raise ValueError("not an Ed25519 (OKP) or P-256 (EC) key")


def public_key_from_jwk(jwk: Mapping[str, Any]) -> PublicKey:
    """A verification key from a public JWK; `ValueError` (without key material) unless it
    is an Ed25519 or P-256 key whose `alg`, if given, is its own. A `kid` in the JWK is
    kept; without one, the thumbprint names it."""
    key = _public_from_jwk(jwk)
    alg = EDDSA if jwk.get("kty") == "OKP" else ES256
    if jwk.get("alg", alg) != alg:
        raise ValueError(f"a {jwk.get('crv')} key is for {alg} only")
    if jwk.get("use", "sig") != "sig":
        raise ValueError("not a signature key")
    kid = jwk.get("kid")
    if not isinstance(kid, str):
        kid = thumbprint(_public_members(key))
    return PublicKey(kid, alg, key)


def load_private_key(text: str, position: int, source: str) -> SigningKey:
    """A signing key from key text: a one-line private JWK or a PKCS#8 / SEC1 PEM block.
    Errors name the key by position and never repeat its text."""
    where = f"{source}: key {position}"
    if text.startswith("{"):
        try:
            jwk = json.loads(text)
            if not isinstance(jwk, dict):
                raise ValueError("not a JSON object")
            public = _public_from_jwk(jwk)
            if jwk.get("kty") == "OKP":
                d = _jwk_bytes(jwk, "d", 32)
                private: Any = ed25519.Ed25519PrivateKey.from_private_bytes(d)
            else:
                d = _jwk_bytes(jwk, "d", _P256_BYTES)
                private = ec.derive_private_key(int.from_bytes(d, "big"), ec.SECP256R1())
        except ValueError as exc:
            raise ConfigurationError(f"{where} is not a usable private JWK ({exc})") from None
        if _public_members(private.public_key()) != _public_members(public):
            raise ConfigurationError(f"{where}: the JWK's public part does not match its 'd'")
    else:
        try:
            private = serialization.load_pem_private_key(text.encode("ascii"), password=None)
        except (ValueError, TypeError, UnicodeEncodeError):
            raise ConfigurationError(
                f"{where} is not an unencrypted PEM private key (a public key belongs in the "
                "JWK set of a Verifier, not in a KeyRing)"
            ) from None
    try:
        return _signing_key(private)
    except ConfigurationError as exc:
        raise ConfigurationError(f"{where}: {exc}") from None


class AsymmetricJWSCodec:
    """Signed tokens: compact JWS, EdDSA or ES256, keys from a `KeyRing`'s signing keys.

    The newest signing key signs; every signing key of the ring verifies, each under its
    own algorithm only. `algorithm` (optional) pins the one algorithm accepted: keys of
    another type are then not used at all, and the newest key must be of that type.
    Decoding a token made under an older key succeeds with `Decoded.is_current` False.
    """

    __slots__ = ("_by_header", "_by_kid", "_current", "_keys", "_max_length", "_seen")

    def __init__(
        self,
        keys: tuple[SigningKey, ...],
        *,
        algorithm: str | None = None,
        max_length: int = MAX_TOKEN_LENGTH,
        seen: int = SEEN_TOKENS,
    ) -> None:
        if not keys:
            raise ConfigurationError(
                "asymmetric tokens need a signing key: `coatcheck keys new --alg EdDSA`"
            )
        if algorithm is not None and algorithm not in ALGORITHMS:
            raise ConfigurationError(f"algorithm must be one of {', '.join(ALGORITHMS)}")
        current = keys[0]
        if algorithm is not None and current.alg != algorithm:
            raise ConfigurationError(
                f"the newest signing key is for {current.alg}, not {algorithm}"
            )
        self._keys = tuple(k for k in keys if algorithm is None or k.alg == algorithm)
        self._max_length = max_length
        self._seen = _Seen(seen)
        self._by_kid: dict[str, tuple[PublicKey, bool]] = {}
        self._by_header: dict[bytes, tuple[PublicKey, bool]] = {}
        for key in self._keys:
            entry = (key.public, key is current)
            self._by_kid[key.kid] = entry
            self._by_header[_header_bytes({"alg": key.alg, "kid": key.kid})] = entry
        self._current = (_header_bytes({"alg": current.alg, "kid": current.kid}) + b".", current)

    def __repr__(self) -> str:
        return f"<AsymmetricJWSCodec {self._current[1].alg} keys={len(self._keys)}>"

    @property
    def algorithm(self) -> str:
        """The algorithm of the newest key, which signs."""
        return self._current[1].alg

    def encode(self, claims: Mapping[str, Any] | bytes) -> str:
        """A compact JWS of `claims` under the newest key; `SessionTooLarge` past the limit."""
        prefix, key = self._current
        payload = _payload(claims)
        signing_input = prefix + b64encode(payload)
        token = signing_input + b"." + b64encode(key.sign(signing_input))
        if len(token) > self._max_length:
            raise _too_large(len(token), self._max_length)
        text = token.decode("ascii")
        if not isinstance(claims, bytes):
            self._seen.remember(text, payload, key.kid, True)
        return text

    def decode(self, token: str | bytes) -> Decoded:
        """The claims of a JWS this ring signed, or `InvalidToken` (see the module doc)."""
        seen = self._seen.entries.get(token) if type(token) is str else None
        if seen is not None:
            return new_decoded((_claims(seen[0]), seen[1], seen[2]))
        claims, kid, is_current, raw_claims = verify_compact(
            token, self._by_header, self._by_kid, self._max_length
        )
        if type(token) is str:
            self._seen.remember(token, raw_claims, kid, is_current)
        return new_decoded((claims, kid, is_current))

    def public_keys(self) -> tuple[PublicKey, ...]:
        """The verification keys, newest first."""
        return tuple(k.public for k in self._keys)

    def jwks(self, *, include_secret: bool = False) -> dict[str, list[dict[str, str]]]:
        """The public keys as a JWK set. `include_secret` is refused: a private key is
        never handed out (give downstream services the public set)."""
        if include_secret:
            raise ConfigurationError("private signing keys are never exported in a JWK set")
        return {"keys": [k.jwk() for k in self.public_keys()]}


def verify_compact(
    token: str | bytes,
    by_header: Mapping[bytes, tuple[PublicKey, bool]],
    by_kid: Mapping[str, tuple[PublicKey, bool]],
    max_length: int,
) -> tuple[dict[str, Any], str, bool, bytes]:
    """Verify a compact EdDSA/ES256 JWS against known keys: the claims, the `kid`, whether
    that key is current and the raw claims JSON; or `InvalidToken` naming the failed check.
    `by_header` maps exact protected headers to their key (no parsing on the hot path);
    any other header is parsed strictly and its `alg` must be its key's own."""
    raw = _ascii(token, max_length)
    parts = raw.split(b".")
    if len(parts) != 3:
        raise InvalidToken("JWS: not three segments")
    header, payload, signature = parts
    entry = by_header.get(header)
    if entry is None:
        fields = _parse_header(header, _FORBIDDEN_JWS)
        alg, kid = fields.get("alg"), fields.get("kid")
        if alg not in ALGORITHMS:
            raise InvalidToken("JWS: alg is not EdDSA or ES256")
        if not isinstance(kid, str):
            raise InvalidToken("JWS: no kid")
        entry = by_kid.get(kid)
        if entry is None:
            raise InvalidToken("JWS: unknown kid")
        if entry[0].alg != alg:
            raise InvalidToken("JWS: alg is not the key's algorithm")
    key, is_current = entry
    if not key.verify(b64decode(signature), raw[: len(header) + 1 + len(payload)]):
        raise InvalidToken("JWS: bad signature")
    raw_claims = b64decode(payload)
    return _claims(raw_claims), key.kid, is_current, raw_claims


class PublicKeySet:
    """The answers to requests for a ring's public JWK set (`SessionMiddleware(jwks_path=
    ...)`), encoded and hashed once.

    `Cache-Control: public, max-age=<max_age>` with a strong ETag: caches and verifiers keep
    the set for `max_age` seconds and revalidate cheaply (304) after. A verifier that meets
    an unknown `kid` refetches sooner (`coatcheck.verify`), but a cache in between may serve
    the old set for up to `max_age`: that bounds how late a new key is seen downstream.
    Only `GET` and `HEAD` are answered (else a 405); no session is loaded.
    """

    def __init__(self, jwks: Mapping[str, Any], *, max_age: int = 300) -> None:
        self.body = json.dumps(jwks, separators=(",", ":"), sort_keys=True).encode("utf-8")
        self.etag = f'"{hashlib.sha256(self.body).hexdigest()[:32]}"'
        self.cache_control = f"public, max-age={int(max_age)}"

    @classmethod
    def of(cls, codec: Any, *, max_age: int = 300) -> PublicKeySet:
        """The set of `codec` (a mode's `codec`), which must sign with EdDSA or ES256."""
        if not isinstance(codec, AsymmetricJWSCodec):
            raise ConfigurationError(
                "jwks_path serves the public keys of EdDSA / ES256 client-side tokens: use "
                "ClientSide with a signing key (`coatcheck keys new --alg EdDSA`); HS256 and "
                "JWE keys are secret and have no public set"
            )
        return cls(codec.jwks(), max_age=max_age)

    def answer(
        self, method: str, if_none_match: list[str]
    ) -> tuple[int, list[tuple[str, str]], bytes]:
        """Status, headers and body of the answer to a `method` request with these
        `If-None-Match` header values (weak or strong tags, comma-separated, or `*`)."""
        if method not in ("GET", "HEAD"):
            body = b"Method Not Allowed"
            return (
                405,
                [
                    ("content-type", "text/plain; charset=utf-8"),
                    ("content-length", str(len(body))),
                    ("cache-control", "no-store"),
                    ("allow", "GET, HEAD"),
                ],
                body,
            )
        headers = [("etag", self.etag), ("cache-control", self.cache_control)]
        tags = {tag.strip().removeprefix("W/") for v in if_none_match for tag in v.split(",")}
        if self.etag in tags or "*" in tags:
            return 304, headers, b""
        headers += [
            ("content-type", "application/jwk-set+json"),
            ("content-length", str(len(self.body))),
            ("x-content-type-options", "nosniff"),
            ("access-control-allow-origin", "*"),
        ]
        return 200, headers, b"" if method == "HEAD" else self.body
