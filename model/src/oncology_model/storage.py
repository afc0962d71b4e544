"""Object storage behind one interface: a local folder (the default) or S3.

Store URIs: a path, ``file:///path``, or ``s3://bucket/prefix``.  S3 endpoint and credentials come
from the standard AWS settings (``AWS_ENDPOINT_URL``, ``AWS_ACCESS_KEY_ID``,
``AWS_SECRET_ACCESS_KEY``, ``AWS_DEFAULT_REGION``...), so the same code runs against AWS S3, MinIO
or SeaweedFS.  boto3 is imported only when an ``s3://`` URI is used (``pip install
oncology-model[s3]``).

`Store.publish` writes a group of files so that they become visible together: the local backend
writes into a staging folder and renames it into place; the S3 backend claims the group, uploads and
verifies every file, then creates the commit file last.  Readers treat a group without its commit
file as absent.  Two writers of one group never mix their files: one of them gets `ConflictError`.

Concurrent writers of one object use `Store.read_tagged` and `Store.swap` (compare-and-swap): a
local exclusive lock around compare and atomic rename, or S3 conditional writes (``If-Match`` on the
ETag, ``If-None-Match: *`` to create).  An S3 server that ignores conditional writes is detected at
the first conditional write and refused with `StoreError` rather than raced.
"""

from __future__ import annotations

import base64
import contextlib
import errno
import fcntl
import hashlib
import os
import shutil
import uuid
from abc import ABC, abstractmethod
from collections.abc import Mapping
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

from oncology_model.errors import ConflictError, NotFoundError, StoreError, StoreUnavailable

#: Hidden claim object of a group being published on S3: holds the commit file's bytes.
CLAIM = ".claim"


class Store(ABC):
    """A flat key/value object store; keys use ``/`` as separator."""

    uri: str

    @abstractmethod
    def read(self, key: str) -> bytes:
        """The object's bytes; `NotFoundError` if absent."""

    @abstractmethod
    def write(self, key: str, data: bytes) -> None:
        """Replace an object as a whole: readers see the old or the new bytes, never a mix."""

    @abstractmethod
    def list(self, prefix: str) -> list[str]:
        """Every key under ``prefix`` (which should end with ``/``), sorted."""

    @abstractmethod
    def exists(self, key: str) -> bool: ...

    @abstractmethod
    def _create(self, key: str, data: bytes) -> bool:
        """Write ``key`` only if it does not exist yet, atomically; False if it already existed."""

    def create(self, key: str, data: bytes) -> bool:
        """Write an object once: True if it was created now, False if it already held these bytes.

        Refused with `ConflictError` (a `RegistryError`) if it already holds other bytes: a
        written-once object is immutable.  Safe under concurrency: of two writers, exactly one creates
        it (a local exclusive link; on S3 a conditional write, ``If-None-Match: *``).
        """
        if self._create(key, data):
            return True
        if self.read(key) != data:
            raise ConflictError(f"{self.uri}/{key} already exists with other content and cannot be changed")
        return False

    @abstractmethod
    def read_tagged(self, key: str) -> tuple[bytes, str]:
        """The object's bytes and a tag of this state of it, for `swap`; `NotFoundError` if absent."""

    @abstractmethod
    def swap(self, key: str, data: bytes, expected: str | None) -> bool:
        """Replace ``key`` with ``data`` only if it is unchanged since `read_tagged` returned ``expected``.

        ``expected=None`` creates the object only if it does not exist.  Returns False, writing
        nothing, if another writer changed (or created) it in between: read it again and retry.
        Atomic under concurrency: locally an exclusive lock (``flock``) around the comparison and an
        atomic rename; on S3 a conditional write (``If-Match: <ETag>`` / ``If-None-Match: *``).
        """

    @abstractmethod
    def publish(self, prefix: str, files: Mapping[str, bytes], commit: str) -> None:
        """Write ``files`` under ``prefix/``, ``commit`` last, so the group appears complete or not at all.

        Refused with `ConflictError` (a `RegistryError`) if ``prefix/commit`` already exists (a
        published group is immutable) or if another writer is publishing other files under
        ``prefix/``: of two concurrent publishers of one group, one wins and the other's files never
        appear in it.  A `StoreError` (the store failed halfway) leaves no visible group.
        """

    def check_writable(self) -> None:
        """Fail now, before a long job, if this store cannot be written; `StoreError` says why."""
        self.write(".write-check", b"oncology can write here\n")  # hidden: never listed as a model

    def read_dir(self, prefix: str) -> dict[str, bytes]:
        """The files directly under ``prefix/``, by name (hidden ones, starting with ``.``, left out)."""
        prefix = prefix.rstrip("/") + "/"
        names = [key[len(prefix):] for key in self.list(prefix)]
        return {name: self.read(prefix + name) for name in names if "/" not in name and not name.startswith(".")}

    def __str__(self) -> str:
        return self.uri


