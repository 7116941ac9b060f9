"""How the dashboard's server is set up for HTTP clients that keep connections open.

Streamlit binds its listening socket itself (`socket.socket(family, SOCK_STREAM)`, protocol
number 0) and hands it to uvicorn. asyncio disables Nagle's algorithm (TCP_NODELAY) only on
sockets whose protocol is IPPROTO_TCP, so the connections accepted from that socket keep Nagle
on. uvicorn writes a response's headers and body in two sends; on a kept-alive connection the
second waits for the client's delayed ACK of the first: every API answer on a reused connection
took ~44 ms on this machine (Streamlit's own `/_stcore/health` too), against ~1 ms for the same
Starlette app on a socket uvicorn binds itself. Every HTTP client library keeps connections
alive, so this was the floor of every API request and a queue under 50 concurrent clients.

Linux copies TCP_NODELAY from a listening socket to the sockets it accepts, so setting it on the
process's listening sockets once, when the server starts (the App's lifespan), fixes every
later connection. Only public socket calls on a duplicate of each descriptor; where /proc is
missing (not Linux) nothing is changed.
"""

from __future__ import annotations

import contextlib
import os
import socket
from collections.abc import AsyncIterator
from typing import Any

_PROC_FDS = "/proc/self/fd"


def disable_nagle_on_listeners() -> int:
    """Set TCP_NODELAY on every listening TCP socket of this process; returns how many."""
    changed = 0
    try:
        entries = list(os.scandir(_PROC_FDS))
    except OSError:
        return 0
    for entry in entries:
        try:
            if not os.readlink(entry.path).startswith("socket:"):
                continue
            duplicate = socket.socket(fileno=os.dup(int(entry.name)))
        except (OSError, ValueError):
            continue  # closed meanwhile, or not a socket we can look at
        with duplicate:  # closes the duplicate descriptor only
            if duplicate.family not in (socket.AF_INET, socket.AF_INET6):
                continue
            if duplicate.type != socket.SOCK_STREAM:
                continue
            if not duplicate.getsockopt(socket.SOL_SOCKET, socket.SO_ACCEPTCONN):
                continue
            duplicate.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            changed += 1
    return changed


@contextlib.asynccontextmanager
async def lifespan(_app: Any) -> AsyncIterator[None]:
    """The App's lifespan (`st.App(..., lifespan=...)`): runs once the socket is listening."""
    disable_nagle_on_listeners()
    yield None
