"""Codec benchmark: encode and verify+decode of a ~300-byte session, one process, one run.

coatcheck's JWS and JWE codecs against PyJWT, joserfc, itsdangerous, Starlette's cookie
codec, Fernet, and the floor: HMAC-SHA256 + base64url + the fastest JSON library available,
written as tightly as we know how, measured in the same run. Rounds interleave the codecs
(each round times one batch of every codec), so drift on a shared machine hits all alike;
the table shows the median per-operation time over the rounds.

    .venv/bin/python bench/codec.py            # ~20 s
    .venv/bin/python bench/codec.py --quick    # a few seconds, noisier
    .venv/bin/python bench/codec.py --cpu      # CPU time: steadier when others load the machine
"""

from __future__ import annotations

import argparse
import base64
import binascii
import hashlib
import hmac
import json
import platform
import statistics
import sys
import time
from collections.abc import Callable
from typing import Any

import coatcheck.tokens as tokens
from coatcheck.keys import JWE_A256GCM, JWS_HS256, KeyRing

NOW = 1_767_225_600  # fixed, so every codec sees the same claims

SESSION: dict[str, Any] = {
    "sid": "p3Vh0sT3oF9nq1rXw2Yz7A",
    "sub": "user-1842",
    "iat": NOW,
    "auth_time": NOW,
    "exp": NOW + 12 * 3600,
    "idl": NOW + 1800,
    "d": {
        "cart": [{"sku": "A-1001", "qty": 2}, {"sku": "B-2002", "qty": 1}],
        "theme": "dark",
        "locale": "en-GB",
        "csrf": "Zq8v2X5cJ1bN4mT7rK0dWy3sQ6eU9hLa",
        "flash": ["Saved your settings."],
        "last_page": "/account/orders?page=2",
    },
}

Codec = tuple[str, Callable[[], Any], Callable[[], Any]]


def _b64e(raw: bytes) -> bytes:
    return binascii.b2a_base64(raw, newline=False).translate(_TO_URL).rstrip(b"=")


_TO_URL = bytes.maketrans(b"+/", b"-_")
_TO_STD = bytes.maketrans(b"-_", b"+/")
_PAD = (b"", b"", b"==", b"=")


def fastest_json() -> tuple[str, Callable[[Any], bytes], Callable[[bytes], Any]]:
    """The JSON library with the fastest dumps+loads of SESSION, measured here."""
    candidates: list[tuple[str, Callable[[Any], bytes], Callable[[bytes], Any]]] = [
        ("json", lambda v: json.dumps(v, separators=(",", ":")).encode(), json.loads)
    ]
    try:
        import orjson

        candidates.append(("orjson", orjson.dumps, orjson.loads))
    except ImportError:
        pass
    try:
        import msgspec

        candidates.append(("msgspec", msgspec.json.encode, msgspec.json.decode))
    except ImportError:
        pass
    best: tuple[float, int] = (float("inf"), 0)
    for index, (_, dumps, loads) in enumerate(candidates):
        times = []
        for _ in range(7):
            start = time.perf_counter_ns()
            for _ in range(2000):
                loads(dumps(SESSION))
            times.append(time.perf_counter_ns() - start)
        best = min(best, (statistics.median(times), index))
    return candidates[best[1]]


