"""Child-process helpers shared by `marketdata up`, the bench and the tests."""

from __future__ import annotations

import signal


def default_signals() -> None:
    """preexec_fn: a child must not inherit ignored SIGINT/SIGTERM (as happens under some
    launchers and CI runners), or it could not be stopped by its PID."""
    for s in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(s, signal.SIG_DFL)
