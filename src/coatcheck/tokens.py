"""Compact JOSE tokens for client-side sessions: JWS HS256 (signed) and JWE dir/A256GCM
(encrypted), on `hmac` and `cryptography`, with no I/O and no clock.

Any JOSE library in any language reads these tokens with the ring's JWK set
(`KeyRing.jwks(include_secret=True)`):

    JWS  BASE64URL({"alg":"HS256","kid":K}) . BASE64URL(claims) . BASE64URL(HMAC-SHA256)
    JWE  BASE64URL({"alg":"dir","enc":"A256GCM","kid":K[,"zip":"DEF"]}) . "" . IV . CT . TAG

`JWSCodec` and `JWECodec` are what `ClientSide` uses: `encode(claims)` signs or encrypts
under the ring's newest key; `decode(token)` returns a `Decoded` (the claims, the `kid`, and
`is_current`: False means an older key verified it and the caller should re-issue it).

Verification is strict, and every failure raises `InvalidToken` whose message names the
failed check for the security log only (callers turn it into "no session"):
- the algorithm (and for JWE the encryption) is fixed by the codec, never read from the
  token: `none`, any other `alg` or `enc`, a `crit`, `b64`, `jku`-style or `zip` (JWS)
  header parameter, a missing or unknown `kid` are rejected;
- the MAC or GCM tag must verify (constant-time comparison);
- every segment must be canonical unpadded base64url (no `=`, no foreign characters, no
  non-zero trailing bits), so no two token strings carry the same content: the JWS payload
  too, though the MAC covers its text (a token that another JOSE library, holding the key,
  padded is refused as well); the segment count must be exact and the token no longer than
  `max_length`;
- the header must be a JSON object without duplicate names; the claims must be a JSON
  object. Duplicate claim names are not searched for (only a key holder can make a payload
  that verifies; the last one wins, as in JavaScript);
- a `zip: "DEF"` JWE payload (raw DEFLATE, RFC 7516 4.1.3) may inflate to at most
  `max_plaintext` bytes, so a small token cannot become a large allocation.

Time claims are checked by `check_times(claims, now=...)`, which reads no clock: `iat`
(issued at, not in the future), `exp` (absolute deadline), `idl` (idle deadline: coatcheck's
own claim, a NumericDate after which the session has been idle too long) and, if present,
`nbf`. All are NumericDates (seconds since the epoch, RFC 7519 2).

JSON: claims are written as compact UTF-8 JSON with orjson (`coatcheck.jsonio`; the
standard library would make verify+decode of a 300-byte session about 1.6x as slow:
`bench/codec.py`). Values that JSON cannot carry raise `SessionDataError`.

JWE uses a random 96-bit IV per token; keep each key below 2**32 tokens (rotate long
before).
"""

from __future__ import annotations

import binascii
import hashlib
import hmac
import json
import math
import os
import zlib
from collections.abc import Iterable, Mapping
from typing import Any, NamedTuple, Protocol

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from ._fast import fast_constructor
from .exceptions import InvalidToken, SessionTooLarge
from .jsonio import dumps, loads
from .keys import JWE_A256GCM, JWS_HS256, KeyRing, SubKey

__all__ = [
    "IDLE_CLAIM",
    "MAX_PLAINTEXT",
    "MAX_TOKEN_LENGTH",
    "Decoded",
    "JWECodec",
    "JWSCodec",
    "TokenCodec",
    "b64decode",
    "b64encode",
    "check_times",
    "decrypt_jwe",
    "dumps",
    "encrypt_jwe",
    "loads",
    "sign_jws",
    "verify_jws",
]

