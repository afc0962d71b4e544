"""The prediction log in the real `oncology serve` (once predlog is wired into app.py)."""

from __future__ import annotations

import gzip
import json
import os
import signal
import threading
import time
from pathlib import Path

import httpx
import pytest
from tcp_proxy import HttpProxy

from oncology_model.storage import open_store
from support import S3, poll

from .conftest import EXAMPLE, MALIGNANT, free_port


def _records(uri: str) -> list[tuple[str, dict[str, object]]]:
    store = open_store(uri)
    return [(key, json.loads(line)) for key in store.list("monitoring/predictions/")
            for line in gzip.decompress(store.read(key)).splitlines()]


def _metric(url: str, name: str) -> float:
    lines = httpx.get(f"{url}/metrics").text.splitlines()
    return sum(float(ln.rsplit(" ", 1)[1]) for ln in lines if ln.startswith(name))


@pytest.mark.parametrize("workers", [1, 2])
def test_sigterm_leaves_every_prediction_in_the_log_and_workers_never_share_an_object(  # type: ignore[no-untyped-def]
    serve, trained_store: Path, tmp_path: Path, workers: int
) -> None:
    logs = tmp_path / "logs"
    server = serve({"ONCOLOGY_STORE": str(trained_store), "ONCOLOGY_PREDICTION_LOG": "true",
                    "ONCOLOGY_PREDICTION_LOG_STORE": str(logs), "ONCOLOGY_PREDICTION_LOG_FLUSH_SECONDS": "3600"},
                   "--workers", str(workers))
    sent: list[str] = []
    failures: list[BaseException] = []

    def client(n: int) -> None:
        try:
            for i in range(25):  # a new connection per request, 100 in all: every worker accepts some (60 s: a hang guard)
                rid = f"c{n}-{i}"
                answer = httpx.post(f"{server.url}/predict", json=EXAMPLE if i % 2 else MALIGNANT,
                                    headers={"x-request-id": rid, "connection": "close"}, timeout=60)
                assert answer.status_code == 200, answer.text
                sent.append(rid)
        except BaseException as exc:
            failures.append(exc)

    threads = [threading.Thread(target=client, args=(n,)) for n in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert failures == []
    batch = httpx.post(f"{server.url}/predict/batch", json=[EXAMPLE, MALIGNANT, EXAMPLE], headers={"x-request-id": "b"},
                       timeout=60)
    v2 = httpx.post(f"{server.url}/v2/models/oncology/infer", headers={"x-request-id": "v2"}, timeout=60,
                    json={"inputs": [{"name": "tumor", "datatype": "INT64", "shape": [1, 9], "data": list(EXAMPLE.values())}]})
    assert batch.status_code == v2.status_code == 200
    assert not list(logs.rglob("*.jsonl.gz"))  # an hour's flush interval: all of it is still in memory ...
    server.proc.send_signal(signal.SIGTERM)
    assert server.proc.wait(timeout=30) == 0
    found = _records(str(logs))  # ... and SIGTERM wrote it all
    ids = [str(r["request_id"]) for _, r in found]
    assert sorted(ids) == sorted([*sent, "b", "b", "b", "v2"])
    by_route = {r["route"] for _, r in found}
    assert by_route == {"/predict", "/predict/batch", "/v2/models/{model_name}/infer"}
    assert [r["inputs"] for _, r in found if r["request_id"] == "b"] == [EXAMPLE, MALIGNANT, EXAMPLE]  # in order
    writers = {key.rsplit("/", 1)[1].rsplit("-", 1)[0] for key, _ in found}
    assert len(writers) == workers  # one writer id per worker process: no two write the same object
    assert len({key for key, _ in found}) == len(writers) * 1  # one object each (batch rows 5,000)


def test_predictions_never_fail_while_the_log_store_is_unreachable(  # type: ignore[no-untyped-def]
    serve, trained_store: Path, s3: S3
) -> None:
    port = free_port()
    uri = f"s3://{s3.bucket}/predlog-{os.urandom(4).hex()}"
    forwarder = HttpProxy(s3.endpoint_url, port=port).__enter__()
    server = serve(s3.env(AWS_ENDPOINT_URL=f"http://127.0.0.1:{port}", ONCOLOGY_STORE=str(trained_store),
                          ONCOLOGY_PREDICTION_LOG="true", ONCOLOGY_PREDICTION_LOG_STORE=uri,
                          ONCOLOGY_PREDICTION_LOG_MAX_BUFFERED="50", ONCOLOGY_PREDICTION_LOG_BATCH_ROWS="10",
                          ONCOLOGY_PREDICTION_LOG_FLUSH_SECONDS="0.2"))
    forwarder.__exit__()  # the log's store goes away
    statuses = []
    deadline = time.monotonic() + 120
    while _metric(server.url, "oncology_prediction_log_dropped_total") == 0:  # counted in /metrics
        assert time.monotonic() < deadline, server.logs()[-2000:]
        statuses.append(httpx.post(f"{server.url}/predict", json=EXAMPLE).status_code)
    assert set(statuses) == {200}  # 0 predictions fail while the store is unreachable
    assert _metric(server.url, "oncology_prediction_log_write_failures_total") > 0
    written = _metric(server.url, "oncology_prediction_log_written_total")
    with HttpProxy(s3.endpoint_url, port=port):  # back: the next predictions land
        # once the writer, out of its back-off, has written some of the full buffer: until then a prediction finds
        # the buffer full and is dropped (counted), as designed
        poll(lambda: _metric(server.url, "oncology_prediction_log_written_total") > written, 60,
             lambda: server.logs()[-2000:], interval=0.1)
        for i in range(5):
            assert httpx.post(f"{server.url}/predict", json=EXAMPLE, headers={"x-request-id": f"back-{i}"}).status_code == 200
        server.proc.send_signal(signal.SIGTERM)
        assert server.proc.wait(timeout=60) == 0
        ids = [r["request_id"] for _, r in _records(uri)]
    assert [f"back-{i}" for i in range(5)] == ids[-5:]
    assert "Traceback" not in server.logs()


def test_a_second_sigterm_stops_the_drain_cleanly_and_still_writes_every_logged_prediction(  # type: ignore[no-untyped-def]
    serve, trained_store: Path, tmp_path: Path
) -> None:
    """The module's promise (server.py): a second signal stops waiting, not the app's own shutdown (which ran, before,
    only as the lifespan was cancelled at exit: an error with a traceback in the log)."""
    logs = tmp_path / "logs"
    server = serve({"ONCOLOGY_STORE": str(trained_store), "ONCOLOGY_PREDICTION_LOG": "true",
                    "ONCOLOGY_PREDICTION_LOG_STORE": str(logs), "ONCOLOGY_PREDICTION_LOG_FLUSH_SECONDS": "3600",
                    "ONCOLOGY_DRAIN_SECONDS": "600"})
    sent = [f"twice-{i}" for i in range(20)]
    for rid in sent:
        assert httpx.post(f"{server.url}/predict", json=EXAMPLE, headers={"x-request-id": rid}).status_code == 200
    server.proc.send_signal(signal.SIGTERM)  # the first: readiness off, draining for 600 s
    poll(lambda: httpx.get(f"{server.url}/readyz").status_code == 503 or None, 30, lambda: server.logs()[-2000:], 0.05)
    assert not list(logs.rglob("*.jsonl.gz"))  # all of it still in memory
    server.proc.send_signal(signal.SIGTERM)  # the second, well within the drain: stop now
    assert server.proc.wait(timeout=60) == 0  # not the 600 s drain
    assert sorted(str(r["request_id"]) for _, r in _records(str(logs))) == sorted(sent)
    output = server.logs()
    assert "Traceback" not in output and '"level": "error"' not in output, output[-3000:]
    assert all(f'"request_id":"{rid}"' in output for rid in sent)  # the access log's lines too
