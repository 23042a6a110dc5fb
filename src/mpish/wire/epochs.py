"""The key epochs of one channel in one direction (Noise §11.3 REKEY), kept only once earned;
the per-channel state of the record layer (:mod:`mpish.wire.record`) built on them.

Every ``2**rekey_shift`` records a channel's key is replaced by ``REKEY(k)``; both sides
compute the key of a counter from the counter alone (:mod:`mpish.wire.record`). Here is
what a receiver keeps of those keys: nothing derived from a forged record (issue 10,
finding 1: forged far-future counters once grew this cache without bound).
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass

from .errors import LocalProtocolError, RemoteProtocolError, ReplayError
from .noise import AEAD, MAX_NONCE, CipherFunctions, HashFunctions
from .replay import ReplayWindow

DEFAULT_REKEY_SHIFT = 30  # REKEY every 2**30 records of a channel: <= 2**50 bytes per key
DEFAULT_MAX_COUNTER = MAX_NONCE - 1  # the last usable counter; MAX_NONCE is reserved for REKEY


class EpochKeys:
    """The key epochs of one channel in one direction: epoch e+1 = REKEY(epoch e) (§11.3).

    Only epochs that an authenticated record reached are kept. A record of a later
    epoch gets that epoch's AEAD from :meth:`derive`, a chain the caller holds while it
    checks the tag and hands to :meth:`commit` only if the tag verified; a forged record
    leaves nothing behind. :meth:`retire_below` drops the epochs the replay window no
    longer covers, so at most ``(REPLAY_WINDOW >> rekey_shift) + 2`` epochs are kept.
    """

    __slots__ = ("_aeads", "_floor", "_functions", "current", "epoch")

    def __init__(self, functions: CipherFunctions, first_key: bytes) -> None:
        self._functions = functions
        self.epoch = 0  # the highest committed epoch
        self.current = functions.make(first_key)  # its AEAD
        # Committed epochs still in use; None: only the current one (a channel that never
        # rekeyed, nearly all of them: no dict, for each tag secure(comm) ever saw)
        self._aeads: dict[int, AEAD] | None = None
        self._floor = 0  # every kept epoch is >= this

    def epochs(self) -> list[int]:
        """The epochs whose keys are kept, in order."""
        return [self.epoch] if self._aeads is None else sorted(self._aeads)

    def kept(self, epoch: int) -> AEAD:
        """The AEAD of an earlier committed epoch; ReplayError once it was retired."""
        if self._aeads is None:
            found = self.current if epoch == self.epoch else None
        else:
            found = self._aeads.get(epoch)
        if found is None:
            raise ReplayError("record belongs to a key epoch that was already retired")
        return found

    def derive(self, epoch: int, *, max_skip: int) -> list[AEAD]:
        """The AEADs of epochs ``self.epoch + 1 .. epoch``, derived but not kept."""
        if epoch - self.epoch > max_skip:
            raise RemoteProtocolError("record counter jumps too far ahead")
        functions, aead = self._functions, self.current
        nonce = functions.nonce(MAX_NONCE)
        chain = []
        for _ in range(epoch - self.epoch):
            # REKEY(k) = ENCRYPT(k, maxnonce, zerolen, zeros)[:32], the same as rekey_bytes
            aead = functions.make(aead.encrypt(nonce, bytes(32), b"")[:32])
            chain.append(aead)
        return chain

    def commit(self, chain: list[AEAD], keep_from: int) -> None:
        """Adopt a chain from :meth:`derive` once a record of its last epoch verified."""
        if self._aeads is None:
            self._aeads = {self.epoch: self.current}
        for aead in chain:
            self.epoch += 1
            if self.epoch >= keep_from:
                self._aeads[self.epoch] = aead
        self.current = chain[-1]
        self.retire_below(keep_from)

    def retire_below(self, epoch: int) -> None:
        """Forget keys of epochs below ``epoch`` (forward secrecy for old records)."""
        if epoch <= self._floor:
            return
        if self._aeads is None:  # the current epoch is never retired: keep_from <= it
            self._floor = epoch
            return
        for old in [e for e in self._aeads if e < epoch]:
            del self._aeads[old]
        self._floor = epoch


class ChannelState:
    """One channel of one direction: its keys, the current epoch's AEAD, counter, window."""

    __slots__ = ("aead", "cap", "counts", "draw", "epoch", "head", "keys", "limit", "shift", "window")

    def __init__(self, keys: EpochKeys, shift: int, max_counter: int, head: bytes) -> None:
        self.keys = keys
        self.head = head  # a plain DATA record's header up to its counter: _Direction._new_channel
        self.shift = shift
        self.cap = max_counter + 1
        self.epoch = 0  # = keys.epoch, cached for the hot paths
        self.aead = keys.current
        # The first counter the hot paths leave to the general ones: the next epoch's
        # first (a rekey) or the first beyond the limit, whichever comes first.
        self.limit = min(1 << shift, self.cap)
        # Sealer: the counters, drawn by one C call (itertools.count's next), so that no two
        # records ever get the same counter, whatever threads seal at once (record.py: threads).
        self.counts = itertools.count()
        self.draw = self.counts.__next__
        self.window = ReplayWindow()  # Opener: counters accepted so far

    def commit(self, chain: list[AEAD], keep_from: int) -> None:
        self.keys.commit(chain, keep_from)
        # In this order (Sealer reads them without a lock: record.py): epoch, AEAD, limit.
        self.epoch, self.aead = self.keys.epoch, self.keys.current
        self.limit = min((self.epoch + 1) << self.shift, self.cap)


def channel_key(hashes: HashFunctions, direction_key: bytes, channel: int) -> bytes:
    """The first key of ``channel``: HKDF(direction key, "mpish channel" || id)."""
    return hashes.hkdf(direction_key, b"mpish channel" + channel.to_bytes(4, "big"), 1)[0][:32]


@dataclass(frozen=True, slots=True)
class Limits:
    """Counter limits shared by both sides (fixed by the protocol version; smaller in tests)."""

    rekey_shift: int = DEFAULT_REKEY_SHIFT
    max_counter: int = DEFAULT_MAX_COUNTER

    def __post_init__(self) -> None:
        if not 1 <= self.rekey_shift <= 63 or not 1 <= self.max_counter <= DEFAULT_MAX_COUNTER:
            raise LocalProtocolError("invalid record limits")


DEFAULT_LIMITS = Limits()
