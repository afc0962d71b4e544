"""The package index with its packages kept in S3: pypiserver, with a storage backend whose record is a bucket.

    ONCOLOGY_INDEX_STORE=s3://bucket/prefix ONCOLOGY_INDEX_USER=u ONCOLOGY_INDEX_PASSWORD=p \\
    AWS_ENDPOINT_URL=... AWS_ACCESS_KEY_ID=... AWS_SECRET_ACCESS_KEY=... python s3index.py

pypiserver serves the index (PEP 503 ``/simple/``, twine uploads, htpasswd authentication for upload,
download and listing: the same server and clients as the host's index of ``infra/pypi.sh``); this module
replaces its storage:

- **S3 is the record.** An upload is written to S3 (``If-None-Match: *``: never over another file, and
  ``Content-MD5``: never a damaged one) before the client is answered; when S3 refuses or cannot be
  reached, the client gets a 503 and the index does not list the file. An acknowledged upload is in S3.
- **The local folder is a cache** (``ONCOLOGY_INDEX_CACHE``, a pod's ``emptyDir``): filled from S3 at
  start (the process stops with one line if S3 does not answer then), and brought in line with the
  bucket on every listing or download, so several replicas, or a new pod, serve what the bucket holds.
  A file read back from S3 is checked against the sha256 recorded at upload. While S3 is unreachable
  after start, the cached files are served.
- ``exists`` asks S3, so a second upload of a published file is refused (409/400) whichever replica
  gets it.

Settings (environment): ``ONCOLOGY_INDEX_STORE`` (required), ``ONCOLOGY_INDEX_USER`` (default
``oncology``), ``ONCOLOGY_INDEX_PASSWORD`` (required), ``ONCOLOGY_INDEX_HOST`` (default 127.0.0.1),
``ONCOLOGY_INDEX_PORT`` (default 8082), ``ONCOLOGY_INDEX_CACHE`` (default /tmp/oncology-index),
``ONCOLOGY_INDEX_DRAIN_SECONDS`` (default 0), and the standard ``AWS_*`` variables for S3. Needs pypiserver,
passlib, waitress and boto3.

On SIGTERM the index exits at once (every acknowledged upload is in S3), or, with
``ONCOLOGY_INDEX_DRAIN_SECONDS``, keeps answering that long first: a pod being replaced gets the signal while the
Service may still send it requests (until the endpoints controller and every node's kube-proxy have taken it
out), and those would be refused. A second SIGTERM exits at once.
"""

from __future__ import annotations

import base64
import hashlib
import logging
import os
import re
import signal
import socket
import sys
import tempfile
import threading
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any, BinaryIO

log = logging.getLogger("oncology.index")

SHA256_KEY = "sha256"  # S3 user metadata: x-amz-meta-sha256
NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._+!-]*$")


class IndexSetupError(Exception):
    """A setting is wrong or S3 cannot be used: one line, exit 2."""


def parse_store(uri: str) -> tuple[str, str]:
    if not uri.startswith("s3://") or not uri[5:].split("/", 1)[0]:
        raise IndexSetupError(f"ONCOLOGY_INDEX_STORE must be s3://bucket[/prefix], not {uri!r}")
    bucket, _, prefix = uri[5:].partition("/")
    prefix = prefix.strip("/")
    return bucket, f"{prefix}/" if prefix else ""


def _s3_client() -> Any:
    import boto3
    from botocore.config import Config

    return boto3.client("s3", config=Config(connect_timeout=5, read_timeout=30, retries={"max_attempts": 3}))