def build(secret: bytes) -> list[Codec]:
    codecs: list[Codec] = []
    json_name, fdumps, floads = fastest_json()

    # -- floor: payload.mac, both base64url, the fastest JSON, a pre-keyed HMAC -------------
    keyed = hmac.new(secret, digestmod=hashlib.sha256)  # keyed once, copied per use

    def floor_encode() -> bytes:
        payload = _b64e(fdumps(SESSION))
        mac = keyed.copy()
        mac.update(payload)
        return payload + b"." + _b64e(mac.digest())

    floor_token = floor_encode().decode()

    def floor_decode() -> Any:
        raw = floor_token.encode()
        payload, _, signature = raw.rpartition(b".")
        mac = keyed.copy()
        mac.update(payload)
        if not hmac.compare_digest(_b64e(mac.digest()), signature):
            raise ValueError("bad mac")
        return floads(binascii.a2b_base64(payload.translate(_TO_STD) + _PAD[len(payload) & 3]))

    codecs.append((f"floor (HMAC-SHA256 + base64url + {json_name})", floor_encode, floor_decode))

    # -- coatcheck ------------------------------------------------------------------------
    ring = KeyRing([secret])
    jws = tokens.JWSCodec(ring)
    jwe = tokens.JWECodec(ring)
    jwe_zip = tokens.JWECodec(ring, compress=True)
    jws_token, jwe_token, jwz_token = (
        jws.encode(SESSION),
        jwe.encode(SESSION),
        jwe_zip.encode(SESSION),
    )
    codecs.append(
        ("coatcheck JWS HS256", lambda: jws.encode(SESSION), lambda: jws.decode(jws_token))
    )

    def jws_checked() -> Any:
        decoded = jws.decode(jws_token)
        tokens.check_times(decoded.claims, now=NOW + 60)
        return decoded

    codecs.append(("coatcheck JWS HS256 + check_times", lambda: jws.encode(SESSION), jws_checked))
    codecs.append(
        ("coatcheck JWE dir/A256GCM", lambda: jwe.encode(SESSION), lambda: jwe.decode(jwe_token))
    )
    codecs.append(
        (
            "coatcheck JWE dir/A256GCM zip",
            lambda: jwe_zip.encode(SESSION),
            lambda: jwe_zip.decode(jwz_token),
        )
    )

    # -- PyJWT ----------------------------------------------------------------------------
    import jwt

    hs_key = ring.current(JWS_HS256).secret
    pyjwt_token = jwt.encode(SESSION, hs_key, algorithm="HS256")
    # coatcheck's decode checks no time claims (check_times does), so PyJWT's are off too
    no_claims: jwt.types.Options = {"verify_exp": False, "verify_iat": False, "verify_nbf": False}
    codecs.append(
        (
            "PyJWT HS256",
            lambda: jwt.encode(SESSION, hs_key, algorithm="HS256"),
            lambda: jwt.decode(pyjwt_token, hs_key, algorithms=["HS256"], options=no_claims),
        )
    )

    # -- asymmetric signatures: coatcheck EdDSA / ES256 beside HS256 and PyJWT's -----------
    # `seen=0`: every decode verifies in full (the codecs otherwise remember a token they
    # issued, and a repeat costs no signature check at all).
    from coatcheck.asymmetric import AsymmetricJWSCodec

    hs_full = tokens.JWSCodec(ring, seen=0)
    hs_full_token = hs_full.encode(SESSION)
    codecs.append(
        (
            "coatcheck JWS HS256, every token verified",
            lambda: hs_full.encode(SESSION),
            lambda: hs_full.decode(hs_full_token),
        )
    )
    for alg in ("EdDSA", "ES256"):
        signing = KeyRing.generate(algorithm=alg).signing_keys()
        asym = AsymmetricJWSCodec(signing, seen=0)
        asym_token = asym.encode(SESSION)
        codecs.append(
            (
                f"coatcheck JWS {alg}, every token verified",
                lambda asym=asym: asym.encode(SESSION),  # type: ignore[misc]
                lambda asym=asym, t=asym_token: asym.decode(t),  # type: ignore[misc]
            )
        )
        private, public = signing[0].private, signing[0].private.public_key()
        py_token = jwt.encode(SESSION, private, algorithm=alg)
        codecs.append(
            (
                f"PyJWT {alg}",
                lambda private=private, alg=alg: jwt.encode(SESSION, private, algorithm=alg),  # type: ignore[misc]
                lambda public=public, alg=alg, t=py_token: jwt.decode(  # type: ignore[misc]
                    t, public, algorithms=[alg], options=no_claims
                ),
            )
        )

    # -- joserfc --------------------------------------------------------------------------
    from joserfc import jwe as jjwe
    from joserfc import jws as jjws
    from joserfc.jwk import OctKey

    jose_sig = OctKey.import_key(hs_key)
    jose_enc = OctKey.import_key(ring.current(JWE_A256GCM).secret)
    jose_jws = jjws.serialize_compact({"alg": "HS256"}, json.dumps(SESSION), jose_sig)
    jose_jwe = jjwe.encrypt_compact({"alg": "dir", "enc": "A256GCM"}, json.dumps(SESSION), jose_enc)
    codecs.append(
        (
            "joserfc JWS HS256",
            lambda: jjws.serialize_compact({"alg": "HS256"}, json.dumps(SESSION), jose_sig),
            lambda: json.loads(jjws.deserialize_compact(jose_jws, jose_sig).payload),
        )
    )
    codecs.append(
        (
            "joserfc JWE dir/A256GCM",
            lambda: jjwe.encrypt_compact(
                {"alg": "dir", "enc": "A256GCM"}, json.dumps(SESSION), jose_enc
            ),
            lambda: json.loads(jjwe.decrypt_compact(jose_jwe, jose_enc).plaintext or b""),
        )
    )

    # -- itsdangerous ---------------------------------------------------------------------
    from itsdangerous import TimestampSigner, URLSafeTimedSerializer

    serializer = URLSafeTimedSerializer(secret)
    its_token = serializer.dumps(SESSION)
    codecs.append(
        (
            "itsdangerous URLSafeTimedSerializer",
            lambda: serializer.dumps(SESSION),
            lambda: serializer.loads(its_token, max_age=3600),
        )
    )

    # -- Starlette's SessionMiddleware codec (starlette/middleware/sessions.py) -------------
    signer = TimestampSigner(secret)

    def starlette_encode() -> bytes:
        return signer.sign(base64.b64encode(json.dumps(SESSION).encode("utf-8")))

    starlette_token = starlette_encode()

    def starlette_decode() -> Any:
        return json.loads(base64.b64decode(signer.unsign(starlette_token, max_age=3600)))

    codecs.append(("Starlette SessionMiddleware codec", starlette_encode, starlette_decode))

    # -- Fernet ---------------------------------------------------------------------------
    from cryptography.fernet import Fernet

    fernet = Fernet(base64.urlsafe_b64encode(secret))
    fernet_token = fernet.encrypt(json.dumps(SESSION).encode())
    codecs.append(
        (
            "Fernet (AES-128-CBC + HMAC)",
            lambda: fernet.encrypt(json.dumps(SESSION).encode()),
            lambda: json.loads(fernet.decrypt(fernet_token)),
        )
    )

    # -- coatcheck with the standard library's json (what it costs without orjson) ---------
    codecs.append(
        (
            STDLIB_JSON,
            lambda: jws.encode(SESSION),
            lambda: jws.decode(jws_token),
        )
    )
    return codecs


