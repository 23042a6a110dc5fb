"""The end of an ``mpish ssh`` session: the console sends each host its close record and
hangs up at once; it does not wait a round trip for the hosts' own close records (the ssh
processes' exits, which finish() waits for, say that the servers ended)."""

from __future__ import annotations

import io
import os

from mpish.shell.console import Console
from mpish.shell.session import Peer
from mpish.shell.ssh_session import SshSession
from mpish.transport.pipe import MultiLink, PipeLink
from mpish.wire.framing import FrameDecoder


def test_the_console_closes_an_ssh_session_without_waiting_for_the_hosts_close_records() -> None:
    to_host_r, to_host_w = os.pipe()
    from_host_r, from_host_w = os.pipe()  # the "host" never answers on it
    link = PipeLink(from_host_r, to_host_w, rank=0, size=2, peer=1)
    session = SshSession(MultiLink({1: link}), {1: Peer(1, link.plain_channel(), "host1", ready=True)})
    err = io.StringIO()
    console = Console(session, err=err)
    try:
        console.close()  # waited CLOSE_TIMEOUT (10 s) for the close record, then complained
        assert err.getvalue() == ""
        os.close(to_host_w)  # (finish() had no ssh process to hang up in this test)
        sent = b""
        while chunk := os.read(to_host_r, 65536):
            sent += chunk
        frames = FrameDecoder(max_frame=link.max_frame)
        frames.feed(sent)
        assert frames.next_frame() is not None  # the close record was written before the end
    finally:
        for fd in (to_host_r, from_host_r, from_host_w):
            os.close(fd)
