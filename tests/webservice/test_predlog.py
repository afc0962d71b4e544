"""The prediction log (oncology.webservice.predlog): a bounded buffer, written in batches off the request path."""

from __future__ import annotations

import calendar
import gzip
import json
import os
import re
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pydantic
import pytest
from tcp_proxy import HttpProxy

from oncology.settings import ServeSettings
from oncology.webservice import predlog
from oncology.webservice.metrics import Metrics
from oncology.webservice.predlog import PredictionLog
from oncology_model.datamodel import FEATURES, Decision
from oncology_model.errors import StoreUnavailable
from oncology_model.storage import LocalStore, Store, open_store
from support import S3

from .conftest import EXAMPLE, MALIGNANT, free_port

ROW = tuple(EXAMPLE.values())
ROW2 = tuple(MALIGNANT.values())
KEY = re.compile(r"^monitoring/predictions/date=(\d{4}-\d\d-\d\d)/([A-Za-z0-9._-]+)-(\d{8})\.jsonl\.gz$")


def records(store: Store) -> list[tuple[str, dict[str, object]]]:
    """Every record under monitoring/predictions/, with its key, in key order and line order."""
    found = []
    for key in store.list("monitoring/predictions/"):
        assert KEY.match(key), key
        for line in gzip.decompress(store.read(key)).decode().splitlines():
            found.append((key, json.loads(line)))
    return found


def one(log: PredictionLog, request_id: str, row: tuple[int, ...] = ROW, p: float = 0.25) -> None:
    log.record("/predict", request_id, "1.0.1", [row], [p], ["benign"])


def wait_for(condition: Callable[[], bool], what: str, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.02)


def exposed(metrics: Metrics, name: str) -> float:
    lines = metrics.exposition().decode().splitlines()
    return sum(float(ln.rsplit(" ", 1)[1]) for ln in lines if ln.startswith(name))


def utc(text: str) -> float:
    date, ms = text.split(".")
    return calendar.timegm(time.strptime(date, "%Y-%m-%dT%H:%M:%S")) + int(ms) / 1000


@pytest.fixture
def closing() -> Iterator[Callable[[PredictionLog], PredictionLog]]:
    """Logs to close at the end even when a test fails (no writer thread outlives its test)."""
    logs: list[PredictionLog] = []
    yield lambda log: logs.append(log) or log  # type: ignore[func-returns-value]
    for log in logs:
        log.close(timeout=0)


# ---- the format -----------------------------------------------------------------------------------


def test_each_prediction_is_one_json_line_in_the_fixed_format(tmp_path: Path) -> None:
    store = LocalStore(tmp_path)
    now = utc("2026-12-01T21:40:00.123") + 0.0004
    log = PredictionLog(store, "host-1-0a1b2c3d", flush_seconds=3600, clock=lambda: now).start()
    log.record("/predict", "req-1", "1.0.1", [ROW], [0.0344], ["benign"])
    log.record("/predict/batch", "req-2", "1.0.2", [ROW, ROW2], [0.4, 0.97], ["benign", "malignant"], ["refer", "malignant"],
               "candidate", 1.25)
    log.record_error("/predict", "req-3", "1.0.2", "candidate", 0.5)
    assert log.close(timeout=30)

    (key, _), *_ = found = records(store)
    assert key == "monitoring/predictions/date=2026-12-01/host-1-0a1b2c3d-00000001.jsonl.gz"
    keys = ["ts", "request_id", "model_version", "route", "inputs", "probability", "prediction", "decision"]
    assert [list(r) for _, r in found] == [keys] + [[*keys, "arm", "latency_ms"]] * 3  # a release's two keys
    first, second, third, failed = (r for _, r in found)
    assert first == {"ts": "2026-12-01T21:40:00.123+00:00", "request_id": "req-1", "model_version": "1.0.1",
                     "route": "/predict", "inputs": EXAMPLE, "probability": 0.0344, "prediction": "benign",
                     "decision": "benign"}  # decisions default to the labels; the champion outside a release
    assert (second["arm"], second["latency_ms"], third["arm"]) == ("candidate", 1.25, "candidate")
    assert failed == {"ts": "2026-12-01T21:40:00.123+00:00", "request_id": "req-3", "model_version": "1.0.2",
                      "route": "/predict", "inputs": None, "probability": None, "prediction": "error",
                      "decision": "error", "arm": "candidate", "latency_ms": 0.5}
    assert list(first["inputs"]) == list(FEATURES)  # type: ignore[call-overload]
    assert (second["inputs"], second["prediction"], second["decision"]) == (EXAMPLE, "benign", "refer")
    assert (third["inputs"], third["probability"], third["decision"], third["route"], third["model_version"]) == (
        MALIGNANT, 0.97, "malignant", "/predict/batch", "1.0.2")
    assert log.written == 4 and log.errors == []