MAX_TOKEN_LENGTH = 64 * 1024  # characters; larger tokens are refused before any work
MAX_PLAINTEXT = 256 * 1024  # bytes a zip: DEF payload may inflate to
MAX_HEADER_LENGTH = 1024  # characters of an encoded protected header
IDLE_CLAIM = "idl"
_IV_BYTES = 12
_TAG_BYTES = 16
_ENC_KEY_BYTES = {"A128GCM": 16, "A192GCM": 24, "A256GCM": 32}
_FORBIDDEN_JWS = ("crit", "b64", "zip", "jku", "jwk", "x5u", "x5c")
_FORBIDDEN_JWE = ("crit", "jku", "jwk", "x5u", "x5c")
_DEFLATE_THRESHOLD = 256  # bytes of JSON below which compressing rarely pays
#: Tokens a codec remembers as issued or verified (see `_Seen`): ~0.7 KB each for a 300-byte
#: session, so ~3 MB at most.
SEEN_TOKENS = 4096

# -- JSON ---------------------------------------------------------------------------------

_std_encoder = json.JSONEncoder(ensure_ascii=False, separators=(",", ":"), allow_nan=False)


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    result = dict(pairs)
    if len(result) != len(pairs):
        raise ValueError("duplicate member name")
    return result


_std_decoder = json.JSONDecoder(parse_constant=_reject_constant)
_header_decoder = json.JSONDecoder(
    parse_constant=_reject_constant, object_pairs_hook=_no_duplicates
)


def _std_dumps(value: Any) -> bytes:
    return _std_encoder.encode(value).encode("utf-8")


# -- base64url ----------------------------------------------------------------------------

_TO_STD = bytes.maketrans(b"-_", b"+/")
_TO_URL = bytes.maketrans(b"+/", b"-_")
# base64url to standard base64, with the input's own `+`, `/` and `=` made foreign bytes,
# which `a2b_base64` skips (see `JWSCodec.decode`).
_TO_STD_ONLY = bytes.maketrans(b"-_+/=", b"+/!!!")
_ALPHABET = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
_PAD = (b"", b"", b"==", b"=")
# The last character of a segment whose length is 2 or 3 mod 4 carries 4 or 2 unused bits,
# which must be zero: otherwise two strings would decode to the same bytes.
_CANONICAL_LAST = (
    b"",
    b"",
    frozenset(_ALPHABET[i] for i in range(0, 64, 16)),
    frozenset(_ALPHABET[i] for i in range(0, 64, 4)),
)


# -- HMAC-SHA256 from pre-keyed hash states -------------------------------------------------

_IPAD = bytes(b ^ 0x36 for b in range(256))
_OPAD = bytes(b ^ 0x5C for b in range(256))
#: A key's HMAC-SHA256 as two SHA-256 states that have absorbed its padded key: (inner,
#: outer). `_mac` finishes it for a message.
KeyedHash = tuple["hashlib._Hash", "hashlib._Hash"]


def _keyed(key: bytes) -> KeyedHash:
    """HMAC-SHA256 (RFC 2104) under `key`, its key schedule done once: the hash states after
    the inner and outer key pads. A MAC then costs two state copies and three C calls,
    where `hmac.HMAC.copy()` adds a Python-level object per token (a quarter of a token's
    MAC cost; `tests/test_tokens.py` checks the result against `hmac.digest`)."""
    if len(key) > 64:
        key = hashlib.sha256(key).digest()
    key = key.ljust(64, b"\0")
    return hashlib.sha256(key.translate(_IPAD)), hashlib.sha256(key.translate(_OPAD))


def _mac(keyed: KeyedHash, message: bytes) -> bytes:
    inner, outer = keyed[0].copy(), keyed[1].copy()
    inner.update(message)
    outer.update(inner.digest())
    return outer.digest()


def b64encode(raw: bytes) -> bytes:
    """Unpadded base64url (RFC 7515 2)."""
    return binascii.b2a_base64(raw, newline=False).translate(_TO_URL).rstrip(b"=")


