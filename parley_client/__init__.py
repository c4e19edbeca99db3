"""A Python client of Parley's own signaling protocol (``docs/protocol.md``).

The Python counterpart of ``web/parley-client.js``: one websocket to ``{url}/ws``, typed
messages from :mod:`signaling.messages`, requests matched to their replies by
``request_id``. ``parley bot``, ``parley load`` and the benchmarks all talk to the server
through :class:`ProtocolClient`; it knows nothing of peer connections or media.
"""

from .client import (
    ClientClosed,
    InvalidHandler,
    MessageHandler,
    ProtocolClient,
    Redirected,
    RequestFailed,
    base_url,
)

__all__ = [
    "ClientClosed",
    "InvalidHandler",
    "MessageHandler",
    "ProtocolClient",
    "Redirected",
    "RequestFailed",
    "base_url",
]
