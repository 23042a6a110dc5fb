"""Remote objects and function calls over a framed transport (the ssh pipes).

``messages``: the msgpack protocol; ``serialize``: chunked pickle/msgpack bodies and
remote exceptions; ``client``: the client (:func:`~.client.connect`, :class:`~.client.Remote`);
``group``: many hosts; ``agent``: the remote side; ``bootstrap``: ships the agent.
"""
