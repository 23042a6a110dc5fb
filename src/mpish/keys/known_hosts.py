"""``known_hosts``: pinned server keys, checked like ssh's ``StrictHostKeyChecking``."""

from __future__ import annotations

import base64
import os
from dataclasses import dataclass

from mpish.wire.errors import AuthenticationError

from ._files import (
    KeyFileError,
    KeyFormatError,
    check_home,
    content_lines,
    ensure_home,
    mpish_home,
    open_trusted,
    read_text_file,
)
from .public import KEY_TYPE, check_public, decode_key_b64, fingerprint

KNOWN_HOSTS_NAME = "known_hosts"
_POLICIES = ("accept-new", "strict")


class HostKeyChangedError(AuthenticationError):
    """A host presented a key other than the one pinned in known_hosts."""


class UnknownHostError(AuthenticationError):
    """A host is not in known_hosts and the policy forbids adding it."""


def _check_host(host: str) -> str:
    if not host or any(ch.isspace() or ch in ",#" for ch in host) or not host.isprintable():
        raise ValueError(f"invalid host name for known_hosts: {host!r}")
    return host


@dataclass(frozen=True)
class _KnownHost:
    hosts: tuple[str, ...]
    public: bytes
    line: int


class KnownHosts:
    """Pinned server keys in ``<home>/known_hosts``, checked like ssh's StrictHostKeyChecking."""

    def __init__(self, home: str | os.PathLike[str] | None = None) -> None:
        self.home = mpish_home(home)
        self.path = self.home / KNOWN_HOSTS_NAME

    def _entries(self) -> list[_KnownHost]:
        check_home(self.home)
        text = read_text_file(self.path, KNOWN_HOSTS_NAME) or ""
        entries: list[_KnownHost] = []
        problems: list[str] = []
        for number, line in content_lines(text):
            parts = line.split()
            if len(parts) != 3 or parts[1] != KEY_TYPE:
                problems.append(f"  line {number}: expected '<host> {KEY_TYPE} <base64>'")
                continue
            try:
                pub = decode_key_b64(parts[2])
            except KeyFormatError as exc:
                problems.append(f"  line {number}: {exc}")
                continue
            entries.append(_KnownHost(tuple(parts[0].split(",")), pub, number))
        if problems:
            raise KeyFormatError(f"bad entries in '{self.path}':\n" + "\n".join(problems))
        return entries

    def lookup(self, host: str) -> list[tuple[bytes, int]]:
        """``(public key, line number)`` of every entry for ``host``."""
        _check_host(host)
        return [(e.public, e.line) for e in self._entries() if host in e.hosts]

    def check(self, host: str, pub: bytes, policy: str = "accept-new") -> str:
        """``"known"`` or ``"added"``; raises if ``host`` presents another key than pinned.

        ``policy`` is ``"accept-new"`` (trust on first use: an unknown host is appended)
        or ``"strict"`` (an unknown host raises UnknownHostError). A host known with a
        different key raises HostKeyChangedError under every policy, and the file is
        left as it is.
        """
        if policy not in _POLICIES:
            raise ValueError(f"unknown host key policy {policy!r}; expected one of {_POLICIES}")
        _check_host(host)
        check_public(pub)
        matches = self.lookup(host)
        if any(known == pub for known, _ in matches):
            return "known"
        if matches:
            known, line = matches[0]
            raise HostKeyChangedError(self._changed_message(host, pub, known, line))
        if policy == "strict":
            raise UnknownHostError(
                f"No {KEY_TYPE} host key is known for {host} and you have requested strict "
                f"checking. Its key fingerprint is {fingerprint(pub)}.\n"
                f"If that is right, add this line to '{self.path}':\n"
                f"{host} {KEY_TYPE} {base64.b64encode(pub).decode('ascii')}\n"
                "Host key verification failed."
            )
        self._append(host, pub)
        return "added"

    def _changed_message(self, host: str, pub: bytes, known: bytes, line: int) -> str:
        banner = "@" * 59
        return "\n".join(
            [
                banner,
                "@    WARNING: REMOTE HOST IDENTIFICATION HAS CHANGED!     @",
                banner,
                "IT IS POSSIBLE THAT SOMEONE IS DOING SOMETHING NASTY!",
                "Someone could be eavesdropping on you right now (man-in-the-middle attack)!",
                "It is also possible that a host key has just been changed.",
                f"The fingerprint for the {KEY_TYPE} key sent by {host} is",
                f"{fingerprint(pub)}.",
                f"The key pinned for {host} has the fingerprint",
                f"{fingerprint(known)}.",
                "Please contact your system administrator.",
                f"Add correct host key in {self.path} to get rid of this message.",
                f"Offending {KEY_TYPE} key in {self.path}:{line}",
                f"  (remove line {line} of that file if the new key is legitimate)",
                f"Host key for {host} has changed and you have requested strict checking.",
                "Host key verification failed.",
            ]
        )

    def _append(self, host: str, pub: bytes) -> None:
        check_home(ensure_home(self.home))
        entry = f"{host} {KEY_TYPE} {base64.b64encode(pub).decode('ascii')}\n"
        try:
            fd = open_trusted(self.path, KNOWN_HOSTS_NAME, flags=os.O_RDWR | os.O_CREAT | os.O_APPEND)
            assert fd is not None  # O_CREAT
            try:
                size = os.fstat(fd).st_size
                if size and os.pread(fd, 1, size - 1) != b"\n":
                    entry = "\n" + entry
                os.write(fd, entry.encode("ascii"))
                os.fsync(fd)
            finally:
                os.close(fd)
        except KeyFileError:
            raise
        except OSError as exc:
            raise KeyFileError(f"cannot add {host} to '{self.path}': {exc}") from exc
