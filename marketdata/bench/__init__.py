"""The measuring tools: every bench of the platform, and the driver of a real Dagster deployment.

``marketdata bench`` dispatches here (cli.py); each module also runs as ``python -m``:

- ``platform``: ``marketdata bench``, simulator -> connectors -> Redis -> persist -> ClickHouse;
- ``books``: ``marketdata bench --books``, order-book resync time per venue;
- ``backfill``: ``marketdata bench --bars``, a bars_1m backfill through Dagster;
- ``read``: ``marketdata bench --read``, a year of bars read into polars and exported to Parquet;
- ``persist``: ``python -m marketdata.bench.persist``, one persist worker's throughput;
- ``simulator_load``: ``python -m marketdata.bench.simulator_load``, the simulator's CPU at a rate;
- ``simulator_serve``: ``python -m marketdata.bench.simulator_serve``, the simulator's own CPU per trade and send lag with every venue drained by a raw-socket client;
- ``dagster_service``: dagster-webserver + dagster-daemon as child processes, driven over GraphQL
  (the backfill bench's ``--daemon`` and the Dagster end-to-end tests).

This package and the Dagster layer (``defs/``, ``definitions.py``) are the only places that may
import dagster; the library below them never does (marketdata_tests/test_layers.py).
"""
