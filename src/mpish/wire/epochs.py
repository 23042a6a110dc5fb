"""The key epochs of one channel in one direction (Noise §11.3 REKEY), kept only once earned.

Every ``2**rekey_shift`` records a channel's key is replaced by ``REKEY(k)``; both sides
compute the key of a counter from the counter alone (:mod:`mpish.wire.record`). Here is
what a receiver keeps of those keys: nothing derived from a forged record (issue 10,
finding 1: forged far-future counters once grew this cache without bound).
"""

from __future__ import annotations

from .errors import RemoteProtocolError, ReplayError
from .noise import AEAD, MAX_NONCE, CipherFunctions


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
        self._aeads: dict[int, AEAD] = {0: self.current}  # committed epochs still in use
        self._floor = 0  # every kept epoch is >= this

    def kept(self, epoch: int) -> AEAD:
        """The AEAD of an earlier committed epoch; ReplayError once it was retired."""
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
        for old in [e for e in self._aeads if e < epoch]:
            del self._aeads[old]
        self._floor = epoch