def b64decode(segment: bytes) -> bytes:
    """Strict unpadded base64url: `InvalidToken` unless `segment` is the canonical encoding."""
    tail = len(segment) & 3
    if tail == 1 or (tail and segment[-1] not in _CANONICAL_LAST[tail]):
        raise InvalidToken("non-canonical base64url")
    if segment.translate(None, _ALPHABET):
        raise InvalidToken("not base64url")
    return binascii.a2b_base64(segment.translate(_TO_STD) + _PAD[tail])


def _ascii(token: str | bytes, max_length: int) -> bytes:
    if len(token) > max_length:
        raise InvalidToken("token longer than the limit")
    if isinstance(token, bytes):
        return token
    try:
        return token.encode("ascii")
    except UnicodeEncodeError:
        raise InvalidToken("token is not ASCII") from None


def _parse_header(segment: bytes, forbidden: Iterable[str]) -> dict[str, Any]:
    if len(segment) > MAX_HEADER_LENGTH:
        raise InvalidToken("header longer than the limit")
    try:
        header = _header_decoder.decode(b64decode(segment).decode("utf-8"))
    except (ValueError, RecursionError):  # JSONDecodeError, UnicodeDecodeError: ValueError
        raise InvalidToken("header is not JSON") from None
    if type(header) is not dict:
        raise InvalidToken("header is not a JSON object")
    for name in forbidden:
        if name in header:
            raise InvalidToken(f"header parameter {name!r} is not accepted")
    return header


def _header_bytes(header: Mapping[str, Any] | bytes) -> bytes:
    raw = header if isinstance(header, bytes) else _std_dumps(dict(header))
    return b64encode(raw)


def _claims(raw: bytes) -> dict[str, Any]:
    try:
        claims = loads(raw)
    except (ValueError, RecursionError):
        raise InvalidToken("payload is not JSON") from None
    if type(claims) is not dict:
        raise InvalidToken("payload is not a JSON object")
    return claims


# -- the low-level primitives ---------------------------------------------------------------


def sign_jws(payload: bytes, key: bytes, header: Mapping[str, Any] | bytes) -> str:
    """A compact JWS of `payload` signed with HMAC-SHA256 under `key`.

    `header` is a mapping (written as compact JSON) or the exact header bytes; it must say
    `"alg": "HS256"`. For known-answer tests and interop; sessions use `JWSCodec`.
    """
    signing_input = _header_bytes(header) + b"." + b64encode(payload)
    mac = hmac.digest(key, signing_input, "sha256")
    return (signing_input + b"." + b64encode(mac)).decode("ascii")


def verify_jws(
    token: str | bytes, key: bytes, *, max_length: int = MAX_TOKEN_LENGTH
) -> tuple[dict[str, Any], bytes]:
    """Verify a compact HS256 JWS under `key`: (header, payload bytes), or `InvalidToken`.

    The header must say `"alg": "HS256"`; `kid` is not required here (`JWSCodec` requires
    it).
    """
    raw = _ascii(token, max_length)
    parts = raw.split(b".")
    if len(parts) != 3:
        raise InvalidToken("JWS: not three segments")
    header = _parse_header(parts[0], _FORBIDDEN_JWS)
    if header.get("alg") != "HS256":
        raise InvalidToken("JWS: alg is not HS256")
    expected = b64encode(hmac.digest(key, raw[: len(parts[0]) + 1 + len(parts[1])], "sha256"))
    if not hmac.compare_digest(expected, parts[2]):
        raise InvalidToken("JWS: bad signature")
    return header, b64decode(parts[1])


