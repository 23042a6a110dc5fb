"""``authorized_keys``: the other keys allowed into the user's jobs and servers."""

from __future__ import annotations

import os
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

from ._files import KeyFormatError, check_home, content_lines, read_text_file
from .identity import Identity
from .public import fingerprint, parse_public_key

AUTHORIZED_KEYS_NAME = "authorized_keys"


@dataclass(frozen=True)
class AuthorizedKey:
    """One entry of authorized_keys."""

    public: bytes
    comment: str
    line: int

    @property
    def fingerprint(self) -> str:
        """``SHA256:...`` of the key."""
        return fingerprint(self.public)


class AuthorizedKeys:
    """The peers' keys allowed in, from ``<home>/authorized_keys``.

    A missing file means no extra keys. A malformed line raises KeyFormatError naming
    every bad line, rather than silently leaving a peer out; a file that group or
    others can write is refused (KeyPermissionError), as sshd's StrictModes does.
    """

    def __init__(self, entries: Iterable[AuthorizedKey] = (), path: Path | None = None) -> None:
        self.entries: tuple[AuthorizedKey, ...] = tuple(entries)
        self.path = path
        self._keys = frozenset(entry.public for entry in self.entries)

    @classmethod
    def load(cls, home: str | os.PathLike[str] | None = None) -> AuthorizedKeys:
        """Read ``<home>/authorized_keys``; empty if it does not exist."""
        path = check_home(home) / AUTHORIZED_KEYS_NAME
        text = read_text_file(path, AUTHORIZED_KEYS_NAME)
        return cls.parse(text or "", path)

    @classmethod
    def parse(cls, text: str, path: Path | None = None) -> AuthorizedKeys:
        """Parse authorized_keys text; ``path`` is only used in error messages."""
        where = f"'{path}'" if path is not None else "authorized_keys"
        entries: list[AuthorizedKey] = []
        problems: list[str] = []
        for number, line in content_lines(text):
            try:
                pub, comment = parse_public_key(line)
            except KeyFormatError as exc:
                problems.append(f"  line {number}: {exc}")
                continue
            entries.append(AuthorizedKey(public=pub, comment=comment, line=number))
        if problems:
            raise KeyFormatError(f"bad entries in {where}:\n" + "\n".join(problems))
        return cls(entries, path)

    def is_authorized(self, pub: bytes) -> bool:
        """True if ``pub`` is listed."""
        return pub in self._keys

    def __len__(self) -> int:
        return len(self.entries)

    def __iter__(self) -> Iterator[AuthorizedKey]:
        return iter(self.entries)


def trusted_keys(identity: Identity, home: str | os.PathLike[str] | None = None) -> frozenset[bytes]:
    """The public keys allowed in the user's own jobs: their own key plus authorized_keys."""
    return frozenset({identity.public}) | frozenset(entry.public for entry in AuthorizedKeys.load(home))
