"""Identity keys, authorized_keys and known_hosts: the files under ``~/.mpish/``.

Theory of operation
-------------------
mpish's static keys are X25519 keys made for mpish only (THREAT-MODEL "Static keys").
The files mirror OpenSSH's so that a user already knows how to handle them:

``id_x25519``
    The private key, mode 0600, in a PEM-like armour around a small versioned blob::

        -----BEGIN MPISH (private key label)-----
        base64( b"MPISHKEY" | version (1 byte) | private (32) | public (32)
                | comment length (2 bytes, big endian) | comment (UTF-8) )
        -----END MPISH (private key label)-----

    The public half is stored too and checked against the one derived from the
    private half, so that a damaged file is reported as damaged rather than
    silently turning into another identity. The file is written to a temporary
    file created with ``O_CREAT | O_EXCL`` and mode 0600 (it is never readable by
    others, not even for an instant; no chmod after the fact), then linked into
    place: ``os.link`` when an existing key must not be overwritten (atomic
    no-clobber, so two ranks sharing a home directory cannot both create one),
    ``os.replace`` when it may. Loading refuses a file that group or others can
    access at all, with OpenSSH's own warning.

``id_x25519.pub``
    One line, like OpenSSH: ``mpish-x25519 <base64 of the 32 raw bytes> <comment>``.
    Fingerprints are ``SHA256:<unpadded base64 of sha256(raw public key)>``, the
    format of ``ssh-keygen -l``.

``authorized_keys``
    One public key line per peer allowed to join the user's jobs or reach the
    user's servers; ``#`` comments and blank lines are ignored. A malformed line is
    an error naming the file and line number (fail loudly rather than silently
    dropping a peer). Like sshd's StrictModes, the file is refused when group or
    others can write to it, since whoever can write it can grant themselves access.
    The user's own key is always trusted (:func:`trusted_keys`).

``known_hosts``
    ``<host>[,<host>...] mpish-x25519 <base64>`` lines pinning servers' keys,
    checked like ssh's ``StrictHostKeyChecking`` (``accept-new`` or ``strict``).
    A malformed line is an error too: skipping it could turn a changed key into an
    "unknown host" that ``accept-new`` would then trust.

Trust checks (OpenSSH's StrictModes): whoever can change a trust file can grant
themselves access, so the mpish directory, the private key, ``authorized_keys`` and
``known_hosts`` must be owned by the user (or root) and writable by nobody else; so
must every directory above the mpish directory up to the user's home directory (as
sshd walks up to it), except that a sticky directory such as ``/tmp`` is fine above it
(others cannot rename what is in it), never as the mpish directory itself. A file
that fails is refused with what is wrong and the command that fixes it. Files are
opened with ``O_NOFOLLOW | O_NONBLOCK`` and checked with ``fstat`` on the opened
descriptor (a regular file, checked as opened, not as named), so a symlink is refused
and a FIFO planted in the directory cannot hang mpish.

Public keys are rejected when they are not valid X25519 points of large order
(THREAT-MODEL attack 13): a low-order key would make every DH output all zero.
"""

from __future__ import annotations

from ._files import KeyFileError, KeyFormatError, KeyPermissionError, check_home, mpish_home
from .authorized import AUTHORIZED_KEYS_NAME, AuthorizedKey, AuthorizedKeys, trusted_keys
from .identity import (
    PRIVATE_KEY_NAME,
    PUBLIC_KEY_NAME,
    Identity,
    default_comment,
    ensure_identity,
    generate_identity,
    load_identity,
)
from .known_hosts import KNOWN_HOSTS_NAME, HostKeyChangedError, KnownHosts, UnknownHostError
from .public import KEY_TYPE, fingerprint, format_public_key, parse_public_key

__all__ = [
    "KEY_TYPE",
    "PRIVATE_KEY_NAME",
    "PUBLIC_KEY_NAME",
    "AUTHORIZED_KEYS_NAME",
    "KNOWN_HOSTS_NAME",
    "KeyFileError",
    "KeyPermissionError",
    "KeyFormatError",
    "HostKeyChangedError",
    "UnknownHostError",
    "Identity",
    "AuthorizedKey",
    "AuthorizedKeys",
    "KnownHosts",
    "mpish_home",
    "check_home",
    "default_comment",
    "fingerprint",
    "format_public_key",
    "parse_public_key",
    "generate_identity",
    "load_identity",
    "ensure_identity",
    "trusted_keys",
]