def encrypt_jwe(
    plaintext: bytes,
    key: bytes,
    header: Mapping[str, Any] | bytes,
    *,
    enc: str = "A256GCM",
    iv: bytes | None = None,
) -> str:
    """A compact JWE (`alg` "dir") of `plaintext` under the content key `key`.

    `header` is a mapping or the exact header bytes; it must say `"alg": "dir"` and
    `"enc": enc`. `plaintext` is encrypted as given (compress it first for `zip`). `iv` is
    for known-answer tests only: reusing an IV under one key breaks AES-GCM.
    """
    if _ENC_KEY_BYTES.get(enc) != len(key):
        raise ValueError(f"{enc} needs a {_ENC_KEY_BYTES.get(enc, '?')}-byte key")
    protected = _header_bytes(header)
    iv = os.urandom(_IV_BYTES) if iv is None else iv
    sealed = AESGCM(key).encrypt(iv, plaintext, protected)
    return _jwe_compact(protected, iv, sealed)


def _jwe_compact(protected: bytes, iv: bytes, sealed: bytes) -> str:
    return b".".join(
        (
            protected,
            b"",
            b64encode(iv),
            b64encode(sealed[:-_TAG_BYTES]),
            b64encode(sealed[-_TAG_BYTES:]),
        )
    ).decode("ascii")


def decrypt_jwe(
    token: str | bytes,
    key: bytes,
    *,
    enc: str = "A256GCM",
    max_length: int = MAX_TOKEN_LENGTH,
    max_plaintext: int = MAX_PLAINTEXT,
) -> tuple[dict[str, Any], bytes]:
    """Decrypt a compact JWE (`alg` "dir", `enc` fixed by the caller): (header, plaintext).

    A `zip: "DEF"` payload is inflated (at most `max_plaintext` bytes). `InvalidToken` on
    any failure.
    """
    if _ENC_KEY_BYTES.get(enc) != len(key):
        raise ValueError(f"{enc} needs a {_ENC_KEY_BYTES.get(enc, '?')}-byte key")
    raw = _ascii(token, max_length)
    parts = raw.split(b".")
    if len(parts) != 5:
        raise InvalidToken("JWE: not five segments")
    header = _parse_header(parts[0], _FORBIDDEN_JWE)
    if header.get("alg") != "dir" or header.get("enc") != enc:
        raise InvalidToken("JWE: alg/enc not accepted")
    compressed = _zip_flag(header)
    plaintext = _open(AESGCM(key), parts)
    return header, _inflate(plaintext, max_plaintext) if compressed else plaintext


def _zip_flag(header: Mapping[str, Any]) -> bool:
    zip_ = header.get("zip")
    if zip_ is None:
        return False
    if zip_ != "DEF":
        raise InvalidToken("JWE: zip is not DEF")
    return True


def _open(aead: AESGCM, parts: list[bytes]) -> bytes:
    protected, encrypted_key, iv, ciphertext, tag = parts
    if encrypted_key:
        raise InvalidToken("JWE: dir with an encrypted key")
    if len(iv) != 16 or len(tag) != 22:
        raise InvalidToken("JWE: IV or tag of the wrong size")
    try:
        return aead.decrypt(b64decode(iv), b64decode(ciphertext) + b64decode(tag), protected)
    except InvalidTag:
        raise InvalidToken("JWE: bad tag") from None


def _inflate(data: bytes, limit: int) -> bytes:
    inflater = zlib.decompressobj(-zlib.MAX_WBITS)
    try:
        plaintext = inflater.decompress(data, limit)
    except zlib.error:
        raise InvalidToken("JWE: bad DEFLATE data") from None
    if inflater.unconsumed_tail:
        raise InvalidToken("JWE: payload inflates past the limit")
    if not inflater.eof or inflater.unused_data:
        raise InvalidToken("JWE: bad DEFLATE data")
    return plaintext


def _deflate(data: bytes) -> bytes:
    deflater = zlib.compressobj(6, zlib.DEFLATED, -zlib.MAX_WBITS)
    return deflater.compress(data) + deflater.flush()


# -- the codecs ClientSide uses ---------------------------------------------------------------


class Decoded(NamedTuple):
    """A verified token: its claims, the `kid` that verified it, and whether that key is the
    ring's newest (`is_current` False: re-issue the session under the newest key).

    A named tuple rather than a frozen dataclass: it is made on every request, and costs a
    third as much.
    """

    claims: dict[str, Any]
    kid: str
    is_current: bool


