"""Running the service: a socket of our own, uvicorn, and a graceful SIGTERM.

On SIGTERM (or Ctrl-C) the server stops accepting connections, answers what is queued at
once (no more waiting for batches to fill), finishes the requests in flight (up to
``shutdown_timeout_s``), then returns: :func:`serve` returns normally and the process exits 0.
"""

from __future__ import annotations

import asyncio
import logging
import signal
import socket
from collections.abc import Callable
from typing import Any

import uvicorn

from vrp.serve.app import create_app
from vrp.serve.config import ServeConfig

log = logging.getLogger("vrp.serve")


def bind(host: str, port: int) -> socket.socket:
    """A listening TCP socket on ``host:port`` (port 0: a free one; read it with ``getsockname``)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    # proto IPPROTO_TCP, not socket.create_server's 0: asyncio sets TCP_NODELAY only on accepted
    # sockets whose proto says TCP, and without it Nagle's algorithm holds a response's body behind
    # its headers until the client's delayed ACK (~40 ms on every request, measured)
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, port))
        sock.listen(2048)
    except OSError:
        sock.close()
        raise
    return sock


def url_of(sock: socket.socket) -> str:
    host, port = sock.getsockname()[:2]
    return f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"


def serve(
    monitor: Any,
    cfg: ServeConfig | None = None,
    on_ready: Callable[[str], None] | None = None,
    log_level: str = "info",
    restore_signals: bool = True,
) -> None:
    """Serve an attached monitor until SIGTERM or SIGINT, then shut down gracefully.

    Args:
        monitor: an attached :class:`vrp.Monitor`.
        cfg: the options (default ``ServeConfig()``: 127.0.0.1:8000).
        on_ready: called with the server's URL once it accepts requests (port 0 resolved).
        log_level: uvicorn's log level (access log at ``info``).
        restore_signals: put back the SIGTERM / SIGINT handlers found on entry once the server
            has stopped. ``vrp serve`` passes False: the process is ending, so they are ignored
            from then on, and a second SIGTERM (a supervisor repeating its signal) cannot end it
            with status -15 while it exits.

    Raises:
        OSError: the address cannot be bound (in use, not an address of this machine).
    """
    cfg = cfg or ServeConfig()
    if not cfg.loopback:
        log.warning("listening on %s: the model is reachable from the network, without authentication", cfg.host)
    app = create_app(monitor, cfg)
    sock = bind(cfg.host, cfg.port)
    config = uvicorn.Config(
        app, log_level=log_level, timeout_graceful_shutdown=cfg.shutdown_timeout_s, lifespan="on", access_log=True
    )
    server = _Server(config, app.state.batcher.drain, lambda: on_ready and on_ready(url_of(sock)))
    # uvicorn re-raises the signal it caught once it has shut down; with these handlers in place
    # that is a no-op, so a graceful shutdown ends the process normally (exit 0)
    previous = {sig: signal.signal(sig, _ignore) for sig in (signal.SIGTERM, signal.SIGINT)}
    try:
        server.run(sockets=[sock])
    finally:
        for sig, handler in previous.items():
            # SIG_IGN, not a Python no-op: the interpreter resets Python handlers to the default
            # (terminate) while it finalizes, and a repeated SIGTERM then ends the process with -15
            signal.signal(sig, handler if restore_signals else signal.SIG_IGN)
        sock.close()


def _ignore(signum: int, frame: Any) -> None:
    """A signal that arrives after uvicorn's shutdown: nothing left to do."""


class _Server(uvicorn.Server):
    """uvicorn's server, told on SIGTERM to drain the batcher, and reporting when it is up."""

    def __init__(self, config: uvicorn.Config, drain: Callable[[], None], ready: Callable[[], Any]):
        super().__init__(config)
        self._drain, self._ready = drain, ready
        self._loop: asyncio.AbstractEventLoop | None = None

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        self._loop = asyncio.get_running_loop()
        await super().startup(sockets=sockets)
        if self.started:
            self._ready()

    def handle_exit(self, sig: int, frame: Any) -> None:
        super().handle_exit(sig, frame)
        if self._loop is not None:  # called from a signal handler: hand the drain to the loop
            self._loop.call_soon_threadsafe(self._drain)
