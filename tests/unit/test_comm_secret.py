"""The secure communicator's keys (comm/secret.py) and its tree setup's edges (comm/setup.py), sans MPI."""

from __future__ import annotations

import itertools
import math
import os

import pytest

pytest.importorskip("mpi4py")

from mpish.comm.secret import LANES, CommSecret, key_report_size, open_keys, seal_keys
from mpish.comm.setup import PROTOCOL, Edge, children_of, parent_of
from mpish.keys import Identity
from mpish.wire.errors import AuthenticationError, RemoteProtocolError
from mpish.wire.noise import ProtocolName, generate_keypair, public_bytes

NAME = ProtocolName.parse(PROTOCOL)


def secret(rank: int, size: int, seed: bytes = b"s" * 32, ident: bytes = b"i" * 16) -> CommSecret:
    return CommSecret(NAME, seed, ident, rank, size)


def identity() -> Identity:
    key = generate_keypair()
    return Identity(key, public_bytes(key))


def test_keys_are_distinct_per_pair_direction_lane_and_communicator() -> None:
    size = 5
    keys = [secret(0, size).key(lane, s, r) for lane in LANES for s in range(size) for r in range(size)]
    other_comm = secret(0, size, ident=b"j" * 16)  # a fresh communicator id, same secret
    keys += [other_comm.key(lane, s, r) for lane in LANES for s in range(size) for r in range(size)]
    child = secret(0, size).child(b"dup", 0, size)
    keys += [child.key(lane, s, r) for lane in LANES for s in range(size) for r in range(size)]
    assert len(set(keys)) == len(keys) == 3 * len(LANES) * size * size


def test_every_rank_derives_the_same_key_for_a_pair() -> None:
    a, b = secret(1, 4), secret(3, 4)
    assert a.key(b"p2p", 1, 3) == b.key(b"p2p", 1, 3)
    assert a.session(b"coll") == b.session(b"coll") != a.session(b"p2p")


def test_a_record_opens_only_at_its_pair_direction_and_lane() -> None:
    size = 3
    record = bytes(secret(0, size).sealer(b"p2p", 2).seal(b"hello", channel=7))
    assert secret(2, size).opener(b"p2p", 0).open(record)[1] == b"hello"
    wrong = [
        secret(2, size).opener(b"coll", 0),  # another lane
        secret(0, size).opener(b"p2p", 2),  # the reverse direction
        secret(1, size).opener(b"p2p", 0),  # another receiver
        secret(2, size, ident=b"j" * 16).opener(b"p2p", 0),  # another communicator
        secret(2, size, seed=os.urandom(32)).opener(b"p2p", 0),  # another job's secret
    ]
    for opener in wrong:
        with pytest.raises((AuthenticationError, RemoteProtocolError)):
            opener.open(record)


def test_child_secrets_follow_the_context() -> None:
    parent = secret(0, 4)
    assert parent.child(b"ctx", 0, 2) == parent.child(b"ctx", 0, 2)
    first, second = parent.child(b"ctx1", 0, 2), parent.child(b"ctx2", 0, 2)
    assert first.secret != second.secret and first.ident != second.ident
    assert first.secret != parent.secret


def test_a_pair_outside_the_communicator_has_no_key() -> None:
    with pytest.raises(Exception, match="no pair"):
        secret(0, 2).key(b"p2p", 0, 2)
    with pytest.raises(Exception, match="no pair"):
        secret(0, 2).key(b"p2p", -1, 0)


@pytest.mark.parametrize("size", [1, 2, 3, 8, 32, 1000])
def test_tree_reaches_every_rank_with_bounded_degree(size: int) -> None:
    depth = 0
    for rank in range(size):
        children = children_of(rank, size)
        assert len(children) <= 2
        assert all(parent_of(child) == rank for child in children)
        steps, r = 0, rank
        while (up := parent_of(r)) is not None:
            r, steps = up, steps + 1
        assert r == 0
        depth = max(depth, steps)
    assert depth <= math.log2(size)


def edge_pair(job: bytes = b"j" * 16, child: int = 1, parent: int = 0, size: int = 3) -> tuple[Edge, Edge]:
    return Edge(NAME, job, child, parent, size), Edge(NAME, job, child, parent, size)