new_decoded = fast_constructor(Decoded, "claims", "kid", "is_current")


class TokenCodec(Protocol):
    """What `ClientSide` needs from a token format."""

    def encode(self, claims: Mapping[str, Any] | bytes) -> str:
        """A token carrying `claims` (a mapping, or JSON bytes), under the newest key."""
        ...

    def decode(self, token: str | bytes) -> Decoded:
        """The verified claims of `token`, or `InvalidToken`."""
        ...

    def jwks(self, *, include_secret: bool = False) -> dict[str, list[dict[str, str]]]:
        """The keys this codec uses, as a JWK set."""
        ...


def _payload(claims: Mapping[str, Any] | bytes) -> bytes:
    return claims if isinstance(claims, bytes) else dumps(claims)


def _too_large(length: int, limit: int) -> SessionTooLarge:
    return SessionTooLarge(
        f"the session token would be {length} characters, over the limit of {limit}; "
        "keep less in the session, or use server-side sessions (ServerSide)"
    )


class _Seen:
    """The tokens a codec issued or verified lately, each with its claims' JSON, the `kid`
    and whether that key is the newest: a browser sends the same token on every request
    until it gets the next one, and a token seen again is decoded from here, without its
    MAC or decryption (-38k of the 105k instructions coatcheck spends on a client-side
    read, compiled; `bench/table.py --rows asgi-client`).

    Only what the codec signed or encrypted itself, or verified in full, goes in, keyed by
    the whole token text: a token that differs in any character is not found and is
    verified as ever, so a forgery can only be as good as a verified token it copies,
    byte for byte. The time claims (`check_times`) and revocations are checked by the
    caller on every request, hit or not, and each hit decodes a new claims dict from the
    remembered JSON (nothing is shared between requests). The codec's keys never change
    (a new `KeyRing` makes a new codec), so what it remembers stays valid for it. At
    `limit` entries it forgets them all (bounded memory, one C call, safe across threads).
    Each replica remembers its own: behind a balancer, a token is verified once per replica
    that sees it (docs/client-side.md)."""

    __slots__ = ("entries", "limit")

    def __init__(self, limit: int) -> None:
        self.entries: dict[str, tuple[bytes, str, bool]] = {}
        self.limit = limit

    def remember(self, token: str, claims: bytes, kid: str, is_current: bool) -> None:
        entries = self.entries
        if len(entries) >= self.limit:
            if self.limit <= 0:
                return
            entries.clear()
        entries[token] = (claims, kid, is_current)


