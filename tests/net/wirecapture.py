"""A real tcpdump capture and what crossed the wire, reassembled per TCP flow.

A marker split across two segments must still be found, so the search runs on each
TCP flow's bytes put back in sequence order (and on every UDP datagram), not on the
raw pcap file. Only Ethernet frames (lo and veth on Linux) of IPv4/IPv6 are read.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import struct
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

_ETHERNET = 1
_TCP, _UDP = 6, 17


def capture_problem() -> str:
    """Why tcpdump cannot capture here ("" if it can)."""
    if shutil.which("tcpdump") is None:
        return "tcpdump is not installed (scripts/setup --test installs it)"
    if os.geteuid() != 0:
        return "capturing packets needs root"
    return ""


class Capture:
    """The bytes of one finished capture, reassembled."""

    def __init__(self, pcap: Path) -> None:
        self.pcap = pcap
        self.streams = _reassemble(pcap.read_bytes())

    @property
    def payload_bytes(self) -> int:
        return sum(len(s) for s in self.streams)

    def contains(self, marker: bytes) -> bool:
        return any(marker in stream for stream in self.streams)

    def found(self, markers: dict[str, bytes]) -> list[str]:
        """The names of the markers seen in clear."""
        return [name for name, marker in markers.items() if self.contains(marker)]


@contextmanager
def tcpdump(interface: str, pcap: Path, netns: str | None = None) -> Iterator[list[Capture]]:
    """Capture everything on ``interface`` (inside ``netns``) for the ``with`` body.

    Yields a list that holds the :class:`Capture` once the body has ended.
    """
    # --immediate-mode and -U: every packet is in the file when the body ends; -Z root: the
    # file is written as root (tcpdump would drop to its own user)
    # -B: a 64 MiB kernel buffer, so a busy machine drops nothing (a drop fails the capture)
    command = ["tcpdump", "-i", interface, "-n", "-p", "-s", "0", "--immediate-mode", "-U", "-Z", "root"]
    command += ["-B", "65536"]
    command += ["-w", str(pcap)]
    if netns is not None:
        command = ["ip", "netns", "exec", netns, *command]
    log = pcap.with_suffix(".log")
    with open(log, "wb") as err:
        proc = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=err, start_new_session=True)
    try:
        deadline = time.monotonic() + 10
        while b"listening on" not in log.read_bytes():
            if proc.poll() is not None or time.monotonic() > deadline:
                raise AssertionError(f"tcpdump did not start: {log.read_text(errors='replace')}")
            time.sleep(0.05)
        result: list[Capture] = []
        yield result
    finally:
        _settle(pcap)
        if proc.poll() is None:
            proc.send_signal(signal.SIGINT)  # tcpdump flushes and closes the file
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
    report = log.read_text(errors="replace")
    dropped = re.search(r"(\d+) packets? dropped by kernel", report)
    if dropped is None or int(dropped.group(1)):
        raise AssertionError(f"the capture is incomplete, so it proves nothing:\n{report}")
    result.append(Capture(pcap))


def _settle(pcap: Path) -> None:
    """Wait (at most 3 s) until the file stops growing: SIGINT drops what tcpdump has not written."""
    size, deadline = -1, time.monotonic() + 3
    while time.monotonic() < deadline:
        now = pcap.stat().st_size if pcap.exists() else 0
        if now == size:
            return
        size = now
        time.sleep(0.2)


def _reassemble(data: bytes) -> list[bytes]:
    if len(data) < 24:
        return []
    magic = data[:4]
    if magic in (b"\xd4\xc3\xb2\xa1", b"\x4d\x3c\xb2\xa1"):
        endian = "<"
    elif magic in (b"\xa1\xb2\xc3\xd4", b"\xa1\xb2\x3c\x4d"):
        endian = ">"
    else:
        raise ValueError("not a pcap file")
    (linktype,) = struct.unpack(endian + "I", data[20:24])
    if linktype != _ETHERNET:
        raise ValueError(f"pcap link type {linktype}: only Ethernet (1) is read")
    flows: dict[tuple[bytes, bytes, int, int], list[tuple[int, bytes]]] = {}
    datagrams: list[bytes] = []
    offset = 24
    while offset + 16 <= len(data):
        _, _, caplen, _ = struct.unpack(endian + "IIII", data[offset : offset + 16])
        frame = data[offset + 16 : offset + 16 + caplen]
        offset += 16 + caplen
        packet = _ip_payload(frame)
        if packet is None:
            continue
        proto, src, dst, segment = packet
        if proto == _UDP and len(segment) >= 8:
            datagrams.append(segment[8:])
        elif proto == _TCP and len(segment) >= 20:
            sport, dport, seq = struct.unpack("!HHI", segment[:8])
            header = (segment[12] >> 4) * 4
            if segment[header:]:
                flows.setdefault((src, dst, sport, dport), []).append((seq, segment[header:]))
    return [_in_order(parts) for parts in flows.values()] + datagrams


def _ip_payload(frame: bytes) -> tuple[int, bytes, bytes, bytes] | None:
    if len(frame) < 14:
        return None
    (ethertype,) = struct.unpack("!H", frame[12:14])
    ip = frame[14:]
    if ethertype == 0x0800 and len(ip) >= 20:
        header = (ip[0] & 0x0F) * 4
        (total,) = struct.unpack("!H", ip[2:4])
        return ip[9], ip[12:16], ip[16:20], ip[header:total]
    if ethertype == 0x86DD and len(ip) >= 40:
        (length,) = struct.unpack("!H", ip[4:6])
        return ip[6], ip[8:24], ip[24:40], ip[40 : 40 + length]  # no extension headers on lo/veth
    return None


def _in_order(parts: list[tuple[int, bytes]]) -> bytes:
    """A flow's bytes by sequence number (relative to the first, modulo 2**32); gaps stay zero."""
    first = parts[0][0]
    placed = [((seq - first) % 2**32, payload) for seq, payload in parts]
    # a segment before the first one seen (reordering) shows as a huge offset: shift all
    lowest = min(rel if rel < 2**31 else rel - 2**32 for rel, _ in placed)
    placed = [((rel if rel < 2**31 else rel - 2**32) - lowest, payload) for rel, payload in placed]
    stream = bytearray(max(rel + len(payload) for rel, payload in placed))
    for rel, payload in placed:
        stream[rel : rel + len(payload)] = payload
    return bytes(stream)