def make_backend_class() -> type:
    """The backend class, built here so that importing this module needs no pypiserver."""
    from botocore.exceptions import BotoCoreError, ClientError
    from pypiserver.backend import SimpleFileBackend
    from pypiserver.bottle_wrapper import HTTPError

    class S3Backend(SimpleFileBackend):  # type: ignore[misc]
        """pypiserver's file backend over a cache folder whose record is ``s3://bucket/prefix``."""

        def __init__(self, config: Any, s3: Any, bucket: str, prefix: str, cache: Path) -> None:
            super().__init__(config)
            self.s3, self.bucket, self.prefix, self.cache = s3, bucket, prefix, cache
            self._lock = threading.Lock()

        # ---- S3 is the record ----------------------------------------------------------------------
        def _key(self, filename: str) -> str:
            return f"{self.prefix}{filename}"

        def _listing(self) -> dict[str, int]:
            """filename -> size of every file under the prefix (no sub-folders)."""
            found: dict[str, int] = {}
            for page in self.s3.get_paginator("list_objects_v2").paginate(Bucket=self.bucket, Prefix=self.prefix):
                for obj in page.get("Contents", []):
                    name = obj["Key"][len(self.prefix):]
                    if name and "/" not in name and NAME_RE.match(name):
                        found[name] = int(obj["Size"])
            return found

        def sync(self) -> None:
            """Bring the cache in line with the bucket: fetch what is missing, drop what S3 no longer holds."""
            with self._lock:
                listing = self._listing()
                cached = {p.name: p for p in self.cache.iterdir() if p.is_file() and not p.name.startswith(".")}
                for name, size in listing.items():
                    have = cached.get(name)
                    if have is None or have.stat().st_size != size:
                        self._fetch(name)
                for name, path in cached.items():
                    if name not in listing:
                        path.unlink(missing_ok=True)
                        log.info("removed %s from the cache: no longer in s3://%s/%s", name, self.bucket, self.prefix)

        def _fetch(self, name: str) -> None:
            answer = self.s3.get_object(Bucket=self.bucket, Key=self._key(name))
            expected = answer.get("Metadata", {}).get(SHA256_KEY)
            digest = hashlib.sha256()
            fd, tmp = tempfile.mkstemp(prefix=".fetch-", dir=self.cache)
            try:
                with os.fdopen(fd, "wb") as out:
                    for chunk in answer["Body"].iter_chunks(1 << 20):
                        digest.update(chunk)
                        out.write(chunk)
                if expected and digest.hexdigest() != expected:
                    raise IndexSetupError(f"s3://{self.bucket}/{self._key(name)}: sha256 {digest.hexdigest()} is not the "
                                      f"{expected} recorded at upload: not served")
                os.replace(tmp, self.cache / name)
                log.info("fetched %s from s3://%s/%s (sha256 %s)", name, self.bucket, self.prefix, digest.hexdigest())
            finally:
                Path(tmp).unlink(missing_ok=True)

        # ---- pypiserver's backend interface --------------------------------------------------------
        def get_all_packages(self) -> Iterable[Any]:
            try:
                self.sync()
            except (BotoCoreError, ClientError, IndexSetupError) as exc:
                log.warning("S3 did not answer (%s): serving the cached packages", _why(exc))
            return super().get_all_packages()  # type: ignore[no-any-return]

        def exists(self, filename: str) -> bool:
            try:
                self.s3.head_object(Bucket=self.bucket, Key=self._key(filename))
                return True
            except ClientError as exc:
                if exc.response.get("Error", {}).get("Code") in ("404", "NoSuchKey", "NotFound"):
                    return False
                raise HTTPError(503, f"the package store (S3) did not answer: {_why(exc)}") from None
            except BotoCoreError as exc:
                raise HTTPError(503, f"the package store (S3) did not answer: {_why(exc)}") from None

        def add_package(self, filename: str, stream: BinaryIO) -> None:
            sha256, md5 = hashlib.sha256(), hashlib.md5()  # noqa: S324 (Content-MD5 is what S3 checks)
            fd, tmp = tempfile.mkstemp(prefix=".upload-", dir=self.cache)
            try:
                with os.fdopen(fd, "wb") as out:
                    for chunk in iter(lambda: stream.read(1 << 20), b""):
                        sha256.update(chunk)
                        md5.update(chunk)
                        out.write(chunk)
                try:
                    with open(tmp, "rb") as body:
                        self.s3.put_object(
                            Bucket=self.bucket, Key=self._key(filename), Body=body, IfNoneMatch="*",
                            ContentMD5=base64.b64encode(md5.digest()).decode(), Metadata={SHA256_KEY: sha256.hexdigest()},
                        )
                except ClientError as exc:
                    if exc.response.get("Error", {}).get("Code") == "PreconditionFailed":
                        raise HTTPError(409, f"Package {filename!r} already exists!") from None
                    raise HTTPError(503, f"{filename} was not stored: the package store (S3) refused it ({_why(exc)})") from None
                except BotoCoreError as exc:
                    raise HTTPError(503, f"{filename} was not stored: the package store (S3) did not answer ({_why(exc)})") from None
                with self._lock:
                    os.replace(tmp, self.cache / filename)
                log.info("stored %s in s3://%s/%s (sha256 %s)", filename, self.bucket, self.prefix, sha256.hexdigest())
            finally:
                Path(tmp).unlink(missing_ok=True)

        def remove_package(self, pkg: Any) -> None:
            name = Path(pkg.fn).name
            try:
                self.s3.delete_object(Bucket=self.bucket, Key=self._key(name))
            except (BotoCoreError, ClientError) as exc:
                raise HTTPError(503, f"{name} was not removed: the package store (S3) did not answer ({_why(exc)})") from None
            super().remove_package(pkg)

    return S3Backend


def _why(exc: BaseException) -> str:
    response = getattr(exc, "response", None)
    if isinstance(response, dict) and response.get("Error"):
        err = response["Error"]
        return f"{err.get('Code')}: {err.get('Message', '')}".strip(": ")
    return f"{type(exc).__name__}: {exc}"


