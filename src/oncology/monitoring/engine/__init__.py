"""The monitoring data plane: the queries over the store's prediction log, on DuckDB (embedded, the default)
or on a Dask cluster, defined once.

Nothing here is imported by the web service, and importing this package loads no engine: DuckDB and Dask
load when a query runs (``pip install 'oncology[monitoring]'``, ``'oncology[dask]'``).

The API (each name in the module after the colon):

- `connection`: ``location(store) -> Location`` (a local folder, or ``s3://bucket/prefix`` with the S3
  endpoint, region and credentials of the store's own boto3 client; picklable, so a Dask task carries
  it), ``connect(location, threads=None, memory_limit=None) -> duckdb.DuckDBPyConnection`` (UTC time
  zone; for S3 the ``httpfs`` extension loaded from the ``duckdb-ext-httpfs`` package's file, never
  downloaded), ``Location.url(key)`` (the name DuckDB reads an object by).
- `layout`: where the log is (``monitoring/predictions/date=YYYY-MM-DD/*.jsonl.gz``, and compacted
  ``monitoring/predictions-parquet/date=YYYY-MM-DD/part-NNNNN.parquet`` with its manifest);
  ``days(since, until)`` (the partitions a window reads) and ``plan(store, days) -> Plan`` (the
  Parquet parts and the JSON Lines objects no manifest replaced: each prediction is read once).
- `queries`: the SQL, once: ``records(jsonl_urls, parquet_urls)`` (every line or row, typed, with
  ``valid``), ``predictions(jsonl_urls, parquet_urls)`` (the valid records: ``date, ts, request_id,
  model_version, route, <nine features>, probability, prediction, decision, malignant, file``),
  ``partials(..., version)`` (drift's additive counts per object and model version; the histograms of
  ``version`` only) and ``lines(jsonl, parquet)`` (per object its lines and decompressed bytes, without
  parsing the JSON: the integrity check's figures), ``outcomes(urls)`` and ``outcome_join()`` (each
  outcome with the predictions of its request id).
- `table`: the compacted Parquet table's schema, once (``COLUMNS``), and what reporting tools read it with:
  ``athena_ddl(location)`` and ``quicksight_dataset(data_source_arn)``.
- `relations`: ``predictions(store, since=None, until=None) -> Predictions``: a DuckDB connection with
  a view ``predictions`` over the whole log (or the partitions of a window, filtered by ``ts``), every
  object checked whole first (`queries.lines`); ``Predictions.con.sql("select ... from predictions")``;
  ``with_outcomes(store, view)`` adds the table ``outcomes`` (one record per request id) for
  `queries.outcome_join`, the join the outcome check and the retraining dataset run.
- `run`: ``drift_counts(store, since, until, version, edges, settings) -> LoggedCounts`` (on the engine
  ``settings`` names), ``partial_counts`` (the unit of work one engine task runs) and ``line_counts``.
- `cluster`: the Dask engine, the same partial query fanned out over a Dask cluster, one task per object.
- `settings`: ``EngineSettings`` (``ONCOLOGY_ENGINE``, ``ONCOLOGY_SCHEDULER``, ``ONCOLOGY_SCHEDULER_TIMEOUT``,
  ``ONCOLOGY_ON_CORRUPT``, ``ONCOLOGY_DUCKDB_THREADS``, ``ONCOLOGY_DUCKDB_MEMORY_LIMIT``).

Fetching a ``TIMESTAMPTZ`` column into Python objects needs pytz, which is not installed: select
``ts::VARCHAR`` or epoch milliseconds, or fetch Arrow.
"""
