"""The console's record classes without dataclasses: they behave as the dataclasses they were.

``mpish ssh -c`` loads no :mod:`dataclasses` (~7 ms with inspect, and code generated and
compiled for every class): immutable ones are :class:`~mpish.wire.message.Frozen`, mutable
ones set their fields in a written ``__init__`` and share ``repr``/``==``/``match`` through
:class:`~mpish.wire.message.Fields`.
"""

from __future__ import annotations

import copy
import pickle
import sys

import pytest

from mpish.shell.names import Result
from mpish.shell.nodes import Selection
from mpish.shell.options import OutputMode
from mpish.shell.session import Peer, Session
from mpish.shell.ssh_cli import SshShellOptions
from mpish.shell.ssh_session import SshSession
from mpish.transport.pipe import MultiLink
from mpish.wire.message import replace


def test_the_frozen_options_compare_hash_repr_and_refuse_assignment_as_frozen_dataclasses() -> None:
    mode = OutputMode(kind="json", quiet=True)
    assert mode == OutputMode("json", False, True, True)
    assert hash(mode) == hash(OutputMode("json", quiet=True))
    assert repr(Selection(("h[1-2]",))) == ("Selection(nodes=('h[1-2]',), exclude=(), groups=(), "
                                           "exclude_groups=(), all=False, hostfiles=(), pick=0)")
    assert not Selection() and Selection(all=True)
    options = SshShellOptions(Selection(("h1",)), command="true")
    assert options.mode == OutputMode() and options.python == ("python3",)
    assert pickle.loads(pickle.dumps(options)) == options and copy.copy(options) == options
    with pytest.raises(AttributeError, match="frozen"):
        mode.kind = "live"  # type: ignore[misc]
    assert replace(mode, kind="live") == OutputMode(kind="live", quiet=True) and mode.kind == "json"
    result = Result(1, "h1", 0, error="x")
    assert (result.rank, result.signal, result.error) == (1, 0, "x")
    match result:
        case Result(rank, host, status):
            assert (rank, host, status) == (1, "h1", 0)


def test_the_mutable_session_records_set_defaults_compare_and_are_unhashable_as_dataclasses() -> None:
    peer = Peer(2, None, "h2")  # type: ignore[arg-type]
    assert (peer.cwd, peer.alive, peer.ready, peer.pid, peer.lost) == ("", True, False, 0, "")
    assert repr(peer) == ("Peer(rank=2, channel=None, host='h2', cwd='', alive=True, ready=False, pid=0, "
                          "lost='')")
    assert peer == Peer(2, None, "h2") and peer != Peer(3, None, "h2")  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="unhashable"):
        hash(peer)
    peer.ready = True
    assert peer.ready
    one, two = SshSession(MultiLink({}), {}), SshSession(MultiLink({}), {})
    assert one.failed == {} and one.failed is not two.failed and one.refused is not two.refused
    assert one.err is sys.stderr and one.report_losses and one.sent_first == [] and one.early == []
    assert not one.awaits_close and Session.awaits_close
    session = SshSession(MultiLink({}), {}, failed={"h": "why"}, report_losses=False)
    assert (session.failed, session.report_losses) == ({"h": "why"}, False)
