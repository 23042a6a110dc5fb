"""The sans-I/O secure core: Noise handshake, records, channel, framing, codec, errors.

Nothing in this package does I/O or imports mpi4py, socket, subprocess, asyncio or
threading; transports (transport/) move the bytes it produces. Import from the
modules themselves (``mpish.wire.channel``, ``mpish.wire.errors``, ...): this package
re-exports nothing.
"""
