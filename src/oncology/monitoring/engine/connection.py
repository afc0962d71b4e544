"""A DuckDB connection that reads a store: a local folder, or an S3 bucket with the store's own S3 settings.

`Location` is what a connection needs to know of a store (a plain, picklable value: a Dask task carries
it to its worker); `location` derives it from an open `Store`; `connect` opens an in-memory DuckDB
connection for it.  For S3 the ``httpfs`` extension is loaded from the file that the
``duckdb-ext-httpfs`` package installs (signature checks on); nothing is ever downloaded at run time.
"""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlparse

from oncology_model.errors import OncologyError
from oncology_model.storage import LocalStore, S3Store, Store

if TYPE_CHECKING:
    import duckdb

DUCKDB_VERSION = "1.4.4"
#: Characters DuckDB reads as a glob pattern in a file name: a store whose path holds one cannot be read by name.
_GLOB = frozenset("*?[]{}")


class EngineError(OncologyError):
    """The query engine cannot read the store: a missing extension, a store it cannot name, a failed query."""


@dataclass(frozen=True)
class Location:
    """Where a store's objects are, as DuckDB names them: ``root`` is a folder or ``s3://bucket/prefix``."""

    root: str
    endpoint: str | None = None
    region: str | None = None
    use_ssl: bool = True
    key_id: str | None = field(default=None, repr=False)
    secret: str | None = field(default=None, repr=False)
    session_token: str | None = field(default=None, repr=False)

    @property
    def is_s3(self) -> bool:
        return self.root.startswith("s3://")

    def url(self, key: str) -> str:
        """The name DuckDB reads the object ``key`` by."""
        return f"{self.root.rstrip('/')}/{key}"


def location(store: Store) -> Location:
    """The `Location` of ``store``; for S3 the endpoint, region and credentials its boto3 client uses."""
    if isinstance(store, LocalStore):
        root = str(store.root.resolve())
        if _GLOB & set(root):
            raise EngineError(f"{root}: the store's path holds a glob character ({''.join(sorted(_GLOB))}), "
                              "which DuckDB would read as a pattern; move the store")
        return Location(root)
    if isinstance(store, S3Store):
        client: Any = store._client  # noqa: SLF001 - the store's own settings, not a second copy of them
        credentials = client._request_signer._credentials  # noqa: SLF001 - botocore keeps them here
        frozen = credentials.get_frozen_credentials() if credentials is not None else None
        endpoint = urlparse(client.meta.endpoint_url)
        return Location(
            root=store.uri,
            endpoint=endpoint.netloc,
            region=client.meta.region_name or "us-east-1",
            use_ssl=endpoint.scheme == "https",
            key_id=frozen.access_key if frozen else None,
            secret=frozen.secret_key if frozen else None,
            session_token=frozen.token if frozen else None,
        )
    raise EngineError(f"{store}: the query engine reads local folders and S3 stores only")


@cache
def httpfs_extension() -> Path:
    """The ``httpfs`` extension file installed by the ``duckdb-ext-httpfs`` package, for this DuckDB."""
    spec = importlib.util.find_spec("duckdb")
    if spec is None or spec.origin is None:
        raise EngineError("DuckDB is not installed: pip install 'oncology[monitoring]'")
    site = Path(spec.origin).parents[1]
    found = sorted(site.glob(f"duckdb_ext/extensions/v{DUCKDB_VERSION}/*/httpfs.duckdb_extension"))
    if not found:
        raise EngineError(
            f"no httpfs extension for DuckDB {DUCKDB_VERSION} under {site}/duckdb_ext: install the package "
            f"duckdb-ext-httpfs of the same version (S3 stores need it; it is never downloaded at run time)"
        )
    return found[0]


def connect(where: Location, threads: int | None = None, memory_limit: str | None = None) -> duckdb.DuckDBPyConnection:
    """An in-memory DuckDB connection that reads ``where``: UTC session time zone, no extension downloads.

    ``threads`` and ``memory_limit`` (e.g. ``"1GB"``) bound what one query takes; DuckDB spills to a
    temporary folder past the memory limit.
    """
    import duckdb

    if duckdb.__version__ != DUCKDB_VERSION:
        raise EngineError(f"DuckDB {duckdb.__version__} is installed; the monitoring engine needs {DUCKDB_VERSION}")
    config: dict[str, Any] = {"autoinstall_known_extensions": False, "autoload_known_extensions": False}
    if threads is not None:
        config["threads"] = threads
    if memory_limit is not None:
        config["memory_limit"] = memory_limit
    con = duckdb.connect(config=config)
    con.execute("SET TimeZone = 'UTC'")
    con.execute("SET enable_progress_bar = false")  # it would print into a command's output (a query past 2 s)
    if where.is_s3:
        con.execute(f"LOAD '{httpfs_extension()}'")
        options = ["TYPE s3", "URL_STYLE 'path'", f"USE_SSL {str(where.use_ssl).lower()}",
                   f"REGION {_literal(where.region or 'us-east-1')}"]
        if where.endpoint:
            options.append(f"ENDPOINT {_literal(where.endpoint)}")
        if where.key_id and where.secret:
            options += [f"KEY_ID {_literal(where.key_id)}", f"SECRET {_literal(where.secret)}"]
        if where.session_token:
            options.append(f"SESSION_TOKEN {_literal(where.session_token)}")
        con.execute(f"CREATE SECRET store ({', '.join(options)})")
    return con


def _literal(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"