_BATCH = 500  # operations per timed batch
STDLIB_JSON = "coatcheck JWS HS256, stdlib json"
_clock = time.perf_counter_ns  # --cpu: time.thread_time_ns, blind to time spent preempted


def _batch(op: Callable[[], Any], std_json: bool) -> float:
    """Per-operation µs of one batch of `op`."""
    saved = tokens.loads, tokens.dumps
    if std_json:  # what coatcheck would cost on the standard library's json
        tokens.loads, tokens.dumps = _STD_LOADS, _STD_DUMPS
    try:
        start = _clock()
        for _ in range(_BATCH):
            op()
        return (_clock() - start) / _BATCH / 1000
    finally:
        tokens.loads, tokens.dumps = saved


def _STD_DUMPS(value: Any) -> bytes:  # noqa: N802 - a stand-in for tokens.dumps
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False).encode()


def _STD_LOADS(raw: bytes) -> Any:  # noqa: N802 - a stand-in for tokens.loads
    return json.loads(raw)


Samples = dict[str, tuple[list[float], list[float]]]


def measure(codecs: list[Codec], rounds: int) -> tuple[Samples, Samples]:
    """Per-op times, and per-op ratios to the floor batch timed just before each batch.

    Pairing each batch with a floor batch measured a moment earlier keeps the ratio honest
    on a shared, busy machine, where load shifts between rounds.
    """
    times: Samples = {n: ([], []) for n, _, _ in codecs}
    ratios: Samples = {n: ([], []) for n, _, _ in codecs}
    _, floor_encode, floor_decode = codecs[0]
    for _name, encode, decode in codecs:  # warm up every path once
        encode()
        decode()
    for _ in range(rounds):
        for name, encode, decode in codecs:
            for i, (op, floor_op) in enumerate(((encode, floor_encode), (decode, floor_decode))):
                floor = _batch(floor_op, False)
                took = _batch(op, name == STDLIB_JSON)
                times[name][i].append(took)
                ratios[name][i].append(took / floor)
    return times, ratios


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer rounds, noisier numbers")
    parser.add_argument(
        "--cpu",
        action="store_true",
        help="time this thread's CPU time instead of wall time (for a machine others load)",
    )
    args = parser.parse_args()
    if args.cpu:
        global _clock
        _clock = time.thread_time_ns
    secret = bytes(range(32))
    codecs = build(secret)
    sizes = {
        "JSON": len(json.dumps(SESSION, separators=(",", ":"))),
        "JWS": len(tokens.JWSCodec(KeyRing([secret])).encode(SESSION)),
        "JWE": len(tokens.JWECodec(KeyRing([secret])).encode(SESSION)),
        "JWE zip": len(tokens.JWECodec(KeyRing([secret]), compress=True).encode(SESSION)),
    }
    times, ratios = measure(codecs, rounds=9 if args.quick else 41)
    print(
        f"Python {platform.python_version()}, {platform.machine()}; session JSON "
        + ", ".join(f"{k} {v} B" for k, v in sizes.items())
        + f"; {'thread CPU' if args.cpu else 'wall'} time, medians of"
        f" {len(times[codecs[0][0]][0])} rounds x {_BATCH} ops; × floor is the median ratio"
        " to a floor batch timed just before\n"
    )
    print("| codec | encode µs | × floor | verify+decode µs | × floor |")
    print("|---|---:|---:|---:|---:|")
    for name, _, _ in codecs:
        enc, dec = (statistics.median(s) for s in times[name])
        enc_x, dec_x = (statistics.median(s) for s in ratios[name])
        print(f"| {name} | {enc:.2f} | {enc_x:.2f} | {dec:.2f} | {dec_x:.2f} |")
    sys.stdout.flush()


if __name__ == "__main__":
    main()
