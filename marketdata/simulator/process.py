"""Run the simulator as a separate OS process (own interpreter, own GIL) and talk to it over HTTP.

    with SimulatorProcess(SimulatorConfig(...)) as proc:
        proc.endpoints["binance"]["ws"]
        proc.fault("binance", "abort")
        proc.stats("binance")
"""

from __future__ import annotations

import json
import os
import selectors
import subprocess
import sys
import time
from datetime import datetime
from typing import Any

from ..procs import terminate

import httpx

from .core import SimulatorConfig


def config_to_argv(cfg: SimulatorConfig) -> list[str]:
    """CLI arguments equivalent to ``cfg`` (``ports`` is not expressible; use ``port``)."""

    def t(v: Any) -> str:
        return v.isoformat() if isinstance(v, datetime) else str(v)

    argv = ["--venues", ",".join(cfg.venues), "--rate", repr(float(cfg.rate)), "--seed", str(cfg.seed),
            "--speed", repr(float(cfg.speed)), "--host", cfg.host, "--port", str(cfg.port),
            "--ping-interval", repr(float(cfg.ping_interval)), "--pong-timeout", repr(float(cfg.pong_timeout)),
            "--slice-ms", repr(float(cfg.slice_ms)), "--max-send-buffer", str(int(cfg.max_send_buffer))]
    if isinstance(cfg.symbols, dict):
        for v, syms in cfg.symbols.items():
            argv += ["--symbols", f"{v}:{','.join(syms)}"]
    else:
        argv += ["--symbols", ",".join(cfg.symbols)]
    for v, r in cfg.rates.items():
        argv += ["--venue-rate", f"{v}={r}"]
    for s, w in cfg.symbol_weights.items():
        argv += ["--symbol-weight", f"{s}={w}"]
    if cfg.start is not None:
        argv += ["--start", t(cfg.start)]
    if cfg.end is not None:
        argv += ["--end", t(cfg.end)]
    if cfg.ground_truth:
        argv += ["--ground-truth", os.fspath(cfg.ground_truth)]
    if cfg.history_s is not None:
        argv += ["--history-minutes", repr(cfg.history_s / 60)]
    for v, opts in cfg.venue_options.items():
        for k, val in opts.items():
            argv += ["--venue-option", f"{v}.{k}={json.dumps(val)}"]
    if cfg.paused:
        argv.append("--paused")
    if not cfg.use_uvloop:
        argv.append("--no-uvloop")
    return argv


class SimulatorProcess:
    """``python -m marketdata.simulator`` as a child process.

    ``start()`` waits for the endpoints line; ``stop()`` sends SIGTERM (the simulator flushes its
    ground truth and exits 0) and returns the exit code.
    """

    def __init__(self, config: SimulatorConfig | None = None, argv: list[str] | None = None,
                 env: dict[str, str] | None = None, stderr=None) -> None:
        if (config is None) == (argv is None):
            raise ValueError("give exactly one of config or argv")
        self.argv = config_to_argv(config) if config is not None else list(argv or [])
        self.env = env
        self.stderr = stderr
        self.proc: subprocess.Popen | None = None
        self.endpoints: dict[str, dict[str, str]] = {}
        self._http = httpx.Client(timeout=10.0)

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc else None

    def start(self, timeout: float = 30.0) -> "SimulatorProcess":
        cmd = [sys.executable, "-m", "marketdata.simulator", *self.argv]
        self.proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=self.stderr, env=self.env, text=True)
        sel = selectors.DefaultSelector()
        sel.register(self.proc.stdout, selectors.EVENT_READ)
        deadline = time.monotonic() + timeout
        try:
            while True:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise TimeoutError("simulator process printed no endpoints")
                if sel.select(left):
                    line = self.proc.stdout.readline()
                    if not line:
                        raise RuntimeError(f"simulator process exited with {self.proc.wait()}")
                    self.endpoints = json.loads(line)
                    return self
        except BaseException:
            self.kill()
            raise
        finally:
            sel.close()

    def stop(self, timeout: float = 30.0) -> int | None:
        if self.proc is None:
            return None
        terminate(self.proc, timeout)
        if self.proc.stdout:
            self.proc.stdout.close()
        self._http.close()
        return self.proc.returncode

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()

    def __enter__(self) -> "SimulatorProcess":
        return self.start()

    def __exit__(self, *exc: Any) -> None:
        self.stop()

    # control API over HTTP -----------------------------------------------------------------------
    def _url(self, venue: str, path: str) -> str:
        return self.endpoints[venue]["rest"] + path

    def fault(self, venue: str, kind: str, **params: Any) -> dict[str, Any]:
        r = self._http.post(self._url(venue, "/_sim/fault"), json={"kind": kind, **params})
        body = r.json()
        if r.status_code != 200:
            raise ValueError(body.get("error", r.text))
        return body["fault"]

    def stats(self, venue: str) -> dict[str, Any]:
        return self._http.get(self._url(venue, "/_sim/stats")).json()

    def flush(self, venue: str) -> dict[str, Any]:
        return self._http.post(self._url(venue, "/_sim/flush")).json()

    def pause(self, venue: str) -> None:
        self._http.post(self._url(venue, "/_sim/pause")).raise_for_status()

    def resume(self, venue: str) -> None:
        self._http.post(self._url(venue, "/_sim/resume")).raise_for_status()

    def book(self, venue: str, symbol: str, depth: int | None = None) -> dict[str, Any]:
        params: dict[str, Any] = {"symbol": symbol}
        if depth is not None:
            params["depth"] = depth
        r = self._http.get(self._url(venue, "/_sim/book"), params=params)
        r.raise_for_status()
        return r.json()
