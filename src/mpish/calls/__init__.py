"""Remote objects and function calls over a framed transport (the ssh pipes).

``messages``: the msgpack protocol; ``serialize``: chunked pickle/msgpack bodies and
remote exceptions; ``remote``: the client :class:`~.remote.Remote`; ``group``: many hosts.
"""
