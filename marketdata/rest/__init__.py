"""A venue's REST API, called one way everywhere: ``client`` (the async and sync clients: weight
budget, 429/418 waits, backoff, ``RestError``) and ``pager`` (trade history page by page, by time
or by id). Below ``ingest`` and ``backfill``, above ``venues``; imports neither of the first two."""
