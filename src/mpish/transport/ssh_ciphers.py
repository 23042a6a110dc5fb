"""Which cipher ssh should prefer: AES-GCM first on a CPU with AES instructions, unless configured.

Theory of operation
-------------------
OpenSSH's default preference puts ``chacha20-poly1305@openssh.com`` first. On a CPU with
AES instructions, AES-GCM costs ssh and sshd about half the CPU per byte (measured here:
``scp -c aes128-gcm@openssh.com`` of 1 GiB took 1.30 s of client CPU against 2.25 s with the
default), and on a two-core node both ends' encryption is most of a transfer's time. AES-GCM
is in OpenSSH's own default list and is not open to the Terrapin prefix truncation
(CVE-2023-48795), which concerns chacha20-poly1305 and the CBC-EtM modes.

So mpish gives ssh ``-o Ciphers=LIST``: the default list of this ssh (``ssh -G -F /dev/null``,
read once per process), with ``aes256-gcm@openssh.com`` and ``aes128-gcm@openssh.com`` moved
to its head. Nothing is added to the list and nothing removed: a server that refuses AES-GCM
negotiates what it did before. It is left out, and ssh keeps its own choice, when anything
says the user or the administrator chose: a ``Ciphers`` line in a configuration file ssh
reads (``-F FILE`` if given, else ``~/.ssh/config`` and ``/etc/ssh/ssh_config``, their
``Include`` files followed; a file that exists but cannot be read counts as a choice), a
``-c``, ``Ciphers`` or ``-F`` we cannot follow among the user's ssh options, a CPU without
AES instructions (chacha20 is the faster one there), an ssh program not named ``ssh``, or a
``ssh -G`` that fails. The check costs one ``ssh -G`` (a few milliseconds, no connection).
"""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import threading
from collections.abc import Sequence
from typing import Literal

# (No pathlib, glob or logging at import: the console imports this before its ssh processes
# start, and tests/ssh/test_ssh_client_startup.py holds it to that.)

PREFERRED = ("aes256-gcm@openssh.com", "aes128-gcm@openssh.com")
SYSTEM_CONFIG = "/etc/ssh/ssh_config"
_INCLUDE_DEPTH = 16  # as ssh's own limit on nested Include
_KEYWORD = re.compile(r"\s*([A-Za-z]+)(?:\s*=\s*|\s+|$)(.*)")  # "Keyword value", "Keyword=value"
_LOCK = threading.Lock()  # one check per (ssh, options) per process; callers meanwhile wait
_KNOWN: dict[tuple[str, tuple[str, ...]], tuple[str, ...]] = {}


def cipher_options(ssh: str, options: Sequence[str]) -> list[str]:
    """``["-o", "Ciphers=..."]`` with AES-GCM first, or ``[]`` (the module doc says when)."""
    key = (ssh, tuple(options))
    with _LOCK:
        if key not in _KNOWN:
            _KNOWN[key] = _cipher_options(*key)
        return list(_KNOWN[key])


def prefetch(ssh: str, options: Sequence[str]) -> None:
    """Start the check in a thread, so that its ``ssh -G`` runs while the caller goes on."""
    threading.Thread(target=cipher_options, args=(ssh, tuple(options)), name="mpish-ssh-ciphers",
                     daemon=True).start()


def _cipher_options(ssh: str, options: tuple[str, ...]) -> tuple[str, ...]:
    if os.path.basename(ssh) != "ssh" or not cpu_has_aes(_read("/proc/cpuinfo")):
        return ()
    config = config_file(options)
    if config is False:
        return ()
    user = _user_config()
    user_dir = os.path.dirname(user)
    files = [(config, user_dir)] if config is not None else [
        (user, user_dir), (SYSTEM_CONFIG, os.path.dirname(SYSTEM_CONFIG))]
    if any(configures_ciphers(path, base) for path, base in files):
        return ()
    order = preferred_order(default_ciphers(ssh))
    return ("-o", "Ciphers=" + ",".join(order)) if order else ()