def test_an_edge_hands_the_secret_to_the_child() -> None:
    alice, bob = identity(), identity()
    job_secret = os.urandom(32)
    down, up = edge_pair()
    hello = up.hello(bob, alice.public)
    assert up.finish(down.answer(alice, bob.public, hello, job_secret)) == job_secret
    assert job_secret not in hello


def test_a_setup_message_from_another_job_is_rejected() -> None:
    alice, bob = identity(), identity()
    _, old_child = edge_pair(job=b"a" * 16)
    replayed = old_child.hello(bob, alice.public)
    parent, _ = edge_pair(job=b"b" * 16)
    with pytest.raises(AuthenticationError):
        parent.answer(alice, bob.public, replayed, os.urandom(32))


def test_a_setup_message_moved_to_another_edge_is_rejected() -> None:
    alice, bob = identity(), identity()
    _, child1 = edge_pair(child=1)
    hello = child1.hello(bob, alice.public)
    parent_of_2, _ = edge_pair(child=2)
    with pytest.raises(AuthenticationError):
        parent_of_2.answer(alice, bob.public, hello, os.urandom(32))


def test_a_hello_relayed_from_another_communicator_of_the_same_size_is_rejected() -> None:
    """Same job id, pair and size, other processes (world ranks): a keyless relay's splice."""
    alice, bob = identity(), identity()
    job = b"j" * 16
    relayed = Edge(NAME, job, 1, 0, 2, (2, 1, 1)).hello(bob, alice.public)  # Y, child of R in {R, Y}
    with pytest.raises(AuthenticationError):  # V, parent of R in {V, R}
        Edge(NAME, job, 1, 0, 2, (1, 0, 0)).answer(alice, bob.public, relayed, os.urandom(32))


def test_a_replayed_answer_is_rejected() -> None:
    alice, bob = identity(), identity()
    parent, child = edge_pair()
    old_answer = parent.answer(alice, bob.public, child.hello(bob, alice.public), os.urandom(32))
    _, fresh = edge_pair()
    fresh.hello(bob, alice.public)  # a new handshake of the same edge: a new ephemeral key
    with pytest.raises(AuthenticationError):
        fresh.finish(old_answer)


def test_a_key_the_child_did_not_expect_cannot_answer() -> None:
    alice, bob, mallory = identity(), identity(), identity()
    parent, child = edge_pair()
    hello = child.hello(bob, alice.public)
    with pytest.raises(AuthenticationError):  # mallory poses as the parent
        parent.answer(mallory, bob.public, hello, os.urandom(32))
    for a, b in itertools.permutations([alice, mallory]):
        p, c = edge_pair()
        with pytest.raises(AuthenticationError):
            c.finish(p.answer(b, bob.public, c.hello(bob, a.public), os.urandom(32)))


def test_a_key_report_opens_only_with_the_secret_for_its_ordered_pair() -> None:
    secret, job, keys = os.urandom(32), b"j" * 16, {b"k" * 32: 3, b"l" * 32: 0}
    report = seal_keys(NAME, secret, job, 1, 0, keys)
    assert len(report) == key_report_size(2) and open_keys(NAME, secret, job, 1, 0, report, 4) == keys
    for other in (
        (os.urandom(32), job, 1, 0),
        (secret, b"i" * 16, 1, 0),
        (secret, job, 0, 1),
        (secret, job, 2, 0),
    ):
        with pytest.raises(AuthenticationError):  # another secret, job, direction or pair
            open_keys(NAME, other[0], other[1], other[2], other[3], report, 4)
    stripped = bytearray(report)
    stripped[4] = 1  # claims one key: the MAC covers the count
    with pytest.raises(AuthenticationError):
        open_keys(NAME, secret, job, 1, 0, bytes(stripped[: key_report_size(1) - 32]) + report[-32:], 4)
    with pytest.raises(AuthenticationError):  # a rank without the secret reports nothing
        open_keys(NAME, secret, job, 1, 0, seal_keys(NAME, None, job, 1, 0, keys), 4)
    with pytest.raises(AuthenticationError):  # more keys than ranks
        open_keys(NAME, secret, job, 1, 0, report, 1)
