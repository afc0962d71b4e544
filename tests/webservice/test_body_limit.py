"""The body limit against the real server, as common clients meet it: a body over the limit gets its 413
(in the one error shape), whether the client reads while it sends or only once it has sent everything,
whether the size comes from Content-Length or from the body itself (chunked, in several chunks)."""

from __future__ import annotations

import json
import socket
import urllib.error
import urllib.request
from collections.abc import Iterator
from urllib.parse import urlsplit

import httpx
import pytest
import requests

from oncology.settings import ServeSettings

from .conftest import EXAMPLE, Server, read_answer

LIMIT = ServeSettings().max_body_bytes  # /predict's (the live server runs with the defaults)
BATCH_LIMIT = ServeSettings().max_batch_body_bytes
JSON = {"content-type": "application/json"}
MB = 1_000_000
#: A hang guard, not a speed bound: the server's own read deadline (10 s by default) ends a stuck request first.
TIMEOUT = 60


def _over(size: int) -> bytes:
    """A JSON body of ``size`` bytes: a valid tumor, padded with whitespace."""
    tumor = json.dumps(EXAMPLE).encode()
    return tumor + b" " * (size - len(tumor))


def _urllib(url: str, body: bytes) -> tuple[int, bytes]:
    """urllib sends ``Connection: close`` and the whole body before it reads a byte of the answer."""
    request = urllib.request.Request(url, data=body, headers=JSON, method="POST")
    try:
        with urllib.request.urlopen(request, timeout=TIMEOUT) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as error:
        return error.code, error.read()


def _requests(url: str, body: bytes) -> tuple[int, bytes]:
    response = requests.post(url, data=body, headers=JSON, timeout=TIMEOUT)
    return response.status_code, response.content


def _httpx(url: str, body: bytes) -> tuple[int, bytes]:
    response = httpx.post(url, content=body, headers=JSON, timeout=TIMEOUT)
    return response.status_code, response.content


def _assert_413(status: int, body: bytes, limit: int) -> dict[str, object]:
    assert status == 413, body[:300]
    error = json.loads(body)
    assert set(error) == {"error", "status", "request_id", "details"} and error["status"] == 413
    assert f"at most {limit}" in error["error"] or f"exceeds {limit}" in error["error"], error
    return error


@pytest.mark.parametrize("size", [3 * MB, 30 * MB])
@pytest.mark.parametrize("client", [_urllib, _requests, _httpx], ids=["urllib", "requests", "httpx"])
def test_common_clients_get_the_413_of_a_body_over_the_limit(live: Server, client, size: int) -> None:  # type: ignore[no-untyped-def]
    """Not a connection reset or a broken pipe: the answer is sent, then the rest of the body read and discarded."""
    status, body = client(f"{live.url}/predict", _over(size))
    error = _assert_413(status, body, LIMIT)
    assert f"the body is {size} bytes" in str(error["error"])
    if size > BATCH_LIMIT:
        _assert_413(*client(f"{live.url}/predict/batch", b"[" + _over(size - 2) + b"]"), BATCH_LIMIT)


def test_the_connection_serves_the_next_request_after_a_413(live: Server) -> None:
    with httpx.Client(base_url=live.url, timeout=TIMEOUT) as client:
        for _ in range(2):
            refused = client.post("/predict", content=_over(3 * MB), headers=JSON)
            _assert_413(refused.status_code, refused.content, LIMIT)
            answered = client.post("/predict", json=EXAMPLE)  # on the same connection: the rest was discarded
            assert answered.status_code == 200 and answered.json()["prediction"] == "benign"


def _connect(live: Server) -> socket.socket:
    url = urlsplit(live.url)
    sock = socket.create_connection((url.hostname, url.port), timeout=TIMEOUT)
    return sock


def test_a_content_length_over_the_limit_is_refused_before_a_byte_of_the_body_is_sent(live: Server) -> None:
    """The headers alone get the 413: the server does not wait for (or read) the body it refuses."""
    length = 30 * MB
    with _connect(live) as sock:
        sock.sendall(b"POST /predict HTTP/1.1\r\nhost: oncology\r\ncontent-type: application/json\r\n"
                     b"content-length: %d\r\n\r\n" % length)
        status, headers, body = read_answer(sock)  # nothing of the body sent: a server that read it first hangs here
    error = _assert_413(status, body, LIMIT)
    assert error["error"] == f"the body is {length} bytes; this route accepts at most {LIMIT}"
    assert headers["x-request-id"] == error["request_id"]


def _chunked(pieces: Iterator[bytes]) -> bytes:
    return b"".join(b"%x\r\n%s\r\n" % (len(piece), piece) for piece in pieces) + b"0\r\n\r\n"


@pytest.mark.parametrize("route,limit", [("/predict", LIMIT), ("/predict/batch", BATCH_LIMIT),
                                         ("/v2/models/oncology/infer", BATCH_LIMIT)])
def test_a_chunked_body_over_the_limit_in_several_chunks_is_a_413(live: Server, route: str, limit: int) -> None:
    """No Content-Length: the size is counted as the body arrives, over all its chunks (each one under the limit)."""
    piece = 64 * 1024
    pieces = limit // piece + 2  # the sum over the limit, every chunk far under it
    body = _chunked(iter([b"[" + b" " * (piece - 1)] + [b" " * piece] * (pieces - 1)))
    with _connect(live) as sock:
        sock.sendall(f"POST {route} HTTP/1.1\r\nhost: oncology\r\ncontent-type: application/json\r\n"
                     "transfer-encoding: chunked\r\n\r\n".encode() + body)
        status, _, answer = read_answer(sock)
    error = _assert_413(status, answer, limit)
    assert error["error"] == f"the body exceeds {limit} bytes"


@pytest.mark.parametrize("client", ["httpx", "requests"])
def test_a_streamed_body_without_content_length_over_the_limit_is_a_413(live: Server, client: str) -> None:
    """A client that streams a body of unknown length (a generator: chunked, no Content-Length)."""
    def stream() -> Iterator[bytes]:
        yield json.dumps(EXAMPLE).encode()
        for _ in range(3 * LIMIT // (256 * 1024)):
            yield b" " * (256 * 1024)

    if client == "httpx":
        response = httpx.post(f"{live.url}/predict", content=stream(), headers=JSON, timeout=TIMEOUT)
        assert "content-length" not in response.request.headers
        status, body = response.status_code, response.content
    else:
        answer = requests.post(f"{live.url}/predict", data=stream(), headers=JSON, timeout=TIMEOUT)
        assert "Content-Length" not in answer.request.headers
        status, body = answer.status_code, answer.content
    error = _assert_413(status, body, LIMIT)
    assert error["error"] == f"the body exceeds {LIMIT} bytes"


def test_a_chunked_body_under_the_limit_is_answered(live: Server) -> None:
    """The counting is of the body, not of the chunks: the same chunking under the limit is a prediction."""
    tumor = json.dumps(EXAMPLE).encode()
    body = _chunked(iter([tumor[:10], tumor[10:], b" " * 1000]))
    with _connect(live) as sock:
        sock.sendall(b"POST /predict HTTP/1.1\r\nhost: oncology\r\ncontent-type: application/json\r\n"
                     b"transfer-encoding: chunked\r\n\r\n" + body)
        status, _, answer = read_answer(sock)
    assert status == 200 and json.loads(answer)["prediction"] == "benign"
