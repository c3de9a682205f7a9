"""`coatcheck keys new --alg EdDSA|ES256`, `keys check` and `keys jwks` with signing keys,
and `token inspect` of an EdDSA / ES256 token: the private key is printed only by `new`."""

from __future__ import annotations

import io
import json

import pytest

from coatcheck.asymmetric import AsymmetricJWSCodec
from coatcheck.cli import EXIT_FAILED, EXIT_USAGE, main
from coatcheck.keys import KeyRing
from coatcheck.verify import Verifier


def run(*argv: str) -> tuple[int, str]:
    out = io.StringIO()
    code = main(list(argv), out=out)
    return code, out.getvalue()


@pytest.mark.parametrize("alg", ["EdDSA", "ES256"])
def test_keys_new_alg_prints_private_jwks_the_ring_loads(
    alg: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out = run("keys", "new", "--alg", alg, "--count", "2")
    assert code == 0 and len(out.splitlines()) == 2
    assert "jwks" in capsys.readouterr().err
    ring = KeyRing.parse(out)
    assert ring.signing_algorithm == alg and len(ring.signing_keys()) == 2
    code, out = run("keys", "new", "--alg", alg, "--json")
    (text,) = json.loads(out)["keys"]
    (kid,) = json.loads(out)["kids"]
    monkeypatch.setenv("COATCHECK_KEYS", text)
    secret = json.loads(text)["d"]
    # check: names the key, never prints it
    code, out = run("keys", "check")
    assert code == 0 and kid in out and secret not in out and alg in out
    code, out = run("keys", "check", "--json")
    (row,) = json.loads(out)["signing_keys"]
    assert row == {"position": 1, "current": True, "alg": alg, "kid": kid}
    # jwks: the public set, which a Verifier takes as it is
    code, out = run("keys", "jwks")
    assert code == 0 and secret not in out and '"d"' not in out
    ring = KeyRing.from_env()
    token = AsymmetricJWSCodec(ring.signing_keys()).encode(
        {"sid": "s" * 22, "iat": 1, "exp": 2**40, "idl": 2**40}
    )
    assert Verifier(json.loads(out), clock=lambda: 2).verify(token)["sid"] == "s" * 22
    # token inspect verifies it with the configured signing keys
    code, out = run("token", "inspect", token)
    assert f"JWS {alg}" in out and kid in out
    forged = token[:-4] + ("AAAA" if not token.endswith("AAAA") else "BBBB")
    code, out = run("token", "inspect", forged)
    assert code == EXIT_FAILED and "bad signature" in out


def test_keys_jwks_of_symmetric_keys_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    code, out = run("keys", "new", "--json")
    monkeypatch.setenv("COATCHECK_KEYS", json.loads(out)["keys"][0])
    code, _ = run("keys", "jwks")
    assert code == EXIT_FAILED


def test_keys_new_refuses_an_unknown_alg() -> None:
    with pytest.raises(SystemExit) as exit_:
        run("keys", "new", "--alg", "none")
    assert exit_.value.code == EXIT_USAGE
