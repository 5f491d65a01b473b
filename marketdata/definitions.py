"""The Dagster entry point (workspace.yaml: python_module marketdata.definitions, attribute defs).

Each domain package under ``marketdata.defs`` exposes its own ``defs`` (assets, checks, jobs,
schedules, sensors); this module merges them and binds the resources, declared once in
``marketdata.defs.resources.resource_defs()``, by key, and the default executor (in-process). A new domain adds one line here.
"""

from __future__ import annotations

import dagster as dg

from .defs import audit, backfill, bars, export, ingest, repair
from .defs.resources import resource_defs

defs: dg.Definitions = dg.Definitions.merge(
    bars.defs,
    backfill.defs,
    repair.defs,
    ingest.defs,
    audit.defs,
    export.defs,
    # Asset runs (a UI materialization, a backfill's range runs) execute their steps in the run
    # worker: bars_1m and its checks run one after another anyway, and a step process per step
    # cost about 5 s of start-up each (three per run) in `marketdata bench --bars --daemon`.
    dg.Definitions(resources=resource_defs(), executor=dg.in_process_executor),
)