def cpu_has_aes(cpuinfo: str | None) -> bool:
    """True if /proc/cpuinfo's text lists AES instructions (x86 ``flags``, ARM ``Features``)."""
    for line in (cpuinfo or "").splitlines():
        key, _, value = line.partition(":")
        if key.strip() in ("flags", "Features"):
            return "aes" in value.split()
    return False


def config_file(options: Sequence[str]) -> str | Literal[False] | None:
    """The ``-F`` file among ssh's options, None if none, or False if they choose a cipher
    (``-c``, alone or among other flags, or ``Ciphers``) or are not clear (two ``-F``)."""
    found: str | None = None
    for index, token in enumerate(options):
        if "ciphers" in token.lower():
            return False
        if token.startswith("-F"):
            path = token[2:] or (options[index + 1] if index + 1 < len(options) else "")
            if not path or found is not None:
                return False
            found = os.path.expanduser(path)
        elif token.startswith("-") and not token.startswith("-o") and "c" in token:
            return False  # -c, -qc...: a cipher (or a value with a "c" in it: kept as well)
    return found


def configures_ciphers(path: str | os.PathLike[str], base: str | os.PathLike[str], depth: int = 0) -> bool:
    """True if the ssh configuration file ``path`` (or one it includes, relative paths from
    ``base``) has a ``Ciphers`` line, or cannot be read: either way the choice is kept."""
    if depth > _INCLUDE_DEPTH:
        return True
    try:
        with open(path, encoding="utf-8", errors="replace") as file:
            text = file.read()
    except FileNotFoundError:
        return False
    except OSError:
        return True
    for line in text.splitlines():
        match = _KEYWORD.match(line)
        if match is None:
            continue
        keyword, rest = match.group(1).lower(), match.group(2)
        if keyword == "ciphers":
            return True
        if keyword == "include":
            included = _included(rest, base)
            if included is None or any(configures_ciphers(f, base, depth + 1) for f in included):
                return True
    return False


def _included(arguments: str, base: str | os.PathLike[str]) -> list[str] | None:
    """The files an ``Include`` line names (~ expanded, relative to ``base``, globs matched);
    None if its arguments cannot be read."""
    import glob

    try:
        patterns = shlex.split(arguments, comments=True)
    except ValueError:
        return None
    return [found for pattern in patterns
            for found in sorted(glob.glob(os.path.join(base, os.path.expanduser(pattern))))]


def default_ciphers(ssh: str) -> list[str]:
    """This ssh's compiled-in cipher preference (``ssh -G -F /dev/null``), or [] if unknown."""
    try:
        proc = subprocess.run(
            [ssh, "-G", "-F", os.devnull, "--", "localhost"],
            capture_output=True, text=True, timeout=5, check=False, stdin=subprocess.DEVNULL,
        )
    except (OSError, subprocess.SubprocessError):
        return []  # ssh's own order is kept (a missing ssh fails, and is reported, when it runs)
    for line in proc.stdout.splitlines() if proc.returncode == 0 else ():
        key, _, value = line.partition(" ")
        if key == "ciphers":
            return [name for name in value.strip().split(",") if name]
    return []


def preferred_order(default: Sequence[str]) -> list[str]:
    """``default`` with the AES-GCM ciphers it holds moved to its head; [] if that changes
    nothing (none of them in it, or already first)."""
    head = [name for name in PREFERRED if name in default]
    order = head + [name for name in default if name not in head]
    return order if head and order != list(default) else []


def _user_config() -> str:
    """~/.ssh/config as ssh finds it: in the home of the passwd entry, not $HOME."""
    import pwd

    try:
        home = pwd.getpwuid(os.getuid()).pw_dir
    except KeyError:
        home = os.path.expanduser("~")
    return os.path.join(home, ".ssh", "config")


def _read(path: str) -> str | None:
    try:
        with open(path, encoding="utf-8", errors="replace") as file:
            return file.read()
    except OSError:
        return None