class LocalStore(Store):
    """A folder on the local file system."""

    def __init__(self, root: Path) -> None:
        self.root = root.resolve()
        self.uri = str(self.root)

    def _path(self, key: str) -> Path:
        path = (self.root / key).resolve()
        if path != self.root and self.root not in path.parents:
            raise StoreError(f"key {key!r} escapes the store {self.root}")
        return path

    def read(self, key: str) -> bytes:
        try:
            return self._path(key).read_bytes()
        except FileNotFoundError:
            raise NotFoundError(f"{self.root / key}: not found") from None
        except OSError as exc:
            raise StoreError(f"{self.root / key}: cannot read ({exc.strerror})") from exc

    def write(self, key: str, data: bytes) -> None:
        path = self._path(key)
        try:
            os.replace(_staged(path, data), path)
        except OSError as exc:
            raise StoreError(f"{path}: cannot write ({exc.strerror})") from exc

    def list(self, prefix: str) -> list[str]:
        base = self._path(prefix.rstrip("/")) if prefix.strip("/") else self.root
        if not base.is_dir():
            return []
        keys = [
            p.relative_to(self.root).as_posix()
            for p in base.rglob("*")
            if p.is_file() and not any(part.startswith(".") for part in p.relative_to(self.root).parts)
        ]
        return sorted(k for k in keys if k.startswith(prefix))

    def exists(self, key: str) -> bool:
        return self._path(key).is_file()

    def _create(self, key: str, data: bytes) -> bool:
        path = self._path(key)
        try:
            tmp = _staged(path, data)
            try:
                os.link(tmp, path)  # atomic, and fails if the name exists: complete or absent, never replaced
            except FileExistsError:
                return False
            finally:
                tmp.unlink(missing_ok=True)
        except OSError as exc:
            raise StoreError(f"{path}: cannot write ({exc.strerror})") from exc
        return True

    def read_tagged(self, key: str) -> tuple[bytes, str]:
        data = self.read(key)
        return data, hashlib.sha256(data).hexdigest()

    def swap(self, key: str, data: bytes, expected: str | None) -> bool:
        path = self._path(key)
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            # Every swapper of this key holds this lock from the comparison to the rename; readers
            # need no lock (a rename replaces the file whole).
            with open(path.with_name(f".{path.name}.lock"), "a+b") as lock:
                fcntl.flock(lock.fileno(), fcntl.LOCK_EX)
                try:
                    current = hashlib.sha256(path.read_bytes()).hexdigest()
                except FileNotFoundError:
                    current = None
                if current != expected:
                    return False
                os.replace(_staged(path, data), path)
        except OSError as exc:
            raise StoreError(f"{path}: cannot write ({exc.strerror})") from exc
        return True

    def publish(self, prefix: str, files: Mapping[str, bytes], commit: str) -> None:
        target = self._path(prefix.rstrip("/"))
        if (target / commit).exists():
            raise ConflictError(f"{target} is already published and cannot be changed")
        staging = self.root / ".staging" / uuid.uuid4().hex
        try:
            staging.mkdir(parents=True)
            for name in sorted(files, key=lambda n: n == commit):  # the commit file last
                _write_synced(staging / name, files[name])
            for name, data in files.items():  # verify what reached the disk
                if (staging / name).read_bytes() != data:
                    raise StoreError(f"{staging / name}: read-back differs from what was written")
            target.parent.mkdir(parents=True, exist_ok=True)
            with contextlib.suppress(OSError):  # an empty leftover folder; not empty: rename refuses below
                target.rmdir()
            try:
                os.rename(staging, target)  # atomic, and refused onto a non-empty folder: the version appears whole
            except OSError as exc:
                if exc.errno in {errno.ENOTEMPTY, errno.EEXIST}:  # another writer's version got there first
                    raise ConflictError(f"{target} already exists and cannot be changed") from exc
                raise
        except OSError as exc:
            raise StoreError(f"cannot publish to {target}: {exc.strerror}") from exc
        finally:
            shutil.rmtree(staging, ignore_errors=True)


