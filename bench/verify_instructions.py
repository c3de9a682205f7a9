"""Instructions to verify one client-side token, counted by valgrind: EdDSA and ES256 beside
HS256, coatcheck's codecs against PyJWT's (deterministic, where timings on a shared machine
are not; `bench/codec.py --cpu` gives the times).

Each implementation runs twice under `valgrind --tool=callgrind`: once verifying 0 tokens
and once `--count` tokens; the difference divided by the count is one verification
(signature, base64url, JSON; no time claims, no cache: every token is verified in full).

    .venv/bin/python bench/verify_instructions.py               # ~3 min, 1 core
    .venv/bin/python bench/verify_instructions.py --count 100 --only coatcheck-EdDSA
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import tempfile
from collections.abc import Callable
from typing import Any

NOW = 1_767_225_600
SESSION: dict[str, Any] = {
    "sid": "p3Vh0sT3oF9nq1rXw2Yz7A",
    "sub": "user-1842",
    "iat": NOW,
    "exp": NOW + 12 * 3600,
    "idl": NOW + 1800,
    "dat": {"cart": ["coat"], "theme": "dark"},
    "csrf": "Zq8v2X5cJ1bN4mT7rK0dWy3sQ6eU9hLa",
}
NAMES = [
    "coatcheck-HS256",
    "coatcheck-EdDSA",
    "coatcheck-ES256",
    "pyjwt-HS256",
    "pyjwt-EdDSA",
    "pyjwt-ES256",
]


def verifier(name: str) -> Callable[[], Any]:
    """A function that verifies one token with implementation `name`, set up in full."""
    import jwt

    from coatcheck.asymmetric import AsymmetricJWSCodec
    from coatcheck.keys import JWS_HS256, KeyRing
    from coatcheck.tokens import JWSCodec

    library, alg = name.split("-")
    if alg == "HS256":
        ring = KeyRing([bytes(range(32))])
        codec: Any = JWSCodec(ring, seen=0)
        key: Any = ring.current(JWS_HS256).secret
        public: Any = key
    else:
        ring = KeyRing.generate(algorithm=alg)
        codec = AsymmetricJWSCodec(ring.signing_keys(), seen=0)
        key = ring.signing_keys()[0].private
        public = key.public_key()
    if library == "coatcheck":
        token = codec.encode(SESSION)
        return lambda: codec.decode(token)
    token = jwt.encode(SESSION, key, algorithm=alg)
    options: Any = {"verify_exp": False, "verify_iat": False, "verify_nbf": False}
    return lambda: jwt.decode(token, public, algorithms=[alg], options=options)


def child(name: str, count: int) -> None:
    verify = verifier(name)
    verify()  # first use outside the count: lazy imports, caches
    for _ in range(count):
        verify()


def instructions(name: str, count: int) -> int:
    with tempfile.TemporaryDirectory() as tmp:
        out = os.path.join(tmp, "callgrind.out")
        subprocess.run(
            [
                "valgrind",
                "--tool=callgrind",
                f"--callgrind-out-file={out}",
                sys.executable,
                __file__,
                "--child",
                name,
                "--count",
                str(count),
            ],
            check=True,
            capture_output=True,
        )
        with open(out, encoding="utf-8") as summary:
            found = re.search(r"^summary:\s+(\d+)", summary.read(), re.M)
        assert found is not None
        return int(found.group(1))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=200, help="tokens verified (default 200)")
    parser.add_argument("--only", choices=NAMES, action="append", help="run only these")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args.child, args.count)
        return
    print("| implementation | instructions per verification |")
    print("|---|---:|")
    for name in args.only or NAMES:
        base = instructions(name, 0)
        full = instructions(name, args.count)
        print(f"| {name} | {(full - base) / args.count:,.0f} |", flush=True)


if __name__ == "__main__":
    main()