def write_htpasswd(path: Path, user: str, password: str) -> None:
    from passlib.apache import HtpasswdFile

    old = os.umask(0o077)
    try:
        ht = HtpasswdFile(str(path), new=True, default_scheme="sha512_crypt")
        ht.set_password(user, password)
        ht.save()
    finally:
        os.umask(old)


def wait_port_free(host: str, port: int, timeout: float = 60.0) -> None:
    """A replaced pod on the host network may still hold the port for a moment: wait for it, with a deadline."""
    end = time.monotonic() + timeout
    while True:
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                s.bind((host, port))
                return
            except OSError:
                if time.monotonic() > end:
                    raise IndexSetupError(f"{host}:{port} is taken by another process") from None
        time.sleep(0.2)


def drain_seconds(text: str) -> float:
    """``ONCOLOGY_INDEX_DRAIN_SECONDS``: seconds to keep answering after SIGTERM (0: exit at once)."""
    try:
        seconds = float(text)
    except ValueError:
        seconds = -1.0
    if not 0 <= seconds <= 3600:
        raise IndexSetupError(f"ONCOLOGY_INDEX_DRAIN_SECONDS must be seconds from 0 to 3600, not {text!r}")
    return seconds


def on_sigterm(drain: float) -> None:
    """SIGTERM: exit at once, or after ``drain`` seconds more of answering (a second SIGTERM: at once).  PID 1 in a
    container gets no default action for it."""
    def first(*_: Any) -> None:
        if drain <= 0:
            os._exit(0)
        # (printed: once pypiserver runs, its logging setup hides INFO lines)
        print(f"oncology-index: SIGTERM: answering for {drain:.1f}s more while the Service stops sending requests "
              "here, then exiting", file=sys.stderr, flush=True)
        signal.signal(signal.SIGTERM, lambda *_: os._exit(0))
        timer = threading.Timer(drain, os._exit, (0,))
        timer.daemon = True
        timer.start()

    signal.signal(signal.SIGTERM, first)


def main() -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s %(message)s", stream=sys.stderr)
    signal.signal(signal.SIGTERM, lambda *_: os._exit(0))  # until the drain setting is read
    try:
        env = os.environ
        on_sigterm(drain_seconds(env.get("ONCOLOGY_INDEX_DRAIN_SECONDS") or "0"))
        bucket, prefix = parse_store(env.get("ONCOLOGY_INDEX_STORE", ""))
        user = env.get("ONCOLOGY_INDEX_USER") or "oncology"
        password = env.get("ONCOLOGY_INDEX_PASSWORD", "")
        if not password:
            raise IndexSetupError("ONCOLOGY_INDEX_PASSWORD is not set: the index never runs without a password")
        host = env.get("ONCOLOGY_INDEX_HOST") or "127.0.0.1"
        port_text = env.get("ONCOLOGY_INDEX_PORT") or "8082"
        if not port_text.isdigit() or not 0 < int(port_text) < 65536:
            raise IndexSetupError(f"ONCOLOGY_INDEX_PORT must be a TCP port, not {port_text!r}")
        port = int(port_text)
        state = Path(env.get("ONCOLOGY_INDEX_CACHE") or "/tmp/oncology-index")
        cache = state / "packages"
        cache.mkdir(parents=True, exist_ok=True)
        htpasswd = state / "htpasswd"
        write_htpasswd(htpasswd, user, password)

        from botocore.exceptions import BotoCoreError, ClientError
        from pypiserver import config as ps_config
        from pypiserver.__main__ import main as pypiserver_main
        from pypiserver.backend import BackendProxy

        s3 = _s3_client()
        backend_class = make_backend_class()
        probe = backend_class(ps_config.Config.from_args(["run", str(cache)]), s3, bucket, prefix, cache)
        t0 = time.monotonic()
        try:
            probe.sync()  # the cache rebuilt from the record; S3 must answer now
        except (BotoCoreError, ClientError) as exc:
            raise IndexSetupError(f"cannot read s3://{bucket}/{prefix}: {_why(exc)}") from None
        log.info("cache filled from s3://%s/%s in %.2fs: %d file(s)", bucket, prefix, time.monotonic() - t0,
                 sum(1 for p in cache.iterdir() if not p.name.startswith(".")))

        def get_backend(config: Any, arg: str) -> Any:
            return BackendProxy(backend_class(config, s3, bucket, prefix, cache))

        ps_config.RunConfig.get_backend = get_backend  # pypiserver 2.x has no backend plug-in hook yet
        wait_port_free(host, port)
        pypiserver_main([
            "run", "--host", host, "--port", str(port), "--passwords", str(htpasswd),
            "--authenticate", "update,download,list", "--server", "auto", "--disable-fallback",
            "--hash-algo", "sha256", str(cache),
        ])
    except IndexSetupError as exc:
        print(f"oncology-index: error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