def _staged(path: Path, data: bytes) -> Path:
    """``data`` written and synced to a hidden temporary file beside ``path`` (its folder made if need be)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex}.tmp")
    _write_synced(tmp, data)
    return tmp


def _write_synced(path: Path, data: bytes) -> None:
    with open(path, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())


class S3Store(Store):
    """A bucket and key prefix on an S3-compatible server."""

    def __init__(self, bucket: str, prefix: str = "", client: Any = None) -> None:
        self.bucket = bucket
        self.prefix = prefix.strip("/")
        self.uri = f"s3://{bucket}/{self.prefix}".rstrip("/")
        self._client = client or s3_client()
        self._conditional_checked = False

    def _key(self, key: str) -> str:
        return f"{self.prefix}/{key}" if self.prefix else key

    def _fail(self, exc: Exception, action: str, key: str) -> StoreError:
        return _s3_error(exc, f"{action} s3://{self.bucket}/{self._key(key)}")

    def read(self, key: str) -> bytes:
        try:
            body: bytes = self._client.get_object(Bucket=self.bucket, Key=self._key(key))["Body"].read()
            return body
        except Exception as exc:  # botocore's errors are built at run time: map them below
            raise self._fail(exc, "cannot read", key) from exc

    def write(self, key: str, data: bytes, **extra: Any) -> None:
        try:
            md5 = hashlib.md5(data).digest()  # noqa: S324 - integrity check, not security
            self._client.put_object(
                Bucket=self.bucket, Key=self._key(key), Body=data, ContentMD5=base64.b64encode(md5).decode(), **extra
            )
        except Exception as exc:
            raise self._fail(exc, "cannot write", key) from exc

    def list(self, prefix: str) -> list[str]:
        keys: list[str] = []
        try:
            paginator = self._client.get_paginator("list_objects_v2")
            for page in paginator.paginate(Bucket=self.bucket, Prefix=self._key(prefix)):
                keys.extend(obj["Key"] for obj in page.get("Contents", []))
        except Exception as exc:
            raise self._fail(exc, "cannot list", prefix) from exc
        strip = len(self.prefix) + 1 if self.prefix else 0
        return sorted(k[strip:] for k in keys)

    def exists(self, key: str) -> bool:
        try:
            self._client.head_object(Bucket=self.bucket, Key=self._key(key))
            return True
        except Exception as exc:
            if _s3_code(exc) in {"404", "NoSuchKey", "NotFound"}:
                return False
            raise self._fail(exc, "cannot check", key) from exc

    def _conditional_write(self, key: str, data: bytes, **condition: str) -> bool:
        """`write` with a condition (``IfNoneMatch``/``IfMatch``); False if the server refused it."""
        self._require_conditional_writes()
        try:
            self.write(key, data, **condition)
        except StoreError as exc:
            if isinstance(exc.__cause__, Exception) and _s3_code(exc.__cause__) in _PRECONDITION_CODES:
                return False
            raise
        return True

    def _require_conditional_writes(self) -> None:
        """Probe once that the server refuses a failed condition; `StoreError` if it ignores them.

        A server that ignores ``If-None-Match``/``If-Match`` would silently let two writers
        overwrite each other: refuse to work with it rather than race.
        """
        if self._conditional_checked:
            return
        key = ".conditional-write-probe"  # hidden, like the claims
        refused = []
        for condition in ({"IfNoneMatch": "*"}, {"IfNoneMatch": "*"}, {"IfMatch": f'"{"0" * 32}"'}):
            try:
                self.write(key, b"probe", **condition)
                refused.append(False)
            except StoreError as exc:
                if not (isinstance(exc.__cause__, Exception) and _s3_code(exc.__cause__) in _PRECONDITION_CODES):
                    raise
                refused.append(True)
        # The first create may or may not find the probe; the second must be refused, and so must a
        # replacement that names an ETag the object does not have.
        if not (refused[1] and refused[2]):
            header = "If-None-Match: *" if not refused[1] else "If-Match"
            raise StoreError(
                f"{self.uri}: the S3 server does not honour conditional writes ({header} was ignored); "
                "concurrent writers could overwrite each other, so this store refuses to move aliases "
                "or publish versions on it"
            )
        self._conditional_checked = True

    def check_writable(self) -> None:
        super().check_writable()
        self._require_conditional_writes()  # publishing and alias moves need them

    def _create(self, key: str, data: bytes) -> bool:
        return self._conditional_write(key, data, IfNoneMatch="*")

    def read_tagged(self, key: str) -> tuple[bytes, str]:
        try:
            response = self._client.get_object(Bucket=self.bucket, Key=self._key(key))
            body: bytes = response["Body"].read()
        except Exception as exc:
            raise self._fail(exc, "cannot read", key) from exc
        return body, str(response["ETag"])

    def swap(self, key: str, data: bytes, expected: str | None) -> bool:
        if expected is None:
            return self._conditional_write(key, data, IfNoneMatch="*")
        return self._conditional_write(key, data, IfMatch=expected)

    def publish(self, prefix: str, files: Mapping[str, bytes], commit: str) -> None:
        """Claim, upload, read back, commit.

        S3 has no rename, so the files go straight to their keys.  To keep two writers from mixing
        their files, the group is first claimed: ``prefix/.claim`` is created with ``If-None-Match:
        *`` and holds the commit file's bytes (a manifest names every file's hash).  Only the claim's
        winner uploads; a writer that finds another's claim gets `ConflictError` before it wrote
        anything, while the same files again (a retry) find their own claim and go on.  Each file is
        uploaded with its Content-MD5 (the server refuses bytes changed in transit) and read back;
        then the commit file is created, conditionally, last.  A writer that dies after its claim
        leaves an invisible group that nobody else can take (the registry moves on to the next
        version).
        """
        prefix = prefix.rstrip("/")
        where = f"{self.uri}/{prefix}"
        if self.exists(f"{prefix}/{commit}"):
            raise ConflictError(f"{where} is already published and cannot be changed")
        try:
            self.create(f"{prefix}/{CLAIM}", files[commit])
        except ConflictError:
            raise ConflictError(f"{where} is being published (or was abandoned) by another writer") from None
        for name, data in files.items():
            if name != commit:
                self.write(f"{prefix}/{name}", data)  # Content-MD5: the server verifies each upload
        for name, data in files.items():  # and we verify that every file is there before the commit
            if name != commit and self.read(f"{prefix}/{name}") != data:
                raise StoreError(f"{where}/{name}: read-back differs from what was written")
        self.create(f"{prefix}/{commit}", files[commit])  # already there with these bytes: our own retry


_PRECONDITION_CODES = {"PreconditionFailed", "412", "ConditionalRequestConflict", "409"}


def s3_client(endpoint_url: str | None = None, **config: Any) -> Any:
    """The boto3 S3 client an `S3Store` uses: credentials, region and endpoint from the environment
    (``AWS_*``, as boto3 reads them) unless ``endpoint_url`` is given; ``config`` adds or overrides
    botocore ``Config`` options (retries, timeouts, checksums)."""
    try:
        import boto3
        from botocore.config import Config
    except ImportError as exc:  # pragma: no cover - depends on the installation
        raise StoreError("s3:// stores need boto3: pip install 'oncology-model[s3]'") from exc
    options = {"retries": {"max_attempts": 3, "mode": "standard"}, "connect_timeout": 5, "read_timeout": 30, **config}
    return boto3.session.Session().client("s3", endpoint_url=endpoint_url, config=Config(**options))


def _s3_code(exc: Exception) -> str:
    response = getattr(exc, "response", None)
    if isinstance(response, dict):
        return str(response.get("Error", {}).get("Code", ""))
    return ""


def _s3_error(exc: Exception, what: str) -> StoreError:
    code = _s3_code(exc)
    endpoint = os.environ.get("AWS_ENDPOINT_URL", "the default AWS endpoint")
    if code in {"NoSuchKey", "404", "NotFound"}:
        return NotFoundError(f"{what}: not found")
    if code == "NoSuchBucket":
        return StoreError(f"{what}: the bucket does not exist")
    if code in {"SignatureDoesNotMatch", "InvalidAccessKeyId", "AccessDenied", "403"}:
        return StoreError(f"{what}: S3 refused the credentials ({code}); check AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY")
    name = type(exc).__name__
    if name in {"EndpointConnectionError", "ConnectTimeoutError", "ConnectionClosedError", "ReadTimeoutError"}:
        return StoreUnavailable(f"{what}: cannot reach the S3 server at {endpoint} ({name}); is it running?")
    if name == "NoCredentialsError":
        return StoreError(f"{what}: no S3 credentials; set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY")
    return StoreError(f"{what}: {name}: {exc}")


def open_store(uri: str | Path) -> Store:
    """The store at ``uri``: a path, ``file://...`` or ``s3://bucket/prefix``."""
    text = str(uri)
    parsed = urlparse(text)
    if parsed.scheme == "s3":
        if not parsed.netloc:
            raise StoreError(f"{text}: an S3 URI needs a bucket: s3://bucket/prefix")
        return S3Store(parsed.netloc, parsed.path)
    if parsed.scheme == "file":
        return LocalStore(Path(parsed.path))
    if parsed.scheme in {"", }:
        return LocalStore(Path(text))
    raise StoreError(f"{text}: unsupported store URI; use a path, file://... or s3://bucket/prefix")


def open_existing_store(uri: str | Path) -> Store:
    """The store at ``uri`` for reading: a local folder that does not exist is an error, not an empty store."""
    store = open_store(uri)
    if isinstance(store, LocalStore) and not store.root.is_dir():
        raise NotFoundError(f"{store.root}: no such store folder (a mistyped --store or ONCOLOGY_STORE?)")
    return store


def read_uri(uri: str | Path) -> bytes:
    """The bytes of one object named by a URI: a path, ``file://...`` or ``s3://bucket/key``."""
    text = str(uri)
    parsed = urlparse(text)
    if parsed.scheme == "s3":
        return S3Store(parsed.netloc).read(parsed.path.lstrip("/"))
    path = Path(parsed.path if parsed.scheme == "file" else text)
    try:
        return path.read_bytes()
    except FileNotFoundError:
        raise NotFoundError(f"{path}: no such file") from None
    except OSError as exc:
        raise StoreError(f"{path}: cannot read ({exc.strerror})") from exc
