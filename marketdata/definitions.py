"""The Dagster entry point (workspace.yaml: python_module marketdata.definitions, attribute defs).

Each domain package under ``marketdata.defs`` exposes its own ``defs`` (assets, checks, jobs,
schedules, sensors); this module merges them and binds the resources, declared once in
``marketdata.defs.resources.resource_defs()``, by key. A new domain adds one line here.
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
    dg.Definitions(resources=resource_defs()),
)
