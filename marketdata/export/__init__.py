"""Export of bars and ticks to Parquet (venue / symbol / day partitions) with a manifest.

    parquet.py       export(): incremental partitioned writes; read_export() reads them back
    manifest.py      the manifest: query range, completeness, gaps, build versions, day prints
    fingerprint.py   per-day content fingerprints computed in ClickHouse
    cli.py           `marketdata export bars|ticks ...`
"""

from .parquet import ExportResult, export, read_export

__all__ = ["ExportResult", "export", "read_export"]
