# -*- test-case-name: tests.registrar.test_users -*-
"""The users file: who may REGISTER (and call through the proxy), with which secret.

Format, one user per line::

    # Lines starting with '#' and blank lines are ignored.
    alice@a.lab   plain:secret
    carol@a.lab   plain:a password with spaces
    bob@a.lab     md5:<32 hex digits>  sha256:<64 hex digits>

- The first field is `user@domain`. The domain is also the digest realm (RFC 3261
  §22.1 suggests the domain as realm), so `alice@a.lab` authenticates in realm `a.lab`.
  Domains compare case-insensitively; user names exactly. A user name may contain `@`
  (the domain is after the last one) but no whitespace.
- Then either `plain:PASSWORD`, which takes the *rest of the line* (so a password may
  contain spaces or `#`; only leading/trailing whitespace is lost), or one or more
  stored HA1 values `ALG:HEX`, where HEX = H(user:domain:password) in hex and ALG is
  `md5`, `sha256` or `sha512-256`. A user with stored hashes can only use the
  algorithms listed: give both `md5` and `sha256` (as `hash_line` does), since clients
  answer SHA-256 when they can and MD5 otherwise (RFC 8760 §2.4).
- A user may appear only once.

Stored hashes keep the password out of the file, but an HA1 is still a password
equivalent *for its realm*: protect the file either way.

`hash_line(user, domain, password)` writes a hashed line. Errors name the place:
`UsersFileError: users.txt:7: ...`.
"""

from __future__ import annotations

import os
import string
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field

from sipcore.digest import base_algorithm, compute_ha1

# File spelling -> digest algorithm name, with each one's hex length.
_HASH_KINDS = {"md5": ("MD5", 32), "sha256": ("SHA-256", 64), "sha512-256": ("SHA-512-256", 64)}
_HEX = frozenset(string.hexdigits)
# Host names, IPv4 and bracketed IPv6: the realm is the domain, so it must look like one.
_HOST_CHARS = frozenset(string.ascii_letters + string.digits + ".-[]:")


class UsersFileError(ValueError):
    """A malformed users file line; str() is `path:lineno: message`."""

    def __init__(self, path: str, lineno: int, message: str) -> None:
        super().__init__(f"{path}:{lineno}: {message}")
        self.path = path
        self.lineno = lineno
        self.message = message


@dataclass(slots=True)
class UserEntry:
    user: str
    domain: str  # lower-cased
    password: str | None = None
    ha1s: dict[str, str] = field(default_factory=dict)  # base algorithm -> lower hex


class Users:
    """Users by (user, domain), answering `sipcore.digest.HA1Store.ha1`."""

    def __init__(self, entries: Iterable[UserEntry] = ()) -> None:
        self._entries: dict[tuple[str, str], UserEntry] = {}
        for entry in entries:
            self.add(entry)

    def replace(self, other: Users) -> None:
        """Take `other`'s users in one step (SIGHUP reload): every holder of this
        object (proxy, registrar, digest authenticators) sees the new table at once."""
        self._entries = dict(other._entries)

    def add(self, entry: UserEntry) -> None:
        key = (entry.user, entry.domain.lower())
        if key in self._entries:
            raise ValueError(f"duplicate user {entry.user}@{entry.domain}")
        self._entries[key] = entry

    @classmethod
    def from_passwords(cls, passwords: dict[str, str]) -> Users:
        """`{"alice@a.lab": "secret"}` -> Users; handy for tests and quick setups."""
        entries = []
        for address, password in passwords.items():
            user, _, domain = address.rpartition("@")
            if not user or not domain:
                raise ValueError(f"not user@domain: {address!r}")
            entries.append(UserEntry(user, domain.lower(), password=password))
        return cls(entries)

    @classmethod
    def from_lines(cls, lines: Iterable[str], path: str = "<users>") -> Users:
        users = cls()
        for lineno, line in enumerate(lines, start=1):
            entry = _parse_line(line, path, lineno)
            if entry is None:
                continue
            try:
                users.add(entry)
            except ValueError as e:
                raise UsersFileError(path, lineno, str(e)) from None
        return users

    def ha1(self, user: str, realm: str, algorithm: str) -> str | None:
        """H(user:realm:password) in lower-case hex for a base algorithm, or None when
        the user is unknown in this realm or has no secret for that algorithm."""
        entry = self._entries.get((user, realm.lower()))
        if entry is None:
            return None
        algorithm = base_algorithm(algorithm)
        if entry.password is not None:
            # Hash with the realm as the client sent it: that is what its HA1 covers.
            return compute_ha1(algorithm, user, realm, entry.password)
        return entry.ha1s.get(algorithm)

    def __contains__(self, address: object) -> bool:
        if not isinstance(address, str):
            return False
        user, _, domain = address.rpartition("@")
        return (user, domain.lower()) in self._entries

    def __len__(self) -> int:
        return len(self._entries)

    def __iter__(self) -> Iterator[UserEntry]:
        return iter(self._entries.values())

    def domains(self) -> set[str]:
        return {domain for _user, domain in self._entries}


def _parse_line(line: str, path: str, lineno: int) -> UserEntry | None:
    text = line.strip()
    if not text or text.startswith("#"):
        return None

    def fail(message: str) -> UsersFileError:
        return UsersFileError(path, lineno, message)

    address, *others = text.split(None, 1)
    rest = others[0] if others else ""
    user, _, domain = address.rpartition("@")
    if not user or not domain:
        raise fail(f"expected user@domain, got {address!r}")
    if not set(domain) <= _HOST_CHARS:
        raise fail(f"bad domain {domain!r}")
    if not rest:
        raise fail(f"no password or hash for {address}")
    entry = UserEntry(user, domain.lower())

    if rest.startswith("plain:"):
        password = rest[len("plain:") :].strip()
        if not password:
            raise fail(f"empty password for {address}")
        entry.password = password
        return entry

    for item in rest.split():
        kind, sep, value = item.partition(":")
        kind = kind.lower()
        if not sep:
            raise fail(f"expected plain:PASSWORD or ALG:HEX, got {item!r}")
        if kind == "plain":
            raise fail("plain: must come first and take the rest of the line")
        if kind not in _HASH_KINDS:
            raise fail(f"unknown hash kind {kind!r} (use md5, sha256 or sha512-256)")
        algorithm, length = _HASH_KINDS[kind]
        if len(value) != length or not set(value) <= _HEX:
            raise fail(f"{kind} hash must be {length} hex digits")
        if algorithm in entry.ha1s:
            raise fail(f"{kind} given twice for {address}")
        entry.ha1s[algorithm] = value.lower()
    return entry


def load_users(path: str | os.PathLike[str]) -> Users:
    """Read a users file; raises `UsersFileError` (a ValueError) for a bad line."""
    name = os.fspath(path)
    with open(name, encoding="utf-8") as f:
        return Users.from_lines(f, name)


def hash_line(user: str, domain: str, password: str) -> str:
    """A users-file line storing MD5 and SHA-256 HA1s instead of the password."""
    if not user or any(c.isspace() for c in user):
        raise ValueError(f"bad user name {user!r}")
    domain = domain.lower()
    md5 = compute_ha1("MD5", user, domain, password)
    sha256 = compute_ha1("SHA-256", user, domain, password)
    return f"{user}@{domain}  md5:{md5}  sha256:{sha256}"
