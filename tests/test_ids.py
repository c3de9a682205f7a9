"""Session secrets and handles."""

from __future__ import annotations

import base64
import hashlib
import hmac

import pytest
from hypothesis import given
from hypothesis import strategies as st

from coatcheck.ids import (
    HANDLE_LENGTH,
    SECRET_LENGTH,
    handle_of,
    is_handle,
    is_wellformed,
    log_hash,
    new_handle,
    new_secret,
    verifier_hash,
)


def b64decode(value: str) -> bytes:
    return base64.urlsafe_b64decode(value + "=" * (-len(value) % 4))


def test_secrets_are_a_128_bit_handle_and_a_256_bit_verifier() -> None:
    secrets = [new_secret() for _ in range(2000)]
    assert len(set(secrets)) == len(secrets)
    assert len({handle_of(s) for s in secrets}) == len(secrets)
    for value in secrets:
        assert len(value) == SECRET_LENGTH == 65
        assert len(b64decode(value[:HANDLE_LENGTH])) == 16 and HANDLE_LENGTH == 22
        assert len(b64decode(value[HANDLE_LENGTH:])) == 32
        assert is_wellformed(value) and is_handle(handle_of(value))
    # every bit position varies across 2000 secrets: no constant or truncated bytes
    for start, end, bits in ((0, HANDLE_LENGTH, 128), (HANDLE_LENGTH, SECRET_LENGTH, 256)):
        union, intersection = 0, (1 << bits) - 1
        for value in secrets:
            number = int.from_bytes(b64decode(value[start:end]), "big")
            union |= number
            intersection &= number
        assert union == (1 << bits) - 1 and intersection == 0


def test_a_new_secret_for_a_handle_keeps_it() -> None:
    handle = new_handle()
    first, second = new_secret(handle), new_secret(handle)
    assert handle_of(first) == handle_of(second) == handle and first != second


@pytest.mark.parametrize(
    "value",
    [
        "",
        "A" * 64,
        "A" * 66,
        "A" * 64 + "=",
        "A" * 64 + "+",
        "A" * 64 + "/",
        "A" * 64 + " ",
        "A" * 64 + "\n",
        "A" * 65 + "\n",
        " " + "A" * 64,
        "A" * 64 + "é",
        "A" * 64 + "\u0661",  # an Arabic-Indic digit: \d would match it, we must not
        "A" * 64 + "\x00",
        "A" * 43,  # a session ID of coatcheck 0.1: no handle
    ],
    ids=repr,
)
def test_malformed_secrets_are_rejected(value: str) -> None:
    assert not is_wellformed(value)


@pytest.mark.parametrize("value", ["A" * 65, "-" * 65, "_" * 65, "aZ09-_" * 10 + "xxxxx"])
def test_wellformed_secrets(value: str) -> None:
    assert is_wellformed(value)


@pytest.mark.parametrize("value", ["", "A" * 21, "A" * 23, "A" * 21 + "=", "A" * 65, 7, None])
def test_malformed_handles_are_rejected(value: object) -> None:
    assert not is_handle(value)


def test_verifier_hash_is_sha256_and_not_the_secret() -> None:
    secret = new_secret()
    assert verifier_hash(secret) == verifier_hash(secret) != secret
    assert verifier_hash(secret) != verifier_hash(new_secret(handle_of(secret)))
    assert verifier_hash(secret) == hashlib.sha256(secret.encode()).hexdigest()
    # a known answer, so what the store keeps can never change silently
    assert verifier_hash("A" * 65) == hashlib.sha256(b"A" * 65).hexdigest()


def test_a_keyed_verifier_hash_is_an_hmac_and_depends_on_the_key() -> None:
    secret = new_secret()
    keyed = verifier_hash(secret, b"k" * 32)
    assert keyed == hmac.new(b"k" * 32, secret.encode(), hashlib.sha256).hexdigest()
    assert keyed != verifier_hash(secret) != verifier_hash(secret, b"j" * 32)


@given(st.text())
def test_log_hash_is_salted_short_hex(value: str) -> None:
    first = log_hash(b"salt-1", value)
    assert first == log_hash(b"salt-1", value)
    assert len(first) == 16 and all(c in "0123456789abcdef" for c in first)
    assert first != log_hash(b"salt-2", value)
