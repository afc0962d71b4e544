"""The tests' one TCP proxy on 127.0.0.1: what a bad network does, for real.

It forwards connections to a server (an S3 server, in these tests).  Without rules it passes the
bytes through untouched: a server that appears, and disappears, at a port of the test's choosing
(stop it and connections are refused; start another on the same port and the server is back).
With rules it reads the HTTP/1.1 requests and, at those its rules pick, flips one byte of the
request body on its way to the server, flips one byte of the response body on its way back, or cuts
the network: every open connection is closed and new ones are refused from then on.  Every failure
of its threads is recorded in ``errors``; tests assert it stays empty.
"""

from __future__ import annotations

import contextlib
import socket
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Self
from urllib.parse import urlparse


@dataclass(frozen=True)
class Request:
    method: str
    path: str


Rule = Callable[[Request], bool]


def never(request: Request) -> bool:
    return False


class _Closed(Exception):
    """The other side closed the connection (or the proxy cut it)."""


class HttpProxy:
    """Forwards 127.0.0.1:``port`` (a free one by default) to ``upstream``: a port on 127.0.0.1 or a
    URL's host and port; see the module docstring."""

    def __init__(
        self,
        upstream: int | str,
        *,
        port: int = 0,
        corrupt_request: Rule = never,
        corrupt_response: Rule = never,
        cut: Rule = never,
    ) -> None:
        if isinstance(upstream, str):
            url = urlparse(upstream)
            self.upstream = (url.hostname or "127.0.0.1", url.port or 80)
        else:
            self.upstream = ("127.0.0.1", upstream)
        #: no rule: bytes pass through unread
        self.raw = corrupt_request is never and corrupt_response is never and cut is never
        self.corrupt_request, self.corrupt_response, self.cut_at = corrupt_request, corrupt_response, cut
        self.requests: list[Request] = []  # every request seen, in order
        self.corrupted: list[Request] = []  # the requests whose body (or response body) was altered
        self.errors: list[str] = []
        self.is_cut = threading.Event()
        self._lock = threading.Lock()
        self._sockets: list[socket.socket] = []
        self._threads: list[threading.Thread] = []
        self._listener = socket.create_server(("127.0.0.1", port))
        self._listener.settimeout(0.05)
        self.port: int = self._listener.getsockname()[1]
        self._stopping = threading.Event()
        self._spawn(self._accept)

    @property
    def endpoint_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def stop(self) -> None:
        self._stopping.set()
        self._close_all()
        for thread in list(self._threads):
            thread.join(timeout=10)
            if thread.is_alive():
                self.errors.append(f"proxy thread {thread.name} did not stop")

    def cut(self) -> None:
        """Cut the network: close every connection now and refuse new ones."""
        self.is_cut.set()
        self._close_all()

    # ---- internals ------------------------------------------------------------------------------

    def _spawn(self, target: Callable[..., None], *args: object) -> None:
        def guarded() -> None:
            try:
                target(*args)
            except _Closed:
                pass
            except BaseException as exc:  # noqa: BLE001 - recorded, and the test asserts there are none
                if not (self._stopping.is_set() or self.is_cut.is_set()):
                    self.errors.append(f"{target.__name__}: {type(exc).__name__}: {exc}")

        thread = threading.Thread(target=guarded, name=f"proxy-{target.__name__}", daemon=True)
        with self._lock:
            self._threads.append(thread)
        thread.start()

    def _close_all(self) -> None:
        with self._lock:
            sockets, self._sockets = self._sockets, []
        with contextlib.suppress(OSError):
            self._listener.close()
        for sock in sockets:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
            with contextlib.suppress(OSError):
                sock.close()

    def _track(self, sock: socket.socket) -> None:
        with self._lock:
            self._sockets.append(sock)
        if self._stopping.is_set() or self.is_cut.is_set():  # closed by a cut that raced with us
            with contextlib.suppress(OSError):
                sock.close()
            raise _Closed

    def _accept(self) -> None:
        while not (self._stopping.is_set() or self.is_cut.is_set()):
            try:
                client, _ = self._listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return  # the listener was closed: stop or cut
            client.settimeout(None)
            self._track(client)
            upstream = socket.create_connection(self.upstream)
            self._track(upstream)
            if self.raw:
                self._spawn(self._pipe, client, upstream)
                self._spawn(self._pipe, upstream, client)
                continue
            pending: list[Request] = []  # requests whose response is to be corrupted
            self._spawn(self._requests, client, upstream, pending)
            self._spawn(self._responses, upstream, client, pending)

    def _pipe(self, source: socket.socket, sink: socket.socket) -> None:
        reader = _Reader(source)
        try:
            while True:
                _send(sink, reader.some())
        finally:  # one side closed: the other learns it
            with contextlib.suppress(OSError):
                sink.shutdown(socket.SHUT_WR)

    def _requests(self, client: socket.socket, upstream: socket.socket, pending: list[Request]) -> None:
        reader = _Reader(client)
        while True:
            head = reader.until(b"\r\n\r\n")
            lines = head.decode("latin-1").split("\r\n")
            method, path, _ = lines[0].split(" ", 2)
            headers = {k.strip().lower(): v.strip() for k, _, v in (line.partition(":") for line in lines[1:] if line)}
            if "chunked" in headers.get("transfer-encoding", ""):
                raise AssertionError(f"{method} {path}: chunked request bodies are not supported by this proxy")
            request = Request(method, path)
            self.requests.append(request)
            if self.cut_at(request):
                self.cut()
                raise _Closed
            if self.corrupt_response(request):
                self.corrupted.append(request)
                pending.append(request)
            _send(upstream, head)
            length = int(headers.get("content-length", "0"))
            body = bytearray(reader.exactly(length))
            if length and self.corrupt_request(request):
                body[length // 2] ^= 0x01  # one bit of one byte, in the middle of the body
                self.corrupted.append(request)
            _send(upstream, bytes(body))

    def _responses(self, upstream: socket.socket, client: socket.socket, pending: list[Request]) -> None:
        reader = _Reader(upstream)
        while True:
            reader.wait()  # then look at pending: the request was listed there before it was sent
            if pending:  # flip the first body byte of the response to this request
                head = reader.until(b"\r\n\r\n")
                if head.split(b" ", 2)[1] == b"100":  # an interim answer: the real one follows
                    _send(client, head)
                    continue
                pending.pop(0)
                body = bytearray(reader.exactly(1))
                body[0] ^= 0x01
                _send(client, head + bytes(body))
                continue
            _send(client, reader.some())


class _Reader:
    def __init__(self, sock: socket.socket) -> None:
        self.sock, self.buffer = sock, b""

    def _fill(self) -> None:
        try:
            chunk = self.sock.recv(65536)
        except OSError:
            raise _Closed from None
        if not chunk:
            raise _Closed
        self.buffer += chunk

    def wait(self) -> None:
        if not self.buffer:
            self._fill()

    def some(self) -> bytes:
        if not self.buffer:
            self._fill()
        data, self.buffer = self.buffer, b""
        return data

    def until(self, marker: bytes) -> bytes:
        while marker not in self.buffer:
            self._fill()
        end = self.buffer.index(marker) + len(marker)
        data, self.buffer = self.buffer[:end], self.buffer[end:]
        return data

    def exactly(self, n: int) -> bytes:
        while len(self.buffer) < n:
            self._fill()
        data, self.buffer = self.buffer[:n], self.buffer[n:]
        return data


def _send(sock: socket.socket, data: bytes) -> None:
    try:
        sock.sendall(data)
    except OSError:
        raise _Closed from None
