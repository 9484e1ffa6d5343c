"""cassandra-driver on the store's own asyncio event loop.

The driver's default reactor (libev) runs every socket in a thread of its
own: each answer was decoded there and handed to the event loop with
``call_soon_threadsafe``, and each request handed the other way, so every
request paid for two thread wake-ups and GIL hand-offs (and the GIL switch
interval was shortened to make them quick). :class:`LoopConnection` instead
reads and writes the driver's sockets on the event loop itself: a request is
written to the socket in the call that sends it, and its answer is decoded
and its future settled in the loop's own read callback.

Over TLS (a cluster's ``ssl_context``) the driver wraps the socket and
shakes hands while connecting (blocking, in its thread); afterwards the
non-blocking TLS socket's "want read"/"want write" mean what EAGAIN means
for a plain one, and decrypted bytes it still holds are read before waiting
for the socket again.

The driver still runs its own threads for connecting, heartbeats and
reconnection; they reach a connection only through ``call_soon_threadsafe``.
Nothing blocking runs on the loop: connecting (which waits for the
connection's handshake, done by the loop) runs in a worker thread.
"""

from __future__ import annotations

import asyncio
import errno
import logging
import ssl
import threading
from collections import deque
from collections.abc import Callable
from typing import Any

from cassandra.cluster import ResponseFuture
from cassandra.connection import Connection, ConnectionShutdown

log = logging.getLogger("lookback.store.cql")

_WOULD_BLOCK = (errno.EAGAIN, errno.EWOULDBLOCK, errno.EINPROGRESS)
# A non-blocking TLS socket's way of saying the same (during a read or a write).
_TLS_WOULD_BLOCK = (ssl.SSLWantReadError, ssl.SSLWantWriteError)


def _would_block(exc: OSError) -> bool:
    return isinstance(exc, _TLS_WOULD_BLOCK) or exc.errno in _WOULD_BLOCK


class _Timer:
    """A driver timer (request timeouts) on the loop; cancellable from any thread."""

    def __init__(self, owner: type[LoopConnection], delay: float, fn: Callable[[], Any]):
        self.cancelled = False
        self._owner = owner
        self._fn = fn
        self._handle: asyncio.TimerHandle | None = None
        owner.call(lambda: self._arm(delay))

    def _arm(self, delay: float) -> None:
        if not self.cancelled and self._owner.loop is not None:
            self._handle = self._owner.loop.call_later(delay, self._fire)

    def _fire(self) -> None:
        if not self.cancelled:
            self._fn()

    def cancel(self) -> None:
        self.cancelled = True
        handle = self._handle
        if handle is not None and self._owner.on_loop():
            handle.cancel()


