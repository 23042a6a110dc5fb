"""Start the calls agent on a host where mpish is not installed: ship its code over stdin.

The mechanism is :mod:`mpish.transport.ship` (the one way mpish starts a remote side;
the ``mpish ssh`` shell server starts the same way). This module names what the agent
needs beyond its own imports: :mod:`mpish.calls.client` (a pickled call may refer to
:func:`~mpish.calls.client.run_object`) and cloudpickle, shipped whole and ahead of any
installed copy, compiled only once a pickled function arrives. The agent's code needs
none of mpish's cryptography.
"""

from __future__ import annotations

from mpish.transport import ship

ENTRY = "mpish.calls.agent"
ALSO = ("mpish.calls.client",)  # mpish modules a call may name beyond the agent's imports
FIRST_PACKAGES = ("cloudpickle",)  # shipped copies win over installed ones
START_MARK = ship.START_MARK  # the stub's first bytes on stdout; what the login printed comes before


def payload(data_only: bool) -> bytes:
    """What the stub reads and runs (cached by :func:`mpish.transport.ship.payload`)."""
    return ship.payload(ENTRY, ("--data-only",) if data_only else (), ALSO, FIRST_PACKAGES)


def stub() -> str:
    """The ``python -c`` program that reads the payload and runs it."""
    return ship.stub()