class JWSCodec:
    """Signed tokens: compact JWS, HS256 only, keys from a `KeyRing`'s `jws-hs256` subkeys.

    The claims are readable by the client (base64url JSON): keep secrets out of them or use
    `JWECodec`. Decoding a token made under an older key of the ring succeeds with
    `Decoded.is_current` False.
    """

    __slots__ = ("_by_header", "_by_kid", "_current", "_keyring", "_max_length", "_seen")

    def __init__(
        self,
        keyring: KeyRing,
        *,
        max_length: int = MAX_TOKEN_LENGTH,
        seen: int = SEEN_TOKENS,  # tokens remembered as issued or verified (`_Seen`); 0: none
    ) -> None:
        self._keyring = keyring
        self._max_length = max_length
        self._seen = _Seen(seen)
        self._by_kid: dict[str, tuple[KeyedHash, str, bool]] = {}
        # The exact headers this codec writes, mapped to their key: a token we issued is
        # matched without parsing its header. Any other header is parsed strictly.
        self._by_header: dict[bytes, tuple[KeyedHash, str, bool]] = {}
        for key in keyring.subkeys(JWS_HS256):
            entry = (_keyed(key.secret), key.kid, key.is_current)
            self._by_kid[key.kid] = entry
            self._by_header[_header_bytes({"alg": "HS256", "kid": key.kid})] = entry
        current = keyring.current(JWS_HS256)
        self._current = (
            _header_bytes({"alg": "HS256", "kid": current.kid}) + b".",
            self._by_kid[current.kid][0],
            current.kid,
        )

    def __repr__(self) -> str:
        return f"<JWSCodec HS256 keys={len(self._keyring)}>"

    def encode(self, claims: Mapping[str, Any] | bytes) -> str:
        """A compact JWS of `claims` under the newest key; `SessionTooLarge` past the limit."""
        prefix, keyed, kid = self._current
        payload = _payload(claims)
        signing_input = prefix + b64encode(payload)
        token = signing_input + b"." + b64encode(_mac(keyed, signing_input))
        if len(token) > self._max_length:
            raise _too_large(len(token), self._max_length)
        text = token.decode("ascii")
        if not isinstance(claims, bytes):  # JSON bytes from a caller may be no object
            self._seen.remember(text, payload, kid, True)
        return text

    def decode(self, token: str | bytes) -> Decoded:
        """The claims of a JWS this ring signed, or `InvalidToken` (see the module doc)."""
        # Written out flat, without helper calls: this runs on every request, and the
        # target is to stay within 1.3x of a bare HMAC + base64 + JSON decode.
        seen = self._seen.entries.get(token) if type(token) is str else None
        if seen is not None:
            return new_decoded((loads(seen[0]), seen[1], seen[2]))
        raw = token if isinstance(token, bytes) else _ascii(token, self._max_length)
        if len(raw) > self._max_length:
            raise InvalidToken("token longer than the limit")
        parts = raw.split(b".")
        if len(parts) != 3:
            raise InvalidToken("JWS: not three segments")
        header, payload, signature = parts
        entry = self._by_header.get(header)
        if entry is None:
            entry = self._lookup(header)
        (inner, outer), kid, is_current = entry
        inner, outer = inner.copy(), outer.copy()  # `_mac`, inlined
        inner.update(raw[: len(header) + 1 + len(payload)])
        outer.update(inner.digest())
        expected = binascii.b2a_base64(outer.digest(), newline=False)[:43].translate(_TO_URL)
        if not hmac.compare_digest(expected, signature):
            raise InvalidToken("JWS: bad signature")
        # Canonical base64url only, as the module doc promises: the MAC covers the text, but
        # a key holder's other code or JOSE library must not make two texts of one payload.
        # Inlined, with no second pass over the text (a scan for foreign bytes cost 2.5 to 6
        # times as much): `_TO_STD_ONLY` turns `+`, `/` and `=` into bytes that `a2b_base64`
        # skips, like any other foreign byte, and a skipped byte leaves the output shorter
        # than the segment's length implies. The last character's unused bits must be zero.
        tail = len(payload) & 3
        if tail == 1 or (tail and payload[-1] not in _CANONICAL_LAST[tail]):
            raise InvalidToken("JWS: payload is not canonical base64url")
        try:
            raw_claims = binascii.a2b_base64(payload.translate(_TO_STD_ONLY) + _PAD[tail])
            if len(raw_claims) != (len(payload) * 3) >> 2:
                raise InvalidToken("JWS: payload is not canonical base64url")
            claims = loads(raw_claims)
        except (ValueError, RecursionError):  # binascii.Error, JSONDecodeError
            raise InvalidToken("JWS: payload is not base64url JSON") from None
        if type(claims) is not dict:
            raise InvalidToken("payload is not a JSON object")
        if type(token) is str:
            self._seen.remember(token, raw_claims, kid, is_current)
        return new_decoded((claims, kid, is_current))

    def _lookup(self, segment: bytes) -> tuple[KeyedHash, str, bool]:
        header = _parse_header(segment, _FORBIDDEN_JWS)
        if header.get("alg") != "HS256":
            raise InvalidToken("JWS: alg is not HS256")
        kid = header.get("kid")
        if not isinstance(kid, str):
            raise InvalidToken("JWS: no kid")
        entry = self._by_kid.get(kid)
        if entry is None:
            raise InvalidToken("JWS: unknown kid")
        return entry

    def jwks(self, *, include_secret: bool = False) -> dict[str, list[dict[str, str]]]:
        """The signing keys as a JWK set; with `include_secret`, enough to verify tokens."""
        return self._keyring.jwks(include_secret=include_secret, purposes=(JWS_HS256,))


