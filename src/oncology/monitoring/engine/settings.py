"""Which engine runs the monitoring queries, and what a corrupt object does (read by entry points only)."""

from __future__ import annotations

from typing import Literal

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict


class EngineSettings(BaseSettings):
    """The monitoring data plane: DuckDB embedded (the default) or a Dask cluster."""

    model_config = SettingsConfigDict(env_prefix="ONCOLOGY_", extra="ignore")

    engine: Literal["duckdb", "dask"] = Field(
        "duckdb", description="Query engine: duckdb (embedded, this process) or dask (the cluster at `scheduler`)."
    )
    scheduler: str | None = Field(
        None, description="Dask scheduler address (tcp://host:8786) for engine dask; unset: a local cluster."
    )
    scheduler_timeout: float = Field(
        10.0, gt=0, description="Seconds to wait for the Dask scheduler (engine dask) to answer before giving up."
    )
    on_corrupt: Literal["skip", "refuse"] = Field(
        "skip",
        description="A log object that cannot be read whole (a gzip cut short): skip it, named in a warning, "
        "or refuse to compute anything.",
    )
    duckdb_threads: int | None = Field(None, ge=1, description="DuckDB threads per query; unset: one per core.")
    duckdb_memory_limit: str | None = Field(
        None, description="DuckDB memory limit per query (e.g. 1GB); past it DuckDB spills to disk. Unset: DuckDB's default."
    )
