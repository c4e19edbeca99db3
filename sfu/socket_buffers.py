"""Socket buffers past the kernel's defaults (pure socket calls, no asyncio)."""

from __future__ import annotations

import socket

#: Linux's SO_RCVBUFFORCE / SO_SNDBUFFORCE (not in the socket module): past
#: net.core.rmem_max / wmem_max when allowed (CAP_NET_ADMIN)
SO_RCVBUFFORCE = 33
SO_SNDBUFFORCE = 32


def set_buffers(sock: socket.socket, size: int, *, send: bool = True) -> int:
    """Give ``sock`` a receive (and, with ``send``, a send) buffer of ``size`` bytes,
    forced past the system's maximum where allowed, else up to it; returns the receive
    buffer as the kernel then reports it (Linux doubles what it is asked for)."""
    options = [(SO_RCVBUFFORCE, socket.SO_RCVBUF)]
    if send:
        options.append((SO_SNDBUFFORCE, socket.SO_SNDBUF))
    for force, plain in options:
        try:
            sock.setsockopt(socket.SOL_SOCKET, force, size)
        except OSError:
            sock.setsockopt(socket.SOL_SOCKET, plain, size)
    return sock.getsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF)
