"""DuckDB over the store: a connection that reads the store's Hive-partitioned files where they are.

A local store is read from its folder; an S3 store through DuckDB's httpfs extension, loaded from the
``duckdb-ext-httpfs`` package (signed, no download at run time), with the endpoint and credentials of
the standard AWS variables, as boto3 reads them.  Small on purpose: the monitoring data plane's query
layer can take it over.
"""

from __future__ import annotations

import importlib.util
import os
import tempfile
from pathlib import Path
from urllib.parse import urlparse

import duckdb

from oncology_model.errors import StoreError
from oncology_model.storage import LocalStore, S3Store, Store


def _httpfs() -> Path:
    spec = importlib.util.find_spec("duckdb")
    if spec is None or spec.origin is None:  # pragma: no cover - duckdb is imported above
        raise StoreError("duckdb is not installed")
    site = Path(spec.origin).parents[1]
    found = sorted(site.glob(f"duckdb_ext/extensions/v{duckdb.__version__}/*/httpfs.duckdb_extension"))
    if not found:
        raise StoreError(f"reading an s3:// store with DuckDB needs duckdb-ext-httpfs for DuckDB {duckdb.__version__}")
    return found[0]


def _quote(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


def connect(store: Store) -> tuple[duckdb.DuckDBPyConnection, str]:
    """A connection (UTC, no extension downloads) and the base under which the store's keys are read."""
    con = duckdb.connect(config={
        "autoinstall_known_extensions": False, "autoload_known_extensions": False,
        # an in-memory database spills to ./.tmp by default: the working folder may be read-only (a container)
        "temp_directory": os.path.join(tempfile.gettempdir(), "oncology-duckdb"),
    })
    con.execute("SET TimeZone = 'UTC'")
    con.execute("SET enable_progress_bar = false")  # it would print into the command's output
    if isinstance(store, LocalStore):
        return con, str(store.root)
    if isinstance(store, S3Store):
        con.execute(f"LOAD {_quote(str(_httpfs()))}")
        endpoint = os.environ.get("AWS_ENDPOINT_URL") or os.environ.get("AWS_ENDPOINT_URL_S3")
        options = [
            f"KEY_ID {_quote(os.environ.get('AWS_ACCESS_KEY_ID', ''))}",
            f"SECRET {_quote(os.environ.get('AWS_SECRET_ACCESS_KEY', ''))}",
            f"REGION {_quote(os.environ.get('AWS_DEFAULT_REGION') or os.environ.get('AWS_REGION') or 'us-east-1')}",
        ]
        if endpoint:
            parsed = urlparse(endpoint)
            options += [f"ENDPOINT {_quote(parsed.netloc)}", "URL_STYLE 'path'",
                        f"USE_SSL {'true' if parsed.scheme == 'https' else 'false'}"]
        con.execute(f"CREATE SECRET store (TYPE s3, {', '.join(options)})")
        return con, store.uri
    raise StoreError(f"{store}: DuckDB reads local and S3 stores only")


def has_files(store: Store, prefix: str, suffix: str) -> bool:
    """Whether any key under ``prefix/`` ends with ``suffix`` (DuckDB refuses a glob that matches nothing)."""
    return any(key.endswith(suffix) for key in store.list(prefix.rstrip("/") + "/"))