class JWECodec:
    """Encrypted tokens: compact JWE, `alg` "dir" and `enc` "A256GCM" only, keys from a
    `KeyRing`'s `jwe-a256gcm` subkeys. The client sees only the token's length.

    With `compress`, a payload of 256 bytes or more is DEFLATE-compressed (`zip: "DEF"`)
    when that makes it shorter. Compressing secret data next to attacker-chosen data can
    leak the secret through the token's length (CRIME/BREACH): leave `compress` off unless
    the session holds nothing a client may inject.
    """

    __slots__ = (
        "_by_header",
        "_by_kid",
        "_compress",
        "_current",
        "_keyring",
        "_max_length",
        "_max_plaintext",
        "_seen",
    )

    def __init__(
        self,
        keyring: KeyRing,
        *,
        compress: bool = False,
        max_length: int = MAX_TOKEN_LENGTH,
        max_plaintext: int = MAX_PLAINTEXT,
        seen: int = SEEN_TOKENS,  # tokens remembered as issued or verified (`_Seen`); 0: none
    ) -> None:
        self._seen = _Seen(seen)
        self._keyring = keyring
        self._compress = compress
        self._max_length = max_length
        self._max_plaintext = max_plaintext
        self._by_kid: dict[str, tuple[AESGCM, str, bool]] = {}
        self._by_header: dict[bytes, tuple[AESGCM, str, bool, bool]] = {}
        for key in keyring.subkeys(JWE_A256GCM):
            aead = AESGCM(key.secret)
            self._by_kid[key.kid] = (aead, key.kid, key.is_current)
            for zipped in (False, True):
                header = _header_bytes(_jwe_header(key, zipped))
                self._by_header[header] = (aead, key.kid, key.is_current, zipped)
        current = keyring.current(JWE_A256GCM)
        self._current = (
            AESGCM(current.secret),
            _header_bytes(_jwe_header(current, False)),
            _header_bytes(_jwe_header(current, True)),
            current.kid,
        )

    def __repr__(self) -> str:
        return f"<JWECodec dir/A256GCM keys={len(self._keyring)} compress={self._compress}>"

    def encode(self, claims: Mapping[str, Any] | bytes) -> str:
        """A compact JWE of `claims` under the newest key; `SessionTooLarge` past the limit."""
        aead, protected, zipped_header, kid = self._current
        payload = plaintext = _payload(claims)
        if self._compress and len(plaintext) >= _DEFLATE_THRESHOLD:
            deflated = _deflate(plaintext)
            if len(deflated) < len(plaintext):
                plaintext, protected = deflated, zipped_header
        iv = os.urandom(_IV_BYTES)
        token = _jwe_compact(protected, iv, aead.encrypt(iv, plaintext, protected))
        if len(token) > self._max_length:
            raise _too_large(len(token), self._max_length)
        if not isinstance(claims, bytes):  # JSON bytes from a caller may be no object
            self._seen.remember(token, payload, kid, True)
        return token

    def decode(self, token: str | bytes) -> Decoded:
        """The claims of a JWE this ring encrypted, or `InvalidToken` (see the module doc)."""
        seen = self._seen.entries.get(token) if type(token) is str else None
        if seen is not None:
            return new_decoded((loads(seen[0]), seen[1], seen[2]))
        raw = _ascii(token, self._max_length)
        parts = raw.split(b".")
        if len(parts) != 5:
            raise InvalidToken("JWE: not five segments")
        entry = self._by_header.get(parts[0])
        if entry is None:
            entry = self._lookup(parts[0])
        aead, kid, is_current, zipped = entry
        plaintext = _open(aead, parts)
        if zipped:
            plaintext = _inflate(plaintext, self._max_plaintext)
        claims = _claims(plaintext)
        if type(token) is str:
            self._seen.remember(token, plaintext, kid, is_current)
        return new_decoded((claims, kid, is_current))

    def _lookup(self, segment: bytes) -> tuple[AESGCM, str, bool, bool]:
        header = _parse_header(segment, _FORBIDDEN_JWE)
        if header.get("alg") != "dir" or header.get("enc") != "A256GCM":
            raise InvalidToken("JWE: alg/enc not accepted")
        kid = header.get("kid")
        if not isinstance(kid, str):
            raise InvalidToken("JWE: no kid")
        entry = self._by_kid.get(kid)
        if entry is None:
            raise InvalidToken("JWE: unknown kid")
        return (*entry, _zip_flag(header))

    def jwks(self, *, include_secret: bool = False) -> dict[str, list[dict[str, str]]]:
        """The encryption keys as a JWK set; with `include_secret`, enough to decrypt."""
        return self._keyring.jwks(include_secret=include_secret, purposes=(JWE_A256GCM,))


