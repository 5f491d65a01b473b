"""Order books kept in sequence per venue, best bid/ask published as quotes.

``sync`` (venue-neutral sequencing and resync), ``feed`` (the runtime: its own link per venue),
``quotes`` (publishing). The book vocabulary (``LocalBook``, ``BookDelta``, ``BookSnapshot``) lives
in ``marketdata/venues/book.py``; each venue's book protocol (messages, parsing, sequencing rule,
REST snapshot and checksum) is its ``BookVenue`` in ``marketdata/venues/<venue>_book.py``, found
through the venue registry (``venues.book(name)``).
"""
