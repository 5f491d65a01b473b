"""Child-process helpers shared by `marketdata up`, the bench and the tests."""

from __future__ import annotations

import signal
import subprocess


def default_signals() -> None:
    """preexec_fn: a child must not inherit ignored SIGINT/SIGTERM (as happens under some
    launchers and CI runners), or it could not be stopped by its PID."""
    for s in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(s, signal.SIG_DFL)


def terminate(proc: subprocess.Popen, timeout: float = 30.0) -> int:
    """Stop a child by its PID: SIGTERM, then SIGKILL if it has not exited within ``timeout``."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    return proc.returncode
