"""The compacted prediction log as a table for reporting tools: its schema, once, and what Athena (Glue) and
QuickSight read it with.

`COLUMNS` is the one schema: each column's name and its type in DuckDB (how compaction writes the Parquet
part), in Athena/Glue DDL, and in a QuickSight data set.  From it:

- `athena_ddl(location)`: ``CREATE EXTERNAL TABLE`` over ``monitoring/predictions-parquet/`` (Parquet,
  partitioned by the ``date=`` folders), then ``MSCK REPAIR TABLE`` to load the partitions;
- `quicksight_dataset(data_source_arn)`: the input of QuickSight's ``CreateDataSet`` for that Athena table
  (``aws quicksight create-data-set --aws-account-id ID --cli-input-json file://...``).  QuickSight's S3
  manifests read CSV, TSV, ELF/CLF, XLSX and JSON, not Parquet, so QuickSight reads this table through
  Athena: a data set over a relational table of an Athena data source, queried in place (``DIRECT_QUERY``).

``oncology monitoring predictions-ddl`` and ``oncology monitoring predictions-dataset`` print them.
Compaction writes each part with exactly these columns and types (`select_list`).  A part holds two kinds of
rows: predictions (``prediction`` benign or malignant) and failed scorings (``prediction`` = `ERROR`, the
features and the probability NULL), which a reporting tool's query of predictions leaves out with
``WHERE prediction <> 'error'``.  Parts compacted before ``arm`` and ``latency_ms`` were columns lack them
(read as the champion's, with no latency) and hold no error rows.
"""

from __future__ import annotations

from typing import Final, NamedTuple

from oncology_model.datamodel import FEATURES


class Column(NamedTuple):
    name: str
    duckdb: str
    athena: str
    quicksight: str


#: The columns of a compacted part, in file order.
COLUMNS: Final[tuple[Column, ...]] = (
    Column("ts", "TIMESTAMPTZ", "timestamp", "DATETIME"),
    Column("request_id", "VARCHAR", "string", "STRING"),
    Column("model_version", "VARCHAR", "string", "STRING"),
    Column("route", "VARCHAR", "string", "STRING"),
    *(Column(name, "TINYINT", "tinyint", "INTEGER") for name in FEATURES),
    Column("probability", "DOUBLE", "double", "DECIMAL"),
    Column("prediction", "VARCHAR", "string", "STRING"),
    Column("decision", "VARCHAR", "string", "STRING"),
    Column("arm", "VARCHAR", "string", "STRING"),  # champion, candidate (canary) or shadow (scored off the answer path)
    Column("latency_ms", "DOUBLE", "double", "DECIMAL"),  # the model's scoring time of the request (the judge's latency)
)
#: The ``prediction`` (and ``decision``) of a row that records a request the model failed to score: its nine
#: features and its probability are NULL.  Compaction keeps these rows (the release judge counts them per arm);
#: every query of predictions leaves them out (``prediction IN ('benign', 'malignant')``).
ERROR: Final = "error"
#: The partition column, from the ``date=YYYY-MM-DD`` folder (not in the files).
PARTITION: Final = Column("date", "DATE", "string", "STRING")

TABLE: Final = "oncology_predictions"
DATABASE: Final = "oncology"


def select_list() -> str:
    """The columns of a part as compaction selects them: each cast to its DuckDB type."""
    return ", ".join(f"CAST({c.name} AS {c.duckdb}) AS {c.name}" for c in COLUMNS)


def _athena_name(name: str) -> str:
    return f"`{name}`"  # every name quoted: `date` is a reserved word in Athena DDL


def athena_ddl(location: str, table: str = TABLE) -> str:
    """The Athena (Glue) DDL of the table whose parts are under ``location`` (``s3://bucket/prefix/...
    /predictions-parquet/``), and the statement that loads its partitions."""
    columns = ",\n".join(f"  {_athena_name(c.name)} {c.athena}" for c in COLUMNS)
    return (
        f"CREATE EXTERNAL TABLE IF NOT EXISTS {table} (\n{columns})\n"
        f"PARTITIONED BY ({_athena_name(PARTITION.name)} {PARTITION.athena})\n"
        "STORED AS PARQUET\n"
        f"LOCATION '{location.rstrip('/')}/'\n"
        "TBLPROPERTIES ('parquet.compression' = 'ZSTD');\n"
        f"MSCK REPAIR TABLE {table};\n"
    )


def quicksight_dataset(data_source_arn: str, database: str = DATABASE, table: str = TABLE) -> dict[str, object]:
    """The input of QuickSight's ``CreateDataSet`` (all but ``AwsAccountId``) for the Athena table ``table``
    of ``database``, read through the Athena data source ``data_source_arn``."""
    return {
        "DataSetId": table.replace("_", "-"),
        "Name": table,
        "ImportMode": "DIRECT_QUERY",
        "PhysicalTableMap": {
            "predictions": {
                "RelationalTable": {
                    "DataSourceArn": data_source_arn,
                    "Catalog": "AwsDataCatalog",
                    "Schema": database,
                    "Name": table,
                    "InputColumns": [{"Name": c.name, "Type": c.quicksight} for c in (*COLUMNS, PARTITION)],
                }
            }
        },
    }