class LoopConnection(Connection):  # type: ignore[misc]
    """A driver connection whose I/O runs on one asyncio event loop: give a
    cluster ``connection_class=LoopConnection.bound_to(loop)``."""

    loop: asyncio.AbstractEventLoop | None = None
    loop_thread: int | None = None
    is_closed: bool = False
    is_defunct: bool = False

    @classmethod
    def bound_to(cls, loop: asyncio.AbstractEventLoop) -> type[LoopConnection]:
        """A connection class for ``loop``, which runs in the calling thread."""
        return type(cls.__name__, (cls,), {"loop": loop, "loop_thread": threading.get_ident()})

    @classmethod
    def on_loop(cls) -> bool:
        return threading.get_ident() == cls.loop_thread

    @classmethod
    def call(cls, fn: Callable[[], Any]) -> None:
        """``fn()`` on the loop: now if this is the loop's thread, else soon."""
        if cls.on_loop():
            fn()
            return
        assert cls.loop is not None, "use LoopConnection.bound_to(loop)"
        try:
            cls.loop.call_soon_threadsafe(fn)
        except RuntimeError:  # the loop is closed: the process is ending
            log.debug("event loop closed; dropping a driver callback")

    @classmethod
    def initialize_reactor(cls) -> None:
        if cls.loop is None:
            raise RuntimeError("use LoopConnection.bound_to(loop) as the connection class")

    @classmethod
    def create_timer(cls, timeout: float, callback: Callable[[], Any]) -> _Timer:
        return _Timer(cls, timeout, callback)

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._out: deque[bytes] = deque()
        self._writing = False
        self._connect_socket()  # blocking: the driver connects from its own threads
        self._socket.setblocking(False)
        self._fd = self._socket.fileno()
        self.call(self._start)

    def _start(self) -> None:
        if self.is_closed:
            return
        assert self.loop is not None
        self.loop.add_reader(self._fd, self._on_readable)
        self._send_options_message()

    # --- writing ---------------------------------------------------------

    def push(self, data: bytes) -> None:
        if self.on_loop():
            self._write(data)
        else:
            self.call(lambda: self._write(data))

    def _write(self, data: bytes) -> None:
        if self.is_closed:
            return
        if self._out:
            self._out.append(data)
            return
        try:
            sent = self._socket.send(data)
        except OSError as exc:
            if not _would_block(exc):
                self.defunct(exc)
                return
            sent = 0
        if sent < len(data):
            self._out.append(data[sent:])
            self._wait_writable()

    def _wait_writable(self) -> None:
        # The driver's own reactors refuse new requests (ConnectionBusy) while
        # the socket's buffer is full; here they wait in the queue instead
        # (the driver bounds the requests in flight on a connection).
        if not self._writing:
            assert self.loop is not None
            self._writing = True
            self.loop.add_writer(self._fd, self._on_writable)

    def _on_writable(self) -> None:
        while self._out:
            data = self._out.popleft()
            try:
                sent = self._socket.send(data)
            except OSError as exc:
                if _would_block(exc):
                    self._out.appendleft(data)
                    return
                self.defunct(exc)
                return
            if sent < len(data):
                self._out.appendleft(data[sent:])
                return
        assert self.loop is not None
        self.loop.remove_writer(self._fd)
        self._writing = False

    # --- reading ---------------------------------------------------------

    def _on_readable(self) -> None:
        closed = False
        try:
            while True:
                buf = self._socket.recv(self.in_buffer_size)
                if not buf:
                    closed = True
                    break
                self._iobuf.write(buf)
                if len(buf) < self.in_buffer_size and not self._tls_pending():
                    break
        except OSError as exc:
            if not _would_block(exc):
                self.defunct(exc)
                return
        if self._iobuf.tell():
            self.process_io_buffer()
        if closed:
            log.debug("connection to %s closed by the server", self.endpoint)
            self.close()

    def _tls_pending(self) -> int:
        """Decrypted bytes a TLS socket holds (the socket itself may have
        nothing more to read); 0 for a plain socket."""
        pending = getattr(self._socket, "pending", None)
        return int(pending()) if pending is not None else 0

    # --- closing ---------------------------------------------------------

    def close(self) -> None:
        with self.lock:
            if self.is_closed:
                return
            self.is_closed = True
        self.call(self._close)

    def _close(self) -> None:
        assert self.loop is not None
        if not self.loop.is_closed():
            self.loop.remove_reader(self._fd)
            self.loop.remove_writer(self._fd)
        self._socket.close()
        self._out.clear()
        if not self.is_defunct:
            self.error_all_requests(ConnectionShutdown(f"Connection to {self.endpoint} was closed"))
            self.connected_event.set()  # nobody waits for a handshake that cannot come


def rows_of(future: ResponseFuture, via: type[LoopConnection]) -> asyncio.Future[list[Any]]:
    """The driver's future as an asyncio future of its rows (first page).

    Answers arrive on the loop (see :class:`LoopConnection`) and settle the
    future at once; a failure raised in one of the driver's threads (a
    connection lost, a retry on another host) is handed over thread-safely.
    """
    assert via.loop is not None
    result: asyncio.Future[list[Any]] = via.loop.create_future()

    def ok(rows: Any) -> None:
        if not result.done():
            result.set_result(rows if rows is not None else [])

    def failed(exc: BaseException) -> None:
        if not result.done():
            result.set_exception(exc)

    future.add_callbacks(
        lambda rows: via.call(lambda: ok(rows)),
        lambda exc: via.call(lambda: failed(exc)),
    )
    return result
