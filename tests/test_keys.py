"""KeyRing: loading, validation, HKDF subkeys, kids, JWK export, and that no key leaks."""

from __future__ import annotations

import base64
import hashlib
import hmac
import pickle
import secrets
from pathlib import Path

import pytest

from coatcheck.exceptions import ConfigurationError
from coatcheck.keys import (
    ID_HASH,
    JWE_A256GCM,
    JWS_HS256,
    MIN_KEY_BYTES,
    KeyRing,
    Purpose,
    generate_key,
)

KEY_A = bytes(range(32))
KEY_B = bytes(range(100, 140))
HOW_TO = "secrets.token_urlsafe(32)"


def b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode("ascii")


def unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def hkdf_rfc5869(ikm: bytes, info: bytes, length: int) -> bytes:
    """HKDF-SHA256 written from RFC 5869 with `hmac` alone, to check keys.py independently."""
    prk = hmac.new(b"\0" * 32, ikm, hashlib.sha256).digest()  # no salt: HashLen zeros
    okm, block = b"", b""
    for counter in range(1, -(-length // 32) + 1):
        block = hmac.new(prk, block + info + bytes([counter]), hashlib.sha256).digest()
        okm += block
    return okm[:length]


# -- derivation -----------------------------------------------------------------------------


@pytest.mark.parametrize("purpose", [JWS_HS256, JWE_A256GCM, ID_HASH])
def test_subkeys_are_hkdf_sha256_of_the_master_key_under_the_purpose_label(
    purpose: Purpose,
) -> None:
    ring = KeyRing([KEY_A, KEY_B])
    for key, master in zip(ring.subkeys(purpose), [KEY_A, KEY_B], strict=True):
        assert key.purpose is purpose
        assert key.secret == hkdf_rfc5869(master, purpose.label, 32)
        assert key.kid == b64(hkdf_rfc5869(master, purpose.label + b"#kid", 12))


def test_each_purpose_has_its_own_key_and_kid() -> None:
    ring = KeyRing([KEY_A])
    keys = [ring.current(p) for p in (JWS_HS256, JWE_A256GCM, ID_HASH)]
    assert len({k.secret for k in keys}) == 3
    assert len({k.kid for k in keys}) == 3
    assert KEY_A not in {k.secret for k in keys}  # the master key is never used directly


def test_kid_is_stable_and_reveals_no_key() -> None:
    first, again = KeyRing([KEY_A]), KeyRing([KEY_A])
    kid = first.current(JWS_HS256).kid
    assert kid == again.current(JWS_HS256).kid
    assert len(kid) == 16
    for secret in (KEY_A, first.current(JWS_HS256).secret):
        encoded = b64(secret)
        assert kid not in encoded
        assert not any(encoded[i : i + 8] in kid for i in range(len(encoded) - 8))


def test_newest_key_first_signs_and_all_verify() -> None:
    ring = KeyRing([KEY_A, KEY_B])
    current, older = ring.subkeys(JWS_HS256)
    assert ring.current(JWS_HS256) is current
    assert current.is_current and not older.is_current
    assert current.kid != older.kid
    assert current.kid not in {k.kid for k in ring.subkeys(JWE_A256GCM)}  # kids are per purpose
    assert len(ring) == 2


def test_generate_makes_distinct_full_strength_keys() -> None:
    ring = KeyRing.generate(3)
    assert len(ring) == 3
    assert len({k.kid for k in ring.subkeys(JWS_HS256)}) == 3
    assert len(unb64(generate_key())) == MIN_KEY_BYTES


# -- JWK export -------------------------------------------------------------------------------


def test_jwks_without_secrets_lists_what_is_in_use() -> None:
    ring = KeyRing([KEY_A, KEY_B])
    jwks = ring.jwks()
    assert [k["kid"] for k in jwks["keys"]] == [
        *(k.kid for k in ring.subkeys(JWS_HS256)),
        *(k.kid for k in ring.subkeys(JWE_A256GCM)),
    ]
    assert all("k" not in k for k in jwks["keys"])
    assert {(k["kty"], k["alg"], k["use"]) for k in jwks["keys"]} == {
        ("oct", "HS256", "sig"),
        ("oct", "dir", "enc"),
    }


def test_jwks_with_secrets_carries_the_derived_keys_only() -> None:
    ring = KeyRing([KEY_A])
    jwks = ring.jwks(include_secret=True, purposes=[JWS_HS256])
    (jwk,) = jwks["keys"]
    assert unb64(jwk["k"]) == ring.current(JWS_HS256).secret
    assert b64(KEY_A) not in str(jwks)


# -- no key material anywhere it could leak -------------------------------------------------


def test_repr_and_str_show_no_key_material() -> None:
    ring = KeyRing([KEY_A])
    key = ring.current(JWS_HS256)
    for text in (repr(ring), str(ring), repr(key), str(key)):
        assert b64(KEY_A) not in text
        assert b64(key.secret) not in text
        assert repr(KEY_A) not in text
        assert repr(key.secret) not in text
    assert repr(ring) == "<KeyRing keys=1>"


def test_a_ring_cannot_be_pickled() -> None:
    with pytest.raises(TypeError):
        pickle.dumps(KeyRing([KEY_A]))


# -- validation -----------------------------------------------------------------------------


def test_no_key_is_a_configuration_error_that_says_how_to_make_one() -> None:
    with pytest.raises(ConfigurationError, match="at least one key") as info:
        KeyRing([])
    assert HOW_TO in str(info.value)
    assert "coatcheck keys new" in str(info.value)


def test_short_key_is_refused_without_echoing_it() -> None:
    short = b"s3cr3t-but-too-short-0123456789"  # 31 bytes
    with pytest.raises(ConfigurationError, match="at least 256 bits") as info:
        KeyRing([KEY_A, short])
    message = str(info.value)
    assert "key 2 is 248 bits" in message
    assert HOW_TO in message
    assert "s3cr3t" not in message


def test_duplicate_keys_are_refused() -> None:
    with pytest.raises(ConfigurationError, match="twice"):
        KeyRing([KEY_A, KEY_B, KEY_A])


def test_text_keys_must_go_through_parse() -> None:
    with pytest.raises(ConfigurationError, match=r"KeyRing\.parse"):
        KeyRing([b64(KEY_A)])  # type: ignore[list-item]


def test_parse_accepts_commas_newlines_comments_and_padding() -> None:
    text = f"""
    # newest first
    {b64(KEY_A)}, {base64.urlsafe_b64encode(KEY_B).decode()}

    # retired 2026-01: {b64(bytes(range(50, 82)))} stays commented out
    {b64(bytes(range(200, 240)))}
    """
    ring = KeyRing.parse(text)
    assert len(ring) == 3
    assert ring.current(JWS_HS256).kid == KeyRing([KEY_A]).current(JWS_HS256).kid
    assert ring.subkeys(JWS_HS256)[1].kid == KeyRing([KEY_B]).current(JWS_HS256).kid


@pytest.mark.parametrize(
    ("text", "match"),
    [
        ("", "holds no key"),
        ("# only a comment\n\n", "holds no key"),
        ("not base64url!not base64url!not base64url!not", "key 1 is not base64url"),
        (b64(KEY_A) + ",A" * 1, "key 2 is not base64url"),  # one character: 6 bits
        (b64(KEY_A).replace("A", "+", 1) + "AAAA", "key 1 is not base64url"),  # standard alphabet
        (b64(b"sixteen byte key"), "key 1 is 128 bits"),
    ],
)
def test_parse_errors_name_the_key_by_position_only(text: str, match: str) -> None:
    with pytest.raises(ConfigurationError, match=match) as info:
        KeyRing.parse(text, source="the test input")
    message = str(info.value)
    assert message.startswith("the test input")
    assert HOW_TO in message
    for token in text.replace(",", " ").split():
        if len(token) > 8 and not token.startswith("#"):
            assert token not in message


def test_from_env_reads_the_named_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("COATCHECK_KEYS", f"{b64(KEY_A)},{b64(KEY_B)}")
    ring = KeyRing.from_env()
    assert len(ring) == 2
    assert ring.current(JWS_HS256).kid == KeyRing([KEY_A]).current(JWS_HS256).kid
    other = KeyRing.from_env("APP_KEYS", environ={"APP_KEYS": b64(KEY_B)})
    assert other.current(JWS_HS256).kid == KeyRing([KEY_B]).current(JWS_HS256).kid


def test_from_env_missing_or_empty_says_how_to_generate(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("COATCHECK_KEYS", raising=False)
    with pytest.raises(ConfigurationError, match="COATCHECK_KEYS is not set") as info:
        KeyRing.from_env()
    assert HOW_TO in str(info.value)
    with pytest.raises(ConfigurationError, match="APP_KEYS is not set or empty"):
        KeyRing.from_env("APP_KEYS", environ={"APP_KEYS": "  "})


def test_from_env_short_key_names_the_variable_not_the_key() -> None:
    short = secrets.token_urlsafe(16)
    with pytest.raises(ConfigurationError, match="environment variable COATCHECK_KEYS") as info:
        KeyRing.from_env(environ={"COATCHECK_KEYS": short})
    assert short not in str(info.value)
    assert "128 bits" in str(info.value)


def test_from_file(tmp_path: Path) -> None:
    path = tmp_path / "keys"
    path.write_text(f"# coatcheck keys, newest first\n{b64(KEY_B)}\n{b64(KEY_A)}\n")
    ring = KeyRing.from_file(path)
    assert [k.kid for k in ring.subkeys(JWS_HS256)] == [
        KeyRing([KEY_B]).current(JWS_HS256).kid,
        KeyRing([KEY_A]).current(JWS_HS256).kid,
    ]
    assert len(KeyRing.from_file(str(path))) == 2


def test_from_file_errors(tmp_path: Path) -> None:
    with pytest.raises(ConfigurationError, match="cannot read the key file") as info:
        KeyRing.from_file(tmp_path / "missing")
    assert HOW_TO in str(info.value)
    bad = tmp_path / "bad"
    bad.write_text(secrets.token_urlsafe(20))
    with pytest.raises(ConfigurationError, match=r"the key file .*bad.*: key 1 is 160 bits"):
        KeyRing.from_file(bad)
    binary = tmp_path / "binary"
    binary.write_bytes(b"\xff\xfe\x00")
    with pytest.raises(ConfigurationError, match="UnicodeDecodeError"):
        KeyRing.from_file(binary)