def _jwe_header(key: SubKey, zipped: bool) -> dict[str, str]:
    header = {"alg": "dir", "enc": "A256GCM", "kid": key.kid}
    if zipped:
        header["zip"] = "DEF"
    return header


# -- time claims ----------------------------------------------------------------------------


_TIME_CLAIMS = ("iat", "exp", IDLE_CLAIM)


def _not_numeric_date(value: Any) -> bool:
    if value is None or type(value) is int:
        return False
    return type(value) is not float or not math.isfinite(value)


def check_times(
    claims: Mapping[str, Any],
    *,
    now: float,
    leeway: float = 0.0,
    required: Iterable[str] = _TIME_CLAIMS,
) -> None:
    """`InvalidToken` unless the time claims hold at `now` (seconds since the epoch).

    `iat` must not be in the future; `exp` (absolute deadline) and `idl` (idle deadline)
    must be later than `now`; `nbf`, when present, must not be later than `now`. `leeway`
    (seconds) tolerates clock skew between replicas. Claims in `required` (by default
    `iat`, `exp` and `idl`) must be present and not null; each time claim present must be a
    finite number (an int or a float, not a bool or a string).
    """
    get = claims.get
    iat, nbf, exp, idl = get("iat"), get("nbf"), get("exp"), get(IDLE_CLAIM)
    if required is not _TIME_CLAIMS or iat is None or exp is None or idl is None:
        for name in required:
            if get(name) is None:
                raise InvalidToken(f"claim {name!r} missing")
    # Straight-line on purpose: this runs on every request.
    if (type(iat) is not int and _not_numeric_date(iat)) or (
        nbf is not None and _not_numeric_date(nbf)
    ):
        raise InvalidToken("claim 'iat' or 'nbf' is not a NumericDate")
    if (type(exp) is not int and _not_numeric_date(exp)) or (
        type(idl) is not int and _not_numeric_date(idl)
    ):
        raise InvalidToken("claim 'exp' or 'idl' is not a NumericDate")
    latest = now + leeway  # the latest acceptable iat / nbf
    earliest = now - leeway  # exp / idl must be later than this
    if iat is not None and iat > latest:
        raise InvalidToken("token issued in the future")
    if nbf is not None and nbf > latest:
        raise InvalidToken("token not yet valid")
    if exp is not None and exp <= earliest:
        raise InvalidToken("token past its absolute deadline")
    if idl is not None and idl <= earliest:
        raise InvalidToken("token past its idle deadline")