def test_a_single_prediction_keeps_its_own_decision_as_the_service_passes_it(tmp_path: Path) -> None:
    store = LocalStore(tmp_path)
    log = PredictionLog(store, "w", flush_seconds=3600).start()
    log.record("/predict", "refer-1", "1.0.1", [ROW2], [0.55], ["malignant"], [Decision.REFER])  # as Service.score
    log.record("/predict", "benign-1", "1.0.1", [ROW], [0.02], ["benign"], [Decision.BENIGN])
    assert log.close(timeout=30)
    assert [(r["request_id"], r["prediction"], r["decision"], r["probability"], r["inputs"]) for _, r in records(store)] == [
        ("refer-1", "malignant", "refer", 0.55, MALIGNANT), ("benign-1", "benign", "benign", 0.02, EXAMPLE)]
    assert log.written == 2 and log.errors == []


def test_a_prediction_json_cannot_hold_is_dropped_as_invalid_and_its_batch_is_written(tmp_path: Path) -> None:
    metrics = Metrics()
    log = PredictionLog(LocalStore(tmp_path), "w", flush_seconds=3600, metrics=metrics).start()
    one(log, "before")
    log.record("/predict/batch", "odd", "1.0.1", [ROW, ROW2], [0.1, object()], ["benign", "malignant"])  # a caller's bug
    one(log, "after")
    assert log.close(timeout=30) is False  # one prediction was lost
    assert [(r["request_id"], r["probability"]) for _, r in records(LocalStore(tmp_path))] == [
        ("before", 0.25), ("odd", 0.1), ("after", 0.25)]
    assert log.written == 3 and log.dropped["invalid"] == 1
    assert exposed(metrics, 'oncology_prediction_log_dropped_total{reason="invalid"}') == 1
    assert [type(e) for e in log.errors] == [TypeError]


# ---- the buffer ---------------------------------------------------------------------------------


def test_the_buffer_is_bounded_what_does_not_fit_is_dropped_and_counted_and_the_rest_is_written_in_order(
    tmp_path: Path,
) -> None:
    metrics = Metrics()
    log = PredictionLog(LocalStore(tmp_path), "w", max_buffered=10, batch_rows=4, flush_seconds=3600, metrics=metrics)
    for i in range(8):  # not started: nothing leaves the buffer
        one(log, f"r{i}")
    log.record("/predict/batch", "too-big", "1.0.1", [ROW] * 3, [0.1] * 3, ["benign"] * 3)  # 11 > 10: all dropped
    one(log, "r8")
    one(log, "r9")
    one(log, "over")  # the buffer is full
    assert log.buffered == 10
    assert log.dropped["buffer_full"] == 4
    assert exposed(metrics, 'oncology_prediction_log_dropped_total{reason="buffer_full"}') == 4

    assert log.start().close(timeout=30)
    found = records(LocalStore(tmp_path))
    assert [r["request_id"] for _, r in found] == [f"r{i}" for i in range(10)]
    assert [int(KEY.match(k).group(3)) for k, _ in found] == [1] * 4 + [2] * 4 + [3] * 2  # type: ignore[union-attr]
    assert log.written == 10 and log.buffered == 0 and log.errors == []
    assert exposed(metrics, "oncology_prediction_log_written_total") == 10
    assert exposed(metrics, "oncology_prediction_log_dropped_total") == 4


