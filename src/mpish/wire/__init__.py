"""The sans-I/O secure core: Noise handshake, records, channel, framing, codec, errors.

Nothing in this package does I/O or imports mpi4py, socket, subprocess, asyncio or
threading; transports (transport/) move the bytes it produces.
"""

from .channel import Binding, Role, SecureChannel
from .codec import Codec, MaxLen
from .errors import (
    AuthenticationError,
    LocalProtocolError,
    MpishError,
    ProtocolError,
    RemoteError,
    RemoteProtocolError,
    ReplayError,
    TransportBroken,
    TransportClosed,
    TransportError,
    TruncatedError,
)
from .events import CloseReceived, Event, HandshakeComplete, Message
from .framing import FrameDecoder, encode_frame
from .record import Limits, Opener, Sealer
from .state import State

__all__ = [
    "AuthenticationError",
    "Binding",
    "CloseReceived",
    "Codec",
    "Event",
    "FrameDecoder",
    "HandshakeComplete",
    "Limits",
    "LocalProtocolError",
    "MaxLen",
    "Message",
    "MpishError",
    "Opener",
    "ProtocolError",
    "RemoteError",
    "RemoteProtocolError",
    "ReplayError",
    "Role",
    "Sealer",
    "SecureChannel",
    "State",
    "TransportBroken",
    "TransportClosed",
    "TransportError",
    "TruncatedError",
    "encode_frame",
]
