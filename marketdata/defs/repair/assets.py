"""tick_gaps: every detected hole in a tape (ClickHouse marketdata.gaps), observed by each
gap_repair_job run so the UI plots gaps repaired, unrepairable and open over time."""

import dagster as dg

tick_gaps = dg.AssetSpec(
    "tick_gaps",
    description=("Gaps in the trade tapes (ClickHouse marketdata.gaps): where, how found, and whether "
                 "repaired (status open | repaired | unrepairable). Observed by every gap_repair_job "
                 "run: gaps repaired and left unrepairable by the run, trades recovered, hours of "
                 "bars_1m rebuilt, and the gaps per status afterwards."),
    group_name="repair",
    owners=["team:marketdata"],
    kinds={"clickhouse"},
    metadata={"dagster/table_name": "marketdata.gaps"},
)
