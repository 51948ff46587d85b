"""Digest authentication throughput: parse + verify per second, per algorithm.

Run: ``python bench/digest.py``. Prints figures only (no timing assertions).
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from sipcore.digest import (  # noqa: E402
    Credentials,
    DigestAuthenticator,
    answer_challenge,
    compute_ha1,
)


class _Users:
    def ha1(self, user: str, realm: str, algorithm: str) -> str | None:
        return compute_ha1(algorithm, user, realm, "secret")


class _Clock:
    def seconds(self) -> float:
        return 0.0


def main(rounds: int = 20_000) -> None:
    for algorithm in ("MD5", "SHA-256", "SHA-256-sess"):
        auth = DigestAuthenticator("a.lab", _Users(), _Clock(), algorithms=(algorithm,))
        [challenge] = auth.challenge()
        headers = [
            str(answer_challenge(challenge, "REGISTER", "sip:a.lab", "alice", "secret", nc=n))
            for n in range(1, rounds + 1)
        ]
        start = time.perf_counter()
        for value in headers:
            if not auth.verify("REGISTER", Credentials.parse(value)).ok:
                raise SystemExit(f"{algorithm}: verification failed, figures meaningless")
        elapsed = time.perf_counter() - start
        per_us = elapsed / rounds * 1e6
        print(f"{algorithm:14} {rounds / elapsed:10.0f} verifies/s  ({per_us:.1f} us each)")
    auth = DigestAuthenticator("a.lab", _Users(), _Clock())
    start = time.perf_counter()
    for _ in range(rounds):
        auth.challenge_header_values()
    elapsed = time.perf_counter() - start
    print(f"{'challenge x2':14} {rounds / elapsed:10.0f} 401s/s")


if __name__ == "__main__":
    main()
