"""Tests for registrar.users: the users file format and its HA1 lookups."""

from __future__ import annotations

from pathlib import Path

import pytest
from twisted.internet.task import Clock

from registrar.users import Users, UsersFileError, hash_line, load_users
from sipcore.digest import AuthOutcome, DigestAuthenticator, answer_challenge, compute_ha1

SAMPLE = """\
# a comment, then a blank line

alice@a.lab   plain:secret
carol@A.Lab\tplain:  two words # not a comment
   # an indented comment
bob@a.lab     md5:{md5}  SHA256:{sha256}
dave@b.lab    md5:{dave_md5}
"""


def write_sample(tmp_path: Path) -> Path:
    path = tmp_path / "users"
    path.write_text(
        SAMPLE.format(
            md5=compute_ha1("MD5", "bob", "a.lab", "hunter2").upper(),
            sha256=compute_ha1("SHA-256", "bob", "a.lab", "hunter2"),
            dave_md5=compute_ha1("MD5", "dave", "b.lab", "pw"),
        )
    )
    return path


def test_load_and_lookup(tmp_path: Path) -> None:
    users = load_users(write_sample(tmp_path))
    assert len(users) == 4
    assert "alice@a.lab" in users and "carol@a.lab" in users and "eve@a.lab" not in users
    assert users.domains() == {"a.lab", "b.lab"}
    assert users.ha1("alice", "a.lab", "MD5") == compute_ha1("MD5", "alice", "a.lab", "secret")
    assert users.ha1("alice", "a.lab", "SHA-256") == compute_ha1(
        "SHA-256", "alice", "a.lab", "secret"
    )
    # The password is the rest of the line, '#' included; outer whitespace is dropped.
    assert users.ha1("carol", "a.lab", "MD5") == compute_ha1(
        "MD5", "carol", "a.lab", "two words # not a comment"
    )
    # Stored hashes come back lower-cased; -sess uses the base HA1.
    assert users.ha1("bob", "a.lab", "MD5-sess") == compute_ha1("MD5", "bob", "a.lab", "hunter2")
    assert users.ha1("bob", "a.lab", "SHA-256") == compute_ha1("SHA-256", "bob", "a.lab", "hunter2")
    assert users.ha1("dave", "b.lab", "SHA-256") is None  # no sha256 stored
    assert users.ha1("bob", "b.lab", "MD5") is None  # wrong realm
    assert users.ha1("eve", "a.lab", "MD5") is None


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ("alice", "expected user@domain, got 'alice'"),
        ("@a.lab plain:x", "expected user@domain, got '@a.lab'"),
        ("alice@ plain:x", "expected user@domain, got 'alice@'"),
        ("alice@a.lab", "no password or hash for alice@a.lab"),
        ("alice@a lab plain:x", "expected plain:PASSWORD or ALG:HEX, got 'lab'"),
        ("alice@a/lab plain:x", "bad domain 'a/lab'"),
        ("alice@a.lab plain:", "empty password for alice@a.lab"),
        ("alice@a.lab secret", "expected plain:PASSWORD or ALG:HEX, got 'secret'"),
        ("alice@a.lab sha1:abcd", "unknown hash kind 'sha1' (use md5, sha256 or sha512-256)"),
        ("alice@a.lab md5:abcd", "md5 hash must be 32 hex digits"),
        ("alice@a.lab md5:" + "g" * 32, "md5 hash must be 32 hex digits"),
        ("alice@a.lab sha256:" + "0" * 32, "sha256 hash must be 64 hex digits"),
        ("alice@a.lab md5:" + "0" * 32 + " md5:" + "1" * 32, "md5 given twice for alice@a.lab"),
        (
            "alice@a.lab md5:" + "0" * 32 + " plain:x",
            "plain: must come first and take the rest of the line",
        ),
    ],
)
def test_bad_lines(tmp_path: Path, line: str, message: str) -> None:
    path = tmp_path / "users"
    path.write_text(f"# header\n\n{line}\n")
    with pytest.raises(UsersFileError) as info:
        load_users(path)
    assert str(info.value) == f"{path}:3: {message}"
    assert info.value.lineno == 3 and isinstance(info.value, ValueError)
    assert "\n" not in str(info.value)


def test_duplicate_user(tmp_path: Path) -> None:
    path = tmp_path / "users"
    path.write_text("alice@a.lab plain:x\nalice@A.LAB plain:y\n")
    with pytest.raises(UsersFileError, match=r":2: duplicate user alice@a.lab$"):
        load_users(path)


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError):
        load_users(tmp_path / "nope")


def test_hash_line_round_trip(tmp_path: Path) -> None:
    line = hash_line("alice", "A.lab", "s3cret")
    assert line.startswith("alice@a.lab  md5:") and "sha256:" in line and "s3cret" not in line
    users = Users.from_lines([line])
    for algorithm in ("MD5", "SHA-256"):
        assert users.ha1("alice", "a.lab", algorithm) == compute_ha1(
            algorithm, "alice", "a.lab", "s3cret"
        )
    with pytest.raises(ValueError):
        hash_line("al ice", "a.lab", "x")


def test_from_passwords() -> None:
    users = Users.from_passwords({"alice@A.lab": "pw"})
    assert users.ha1("alice", "a.lab", "MD5") == compute_ha1("MD5", "alice", "a.lab", "pw")
    with pytest.raises(ValueError):
        Users.from_passwords({"alice": "pw"})


@pytest.mark.parametrize("algorithm", ["SHA-256", "MD5"])
def test_users_file_drives_authenticator(tmp_path: Path, algorithm: str) -> None:
    users = load_users(write_sample(tmp_path))
    auth = DigestAuthenticator("a.lab", users, Clock())
    for user, password in (("alice", "secret"), ("bob", "hunter2")):
        challenge = next(c for c in auth.challenge() if c.algorithm == algorithm)
        creds = answer_challenge(challenge, "REGISTER", "sip:a.lab", user, password)
        result = auth.verify("REGISTER", creds)
        assert result.ok and result.username == user
    creds = answer_challenge(challenge, "REGISTER", "sip:a.lab", "bob", "wrong", nc=2)
    assert auth.verify("REGISTER", creds).outcome is AuthOutcome.FAILED
