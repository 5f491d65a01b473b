"""``python -m marketdata.simulator ...`` (same flags as ``marketdata simulate``)."""

from .cli import main

raise SystemExit(main())