def test_a_full_batch_is_written_without_waiting_for_the_flush_interval(tmp_path: Path, closing) -> None:  # type: ignore[no-untyped-def]
    store = LocalStore(tmp_path)
    log = closing(PredictionLog(store, "w", batch_rows=5, flush_seconds=3600).start())
    for i in range(12):
        one(log, f"r{i}")
    wait_for(lambda: log.written == 10, "two full batches")
    assert [r["request_id"] for _, r in records(store)] == [f"r{i}" for i in range(10)]
    assert log.buffered == 2 and log.errors == []


def test_a_batch_is_encoded_and_compressed_in_pieces_with_the_cpu_yielded_between_and_holds_every_line(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # the writer shares the worker's CPU with the event loop: a 5,000-line batch in one go held up every request that
    # came meanwhile (p99 at 8 connections 2.9-3.2 ms against 0.4 ms with the log off; benchmarks/predlog.py --http)
    events: list[tuple[str, int]] = []
    monkeypatch.setattr(predlog, "_yield", lambda: events.append(("yield", 0)))
    store = LocalStore(tmp_path)
    log = PredictionLog(store, "w", batch_rows=1_000, flush_seconds=3600)  # never started: written here
    encode = log._encode_lines
    log._encode_lines = lambda lines: events.append(("encode", len(lines))) or encode(lines)  # type: ignore[func-returns-value]
    for i in range(1_000):
        one(log, f"r{i}")
    log._write_queued(everything=True)
    assert [r["request_id"] for _, r in records(store)] == [f"r{i}" for i in range(1_000)]
    pieces = -(-1_000 // predlog._CHUNK)
    encoding, compressing = events[:2 * pieces], events[2 * pieces:]
    assert encoding == [e for i in range(pieces)  # a yield after each piece encoded
                        for e in (("encode", min(predlog._CHUNK, 1_000 - i * predlog._CHUNK)), ("yield", 0))]
    assert compressing == [("yield", 0)] * pieces  # a yield after each piece compressed
    assert predlog._CHUNK <= 256 and log.written == 1_000


def test_the_buffer_is_flushed_every_flush_seconds(tmp_path: Path, closing) -> None:  # type: ignore[no-untyped-def]
    store = LocalStore(tmp_path)
    log = closing(PredictionLog(store, "w", batch_rows=1000, flush_seconds=0.2).start())
    one(log, "lonely")
    wait_for(lambda: log.written == 1, "the timed flush")
    assert [r["request_id"] for _, r in records(store)] == ["lonely"]


@pytest.fixture
def far_east_local_time() -> Iterator[None]:
    """Local time UTC+14, so that a local date differs from the UTC date."""
    previous = os.environ.get("TZ")
    os.environ["TZ"] = "Pacific/Kiritimati"
    time.tzset()
    try:
        yield
    finally:
        if previous is None:
            del os.environ["TZ"]
        else:
            os.environ["TZ"] = previous
        time.tzset()


def test_records_are_partitioned_by_their_utc_date(tmp_path: Path, far_east_local_time: None) -> None:
    times = iter([utc("2026-12-01T23:59:59.999"), utc("2026-12-02T00:00:00.000"), utc("2026-12-01T23:59:59.998")])
    store = LocalStore(tmp_path)
    log = PredictionLog(store, "w", flush_seconds=3600, clock=lambda: next(times))
    one(log, "before")
    one(log, "after")
    one(log, "late")  # a request that started before midnight and finished after the next one
    assert log.start().close(timeout=30)
    found = [(KEY.match(k).group(1), r["request_id"], r["ts"]) for k, r in records(store)]  # type: ignore[union-attr]
    assert sorted(found) == [
        ("2026-12-01", "before", "2026-12-01T23:59:59.999+00:00"),
        ("2026-12-01", "late", "2026-12-01T23:59:59.998+00:00"),
        ("2026-12-02", "after", "2026-12-02T00:00:00.000+00:00"),
    ]
    assert len({k for k, _ in records(store)}) == 2  # one object per date in a batch


# ---- write-once objects, one writer per process ----------------------------------------------------


def test_objects_are_write_once_a_second_writer_with_the_same_id_never_overwrites(tmp_path: Path) -> None:
    store = LocalStore(tmp_path)
    first = PredictionLog(store, "same", flush_seconds=3600)
    for i in range(3):
        one(first, f"first-{i}")
    assert first.start().close(timeout=30)
    before = {key: store.read(key) for key in store.list("monitoring/")}

    second = PredictionLog(store, "same", flush_seconds=3600)  # a writer id that should never repeat, repeated
    for i in range(2):
        one(second, f"second-{i}", p=0.5)
    assert second.start().close(timeout=30)
    assert {key: store.read(key) for key in before} == before  # nothing replaced
    assert sorted(r["request_id"] for _, r in records(store)) == ["first-0", "first-1", "first-2", "second-0", "second-1"]
    assert first.errors == second.errors == []


WRITER = """
import sys
from oncology.webservice.predlog import PredictionLog, default_writer_id
from oncology_model.storage import open_store
tag, uri = sys.argv[1], sys.argv[2]
log = PredictionLog(open_store(uri), default_writer_id(), batch_rows=7, flush_seconds=3600).start()
for i in range(50):
    log.record("/predict", f"{tag}-{i:02d}", "1.0.1", [(5, 1, 1, 1, 2, 1, 3, 1, 1)], [0.25], ["benign"])
ok = log.close(timeout=60)
print(log.writer_id)
sys.exit(0 if ok and log.written == 50 and not log.errors else 1)
"""


@pytest.mark.s3
def test_two_processes_write_to_one_store_without_colliding(s3: S3) -> None:
    uri = f"s3://{s3.bucket}/predlog-{os.urandom(4).hex()}"
    procs = [subprocess.Popen([sys.executable, "-c", WRITER, tag, uri], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                              text=True) for tag in ("a", "b")]
    outputs = [p.communicate(timeout=120) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], outputs
    writers = [out.strip() for out, _ in outputs]
    assert writers[0] != writers[1]
    assert all(re.fullmatch(r"[A-Za-z0-9.-]+-\d+-[0-9a-f]{8}", w) for w in writers), writers
    found = records(open_store(uri))
    for tag, writer in zip("ab", writers):
        mine = [(k, r) for k, r in found if str(r["request_id"]).startswith(f"{tag}-")]
        assert [r["request_id"] for _, r in mine] == [f"{tag}-{i:02d}" for i in range(50)]  # all there, in order
        assert {KEY.match(k).group(2) for k, _ in mine} == {writer}  # type: ignore[union-attr]
    assert len(found) == 100


def test_the_default_writer_id_is_host_pid_and_random() -> None:
    first, second = predlog.default_writer_id(), predlog.default_writer_id()
    assert first != second
    assert first.rsplit("-", 2)[1] == str(os.getpid())
    assert re.fullmatch(r"[A-Za-z0-9.-]+-\d+-[0-9a-f]{8}", first)


# ---- a slow or failing store never slows or fails a prediction ------------------------------------


class HangingStore(LocalStore):
    """A local store whose writes hang until released (a store that stopped answering)."""

    def __init__(self, root: Path) -> None:
        super().__init__(root)
        self.release = threading.Event()
        self.entered = threading.Event()

    def _create(self, key: str, data: bytes) -> bool:
        self.entered.set()
        self.release.wait()
        return super()._create(key, data)


def test_record_never_waits_for_a_hanging_store_and_never_raises(tmp_path: Path, closing) -> None:  # type: ignore[no-untyped-def]
    store = HangingStore(tmp_path)
    metrics = Metrics()
    log = closing(PredictionLog(store, "w", max_buffered=20, batch_rows=5, flush_seconds=3600, metrics=metrics).start())
    for i in range(5):
        one(log, f"r{i}")
    wait_for(store.entered.is_set, "the writer to be stuck in the store")
    returned: list[int] = []
    failures: list[BaseException] = []

    def predictions() -> None:
        try:
            for i in range(5, 105):
                one(log, f"r{i}")
                returned.append(i)
            log.record("/predict", "garbage", "1.0.1", [ROW], None, ["benign"])  # type: ignore[arg-type]
        except BaseException as exc:
            failures.append(exc)

    requests = threading.Thread(target=predictions)
    requests.start()
    requests.join(timeout=60)  # a liveness guard, not a timing bound: record() must return while the store hangs
    stuck = requests.is_alive()
    if stuck:
        store.release.set()  # so that a failing test ends
    assert not stuck, "record() waited for the store"
    assert failures == [] and len(returned) == 100
    assert log.written == 0 and log.buffered == 20
    assert log.dropped["buffer_full"] == 85 and log.dropped["invalid"] == 1
    assert exposed(metrics, 'oncology_prediction_log_dropped_total{reason="buffer_full"}') == 85
    assert [type(e) for e in log.errors] == [TypeError]  # the garbage call, kept for inspection
    store.release.set()
    assert log.close(timeout=30)
    assert [r["request_id"] for _, r in records(store)] == [f"r{i}" for i in range(20)]


class FlakyStore(LocalStore):
    """A local store whose first ``failures`` writes fail as an unreachable store does."""

    def __init__(self, root: Path, failures: int) -> None:
        super().__init__(root)
        self.failures = failures

    def _create(self, key: str, data: bytes) -> bool:
        if self.failures:
            self.failures -= 1
            raise StoreUnavailable(f"{key}: cannot reach the store (a test)")
        return super()._create(key, data)


def test_a_failed_batch_is_retried_a_bounded_number_of_times_then_dropped_and_counted(tmp_path: Path) -> None:
    metrics = Metrics()
    store = FlakyStore(tmp_path, failures=2)
    log = PredictionLog(store, "w", batch_rows=3, flush_seconds=3600, metrics=metrics, retries=2, retry_seconds=0.01)
    for i in range(3):
        one(log, f"retried-{i}")
    log.start()
    wait_for(lambda: log.written == 3, "the batch, written at its third attempt")
    assert log.write_failures == 2 and sum(log.dropped.values()) == 0
    store.failures = 3  # more failures than attempts: the batch is dropped, counted, and the next one lands
    for i in range(3):
        one(log, f"lost-{i}")
    wait_for(lambda: log.dropped["write_failed"] == 3, "the batch to be given up")
    for i in range(3):
        one(log, f"next-{i}")
    assert log.close(timeout=30)
    assert [r["request_id"] for _, r in records(store)] == [f"retried-{i}" for i in range(3)] + [
        f"next-{i}" for i in range(3)]
    assert log.write_failures == 5
    assert exposed(metrics, "oncology_prediction_log_write_failures_total") == 5
    assert exposed(metrics, 'oncology_prediction_log_dropped_total{reason="write_failed"}') == 3
    assert log.errors == []


def test_close_writes_everything_that_is_buffered_and_later_records_are_dropped(tmp_path: Path) -> None:
    store = LocalStore(tmp_path)
    metrics = Metrics()
    log = PredictionLog(store, "w", batch_rows=1000, flush_seconds=3600, metrics=metrics).start()
    for i in range(37):
        one(log, f"r{i}")
    assert log.close(timeout=30)  # as the app's shutdown does after the drain (SIGTERM)
    assert [r["request_id"] for _, r in records(store)] == [f"r{i}" for i in range(37)]
    one(log, "after-close")
    assert log.dropped["shutdown"] == 1 and log.written == 37
    assert exposed(metrics, "oncology_prediction_log_buffered") == 0
    assert log.errors == []


@pytest.mark.s3
def test_an_unreachable_s3_store_costs_predictions_nothing_drops_are_counted_and_later_batches_land(
    s3: S3, monkeypatch: pytest.MonkeyPatch,
) -> None:
    port = free_port()
    monkeypatch.setenv("AWS_ENDPOINT_URL", f"http://127.0.0.1:{port}")  # S3 through a forwarder we can take away
    uri = f"s3://{s3.bucket}/predlog-{os.urandom(4).hex()}"
    metrics = Metrics()
    forwarder = HttpProxy(s3.endpoint_url, port=port).__enter__()
    log = PredictionLog(open_store(uri), "w", max_buffered=30, batch_rows=5, flush_seconds=0.2, metrics=metrics,
                        retries=1, retry_seconds=0.05)
    recorded = 0
    try:
        log.start()
        for i in range(5):
            one(log, f"up-{i}")
        recorded += 5
        wait_for(lambda: log.written == 5, "the first batch while S3 is up")
    finally:
        forwarder.__exit__()  # S3 is gone: connections refused
    try:
        i = 0
        deadline = time.monotonic() + 120
        while not (log.dropped["buffer_full"] and log.dropped["write_failed"]):  # predictions go on meanwhile
            assert time.monotonic() < deadline, (log.dropped, log.write_failures)
            one(log, f"down-{i}")
            recorded += 1
            i += 1
            time.sleep(0.01)
        assert log.write_failures >= 2  # each failed batch was retried
        assert exposed(metrics, "oncology_prediction_log_write_failures_total") == log.write_failures
        assert exposed(metrics, 'oncology_prediction_log_dropped_total{reason="write_failed"}') > 0
        assert exposed(metrics, 'oncology_prediction_log_dropped_total{reason="buffer_full"}') > 0

        with HttpProxy(s3.endpoint_url, port=port):  # S3 is back: the next batches land
            wait_for(lambda: log.buffered == 0, "what was buffered during the outage")
            for j in range(7):
                one(log, f"back-{j}")
            recorded += 7
            wait_for(lambda: log.buffered == 0, "the batches after the outage")
            assert log.close(timeout=30)
            ids = [str(r["request_id"]) for _, r in records(open_store(uri))]
    finally:
        log.close(timeout=0)
    assert ids[:5] == [f"up-{i}" for i in range(5)]
    assert ids[-7:] == [f"back-{j}" for j in range(7)]
    assert len(ids) == log.written
    assert log.written + sum(log.dropped.values()) == recorded  # every prediction written or counted as dropped
    assert log.errors == []


@pytest.mark.s3
def test_close_with_s3_unreachable_returns_and_counts_what_is_lost(s3: S3, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AWS_ENDPOINT_URL", f"http://127.0.0.1:{free_port()}")  # nothing listens there
    log = PredictionLog(open_store(f"s3://{s3.bucket}/predlog-gone"), "w", flush_seconds=3600, retry_seconds=0.05)
    for i in range(12):
        one(log, f"r{i}")
    assert not log.start().close(timeout=1)
    assert log.written == 0 and log.buffered == 0
    assert log.dropped["write_failed"] + log.dropped["shutdown"] == 12
    assert log.errors == []


# ---- settings ----------------------------------------------------------------------------------------


def test_the_log_is_off_by_default_and_needs_a_store_when_on(tmp_path: Path, clean_env: None) -> None:
    assert ServeSettings().prediction_log is False
    assert predlog.from_settings(ServeSettings()) is None
    with pytest.raises(pydantic.ValidationError, match="ONCOLOGY_PREDICTION_LOG_STORE"):
        ServeSettings(store=None, prediction_log=True)  # serving the wheel's model: no store to write to
    on = predlog.from_settings(ServeSettings(store=str(tmp_path / "models"), prediction_log=True,
                                             prediction_log_store=str(tmp_path / "logs"), prediction_log_batch_rows=7))
    assert on is not None
    assert isinstance(on.store, LocalStore) and on.store.root == (tmp_path / "logs").resolve()
    assert (on.batch_rows, on.max_buffered) == (7, 20_000)
    default = predlog.from_settings(ServeSettings(store=str(tmp_path / "models"), prediction_log=True))
    assert default is not None and isinstance(default.store, LocalStore)
    assert default.store.root == (tmp_path / "models").resolve()  # default: the serving store
