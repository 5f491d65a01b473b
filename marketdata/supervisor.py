"""`marketdata up`: start and supervise the local platform, or some groups of it (`--only`).

Embedded Redis (unless MARKETDATA_REDIS_URL is set), the local ClickHouse server (unless
MARKETDATA_CLICKHOUSE_URL is set; a supervised child like the others), the ClickHouse schema, the venue simulator
(for venues configured on it), one ingest process per venue, the persist worker(s), and
Dagster's webserver and daemon. `--only` runs some of these groups (up_groups.py says which
exist and what each needs); the others run elsewhere, sharing the store URLs and the config file. A process that dies is restarted with capped, jittered backoff;
one that exits with status 2 (a config error) stops the platform with its message, since
restarting cannot fix it. Ctrl-C or SIGTERM stops everything, by PID, in reverse order.
"""

from __future__ import annotations

import logging
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import orjson

from . import settings
from .bars.coverage import first_coverage_us
from .clock import hour_key, now_us
from .config import Config, load_config, simulator_endpoints_file
from .errors import ConfigError
from .datadir_lock import DataDirLock, DataDirLocked
from .backoff import Backoff
from .procs import default_signals
from .simulator.clock import parse_time_us
from .storage.clickhouse import ClickHouse, LocalClickHouse, wait_ready
from .storage.migrate import migrate
from .storage.redis import EmbeddedRedis, free_port
from .up_groups import GROUPS, persist_consumer, select_groups, select_venues

log = logging.getLogger("marketdata.up")
REPO = Path(__file__).resolve().parents[1]


@dataclass
class Child:
    name: str
    argv: list[str]
    env: dict
    log_path: Path
    critical: bool = True
    proc: subprocess.Popen | None = None
    backoff: Backoff = field(default_factory=lambda: Backoff(base=1.0, cap=60.0))
    restart_at: float = 0.0
    started_at: float = 0.0
    restarts: int = 0

    def start(self) -> None:
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        logf = open(self.log_path, "ab")
        self.proc = subprocess.Popen(self.argv, env=self.env, stdout=logf, stderr=subprocess.STDOUT,
                                     stdin=subprocess.DEVNULL, start_new_session=True, cwd=str(REPO),
                                     preexec_fn=default_signals)
        logf.close()
        self.started_at = time.monotonic()
        log.info("started %s (pid %d), log %s", self.name, self.proc.pid, self.log_path)

    def stop(self, timeout: float = 15.0) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        try:
            os.killpg(self.proc.pid, signal.SIGTERM)
        except ProcessLookupError:
            return
        try:
            self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            log.warning("%s (pid %d) did not stop in %.0fs; killing", self.name, self.proc.pid, timeout)
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait()


class Platform:
    def __init__(self, config_path: str | None, *, dagster: bool = True, dagster_port: int = 3000,
                 ground_truth: bool | None = None, groups: frozenset[str] | None = None,
                 venues: str | None = None):
        """groups: what this up runs, from `--only` (up_groups.select_groups); None: the whole
        platform, as `dagster` and the store URLs in the environment say. venues: `--venues`."""
        self.config_path = config_path
        self.ground_truth = ground_truth     # None: the config's simulator.ground_truth
        self.split = groups is not None      # one part of a platform whose other parts run elsewhere
        self.groups = groups if groups is not None else select_groups(None, os.environ, dagster=dagster)
        self.venues_arg = venues
        self.dagster_port = dagster_port
        self.redis: EmbeddedRedis | None = None
        self.clickhouse: LocalClickHouse | None = None
        self.clickhouse_child: Child | None = None
        self.children: list[Child] = []
        self.stop_event = threading.Event()
        self.exit_code = 0
        self.ui_url = ""

    def _env(self) -> dict:
        env = dict(os.environ)
        env["MARKETDATA_HOME"] = str(settings.data_dir())
        if self.config_path:
            env["MARKETDATA_CONFIG"] = str(Path(self.config_path).resolve())
        # A store this up neither runs nor has a URL for is one no child of it talks to
        # (up_groups.select_groups refused the start otherwise).
        redis_url = os.environ.get("MARKETDATA_REDIS_URL") or (self.redis.url if self.redis else "")
        clickhouse_url = os.environ.get("MARKETDATA_CLICKHOUSE_URL") or (self.clickhouse.url if self.clickhouse else "")
        for var, url in (("MARKETDATA_REDIS_URL", redis_url), ("MARKETDATA_CLICKHOUSE_URL", clickhouse_url)):
            if url:
                env[var] = url
        env["DAGSTER_HOME"] = str(settings.data_dir() / "dagster")
        env.setdefault("PYTHONUNBUFFERED", "1")
        return env

    def _cmd(self, *args: str) -> list[str]:
        return [sys.executable, "-m", "marketdata.cli", *args]

    def start(self) -> None:
        data = settings.data_dir()
        logs = data / "logs"
        groups = self.groups
        cfg: Config = load_config(self.config_path, resolve_endpoints=False)
        venues = select_venues(cfg, self.venues_arg, groups)
        # The simulator generates what it is asked for, so it is asked for listed symbols only
        # (`--listed-only`): a symbol the venue would not list fails here, like any config
        # mistake, before anything runs.
        from .simulator.listings import unlisted, unlisted_message
        for v in cfg.venues.values():
            bad = unlisted(v.name, v.symbols) if v.endpoints == "simulator" and not v.ws_url else []
            if bad:
                raise ConfigError(unlisted_message(v.name, bad))
        if "simulator" not in groups:
            self._resolve_endpoints(venues)     # nothing of this up will write them: fail before starting
        if "redis" in groups:
            self.redis = EmbeddedRedis().start()
            log.info("embedded redis-server on %s (data %s)", self.redis.url, self.redis.dir)
        if "clickhouse" in groups:
            self._start_clickhouse(logs)
        env = self._env()
        if groups & {"clickhouse", "persist", "dagster"}:
            ch = ClickHouse(env["MARKETDATA_CLICKHOUSE_URL"])
            migrate(ch)       # idempotent (IF NOT EXISTS): groups starting side by side may both apply it
            log.info("ClickHouse schema applied (%s)", ch)
            if "dagster" in groups and not env.get("MARKETDATA_BARS_START"):
                # From what every group shares: the store's first coverage and the config.
                env["MARKETDATA_BARS_START"] = bars_start_key(first_coverage_us(ch), cfg.simulator.start)
                log.info("hourly partitions begin at %s, where the data begins (set MARKETDATA_BARS_START "
                         "to list earlier hours, e.g. for a historical backfill)", env["MARKETDATA_BARS_START"])
            ch.close()
        # Demo keys follow from the config and the environment alone, so a simulator, its
        # connectors and Dagster derive the same ones wherever each of them runs.
        all_sim_venues = [v.name for v in cfg.venues.values() if v.endpoints == "simulator" and not v.ws_url]
        sim_venues = [n for n in all_sim_venues if n in venues]
        venue_env = demo_credentials(all_sim_venues)
        if "simulator" in groups:     # without it, resolved above, before anything started
            if sim_venues:
                self._start_simulator(cfg, sim_venues, venue_env, env, data, logs)
            self._resolve_endpoints(venues)
        if "persist" in groups:
            for n in range(cfg.persist.workers):
                consumer = persist_consumer(n, self.split, socket.gethostname(), str(data))
                self.children.append(Child(f"persist-{n}", self._cmd("persist", "--consumer", consumer),
                                           env, logs / f"persist-{n}.log"))
                self.children[-1].start()
        if "connectors" in groups:
            for name in venues:
                c = Child(f"ingest-{name}", self._cmd("ingest", "--venue", name),
                          {**env, **venue_env.get(name, {})}, logs / f"ingest-{name}.log")
                c.start()
                self.children.append(c)
        if "dagster" in groups:
            self._start_dagster(env, venue_env, logs)
        ran = ", ".join(g for g in GROUPS if g in groups)
        if "connectors" in groups:
            v0 = cfg.venues[venues[0]]
            print(f"marketdata is up ({ran}): {len(venues)} venue(s) {', '.join(venues)}; logs in {logs}; "
                  f"`marketdata tail {v0.name}:{v0.symbols[0]}` shows ticks, `marketdata status` each venue; "
                  "Ctrl-C stops everything.", flush=True)
        else:
            print(f"marketdata is up ({ran}); logs in {logs}; Ctrl-C stops everything.", flush=True)

    def _resolve_endpoints(self, venues: list[str]) -> None:
        """Resolve the venues' endpoints now, so a config mistake fails before any process of
        this up starts: a connector needs its own venue's; Dagster (candles, gap repair) every
        venue's. A venue on the simulator without ws_url/rest_url in the config takes them from
        the simulator's endpoints file (this data dir's, or MARKETDATA_SIM_ENDPOINTS)."""
        if "connectors" in self.groups:
            load_config(self.config_path, resolve_only=venues)
        if "dagster" in self.groups:
            load_config(self.config_path)

    def _start_simulator(self, cfg: Config, sim_venues: list[str], venue_env: dict, env: dict,
                         data: Path, logs: Path) -> None:
        """The simulator for ``sim_venues``; returns once it wrote its endpoints file (this data
        dir's, or MARKETDATA_SIM_ENDPOINTS), which connectors and Dagster elsewhere can be pointed at."""
        eps = simulator_endpoints_file()
        eps.unlink(missing_ok=True)
        sc = cfg.simulator
        argv = self._cmd("simulate", "--venues", ",".join(sim_venues), "--listed-only",
                         "--rate", str(sc.rate), "--seed", str(sc.seed), "--speed", str(sc.speed),
                         "--ping-interval", str(sc.ping_interval), "--pong-timeout", str(sc.pong_timeout),
                         "--endpoints-file", str(eps))
        if sc.history_minutes is not None:       # a bounded ring of trades: memory levels off
            argv += ["--history-minutes", str(sc.history_minutes)]
        # The ground truth grows without bound (~60 bytes a trade): only when asked (tests).
        if sc.ground_truth if self.ground_truth is None else self.ground_truth:
            argv += ["--ground-truth", str(data / "simulator" / "ground_truth.csv")]
        # Each venue generates only its own symbols (Coinbase's BTC-USD is not Binance's BTC-USDT).
        for n in sim_venues:
            argv += ["--symbols", f"{n}:{','.join(cfg.venues[n].symbols)}"]
        options = {n: dict(o) for n, o in sc.venue_options.items() if n in sim_venues}
        for n in venue_env:
            if n in sim_venues:
                options.setdefault(n, {}).update(DEMO_CREDENTIALS[n][1])
        for n, opts in options.items():
            argv += [a for k, val in opts.items()
                     for a in ("--venue-option", f"{n}.{k}={orjson.dumps(val).decode()}")]
        if sc.start:
            argv += ["--start", sc.start]
        sim = Child("simulator", argv, env, logs / "simulator.log")
        sim.start()
        self.children.append(sim)
        deadline = time.monotonic() + 30
        while not eps.exists():
            if sim.proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"the simulator did not start; see {sim.log_path}")
            time.sleep(0.1)

    def _start_dagster(self, env: dict, venue_env: dict, logs: Path) -> None:
        dhome = Path(env["DAGSTER_HOME"])
        dhome.mkdir(parents=True, exist_ok=True)
        shutil.copy(REPO / "dagster.yaml", dhome / "dagster.yaml")
        # Dagster creates pools lazily; set ours up front so the first runs already queue on it.
        subprocess.run([str(Path(sys.executable).parent / "dagster"), "instance", "concurrency", "set",
                        "clickhouse", "1"], env=env, cwd=str(REPO), stdout=subprocess.DEVNULL,
                       stderr=subprocess.DEVNULL, timeout=120, check=False, preexec_fn=default_signals)
        bin_dir = Path(sys.executable).parent
        ws = str(REPO / "workspace.yaml")
        # Dagster reconciles every venue against its candles: it needs the keys the connectors
        # got (the simulator's demo keys), through its environment, never its storage.
        env = {**env, **{k: v for creds in venue_env.values() for k, v in creds.items()}}
        port = self.dagster_port if _port_free(self.dagster_port) else free_port()
        self.children.append(Child("dagster-webserver", [str(bin_dir / "dagster-webserver"), "-w", ws,
                                                         "-h", "127.0.0.1", "-p", str(port)],
                                   env, logs / "dagster-webserver.log"))
        self.children.append(Child("dagster-daemon", [str(bin_dir / "dagster-daemon"), "run", "-w", ws],
                                   env, logs / "dagster-daemon.log"))
        for c in self.children[-2:]:
            c.start()
        self.ui_url = f"http://127.0.0.1:{port}"
        announce_ui_when_ready(self.ui_url, self.children[-2], self.stop_event)

    def _start_clickhouse(self, logs: Path) -> None:
        """The local ClickHouse server: a fixed free port for its life (a restart after a crash
        comes back at the same URL), a readiness check, then supervised like every child."""
        self.clickhouse = LocalClickHouse()
        c = Child("clickhouse", self.clickhouse.argv(), dict(os.environ, PYTHONUNBUFFERED="1"),
                  logs / "clickhouse.log")
        c.start()
        self.children.append(c)
        self.clickhouse_child = c
        wait_ready(self.clickhouse.url, 120, c.proc, c.log_path)
        log.info("local ClickHouse server on %s (data %s)", self.clickhouse.url, self.clickhouse.dir)

    def write_processes(self) -> None:
        """<data dir>/run/processes.json: what `up` runs now, for operators and tests."""
        run = settings.data_dir() / "run"
        run.mkdir(exist_ok=True)
        state = {"pid": os.getpid(), "ui": self.ui_url, "groups": [g for g in GROUPS if g in self.groups],
                 "redis": self.redis.url if self.redis else settings.redact(os.environ.get("MARKETDATA_REDIS_URL", "")),
                 "clickhouse": self.clickhouse.url if self.clickhouse else
                 settings.redact(os.environ.get("MARKETDATA_CLICKHOUSE_URL", "")),
                 "children": {c.name: {"pid": c.proc.pid if c.proc else None, "restarts": c.restarts,
                                       "log": str(c.log_path)} for c in self.children}}
        tmp = run / "processes.json.tmp"
        tmp.write_bytes(orjson.dumps(state, option=orjson.OPT_INDENT_2))
        tmp.replace(run / "processes.json")

    def supervise(self) -> None:
        self.write_processes()
        while not self.stop_event.wait(0.5):
            for c in self.children:
                if c.proc is None:
                    if time.monotonic() >= c.restart_at:
                        c.start()
                        self.write_processes()
                    continue
                rc = c.proc.poll()
                if rc is None:
                    if time.monotonic() - c.started_at > 120:
                        c.backoff.reset()
                    continue
                if rc == 2:
                    print(f"{c.name} exited with a config error; see {c.log_path}:\n"
                          + _tail(c.log_path), file=sys.stderr, flush=True)
                    self.exit_code = 2
                    self.stop_event.set()
                    break
                delay = c.backoff.next_delay()
                c.restarts += 1
                log.warning("%s (pid %d) exited with %s; restart %d in %.1fs", c.name, c.proc.pid, rc,
                            c.restarts, delay)
                c.proc = None
                c.restart_at = time.monotonic() + delay
                self.write_processes()      # operators see the crash (no pid) until the restart

    def stop(self) -> None:
        # Reverse order: Dagster and connectors first, persist after them (it drains), then
        # ClickHouse, Redis last.
        for c in reversed(self.children):
            if c.name.startswith("persist") or c is self.clickhouse_child:
                continue
            c.stop()
        for c in self.children:
            if c.name.startswith("persist"):
                c.stop()
        if self.clickhouse_child is not None:
            self.clickhouse_child.stop(timeout=60)
        if self.redis:
            self.redis.stop()
        (settings.data_dir() / "run" / "processes.json").unlink(missing_ok=True)
        log.info("all processes stopped")


# Venues that need API keys even on the simulator: (the connector's environment, the simulator's
# venue options that accept exactly those keys). Demo values, known to everyone and good for nothing
# but the local simulator; live endpoints never get them.
DEMO_CREDENTIALS = {
    "alpaca": ({"APCA_API_KEY_ID": "DEMO-SIMULATOR-KEY", "APCA_API_SECRET_KEY": "demo-simulator-secret"},
               {"key": "DEMO-SIMULATOR-KEY", "secret": "demo-simulator-secret"}),
}


def demo_credentials(sim_venues: list[str]) -> dict[str, dict[str, str]]:
    """venue -> extra environment for its connector: demo keys for simulator venues that need keys
    and have none in the environment. Keys that are set are left alone (the simulator must then be
    given them in simulator.venue_options); a venue on live endpoints gets nothing, so its missing
    keys fail its start naming the variables."""
    out = {}
    for name in sim_venues:
        if name in DEMO_CREDENTIALS:
            env_keys = DEMO_CREDENTIALS[name][0]
            if not any(os.environ.get(k, "").strip() for k in env_keys):
                out[name] = dict(env_keys)
    return out


def announce_ui_when_ready(url: str, webserver: Child, stop: threading.Event,
                           timeout: float = 600.0) -> threading.Thread:
    """Print "Dagster UI: <url>" once the webserver answers /server_info (it takes ~20 s to load
    the code location), not when its process starts; in a thread, so supervision goes on."""
    import httpx

    def wait() -> None:
        deadline = time.monotonic() + timeout
        with httpx.Client(timeout=2.0) as http:
            while not stop.is_set() and time.monotonic() < deadline:
                try:
                    if http.get(f"{url}/server_info").status_code == 200:
                        print(f"Dagster UI: {url}", flush=True)
                        return
                except httpx.HTTPError:
                    pass
                stop.wait(0.25)
        if not stop.is_set():
            log.warning("the Dagster webserver did not answer on %s within %.0fs; see %s",
                        url, timeout, webserver.log_path)

    t = threading.Thread(target=wait, name="announce-ui", daemon=True)
    t.start()
    return t


def _port_free(port: int) -> bool:
    import socket
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port))
            return True
        except OSError:
            return False


def _tail(path: Path, n: int = 20) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-n:])
    except OSError:
        return ""


def bars_start_key(first_coverage: int | None, simulator_start: str | None = None,
                   now: int | None = None) -> str:
    """The first hourly partition Dagster lists: the hour where the data begins (the first
    coverage row), else the hour the platform starts receiving (now, or the simulator's start
    when its clock begins in the past). Hours before it are "no data"; listing them from a fixed
    date made a fresh platform show thousands of "missing" partitions."""
    begins = now_us() if now is None else now
    if simulator_start:
        begins = min(begins, parse_time_us(simulator_start))
    if first_coverage is not None:
        begins = min(begins, first_coverage)
    return hour_key(begins)


def up(config_path: str | None, *, dagster: bool = True, dagster_port: int = 3000,
       ground_truth: bool | None = None, only: str | None = None, venues: str | None = None) -> int:
    """only: `--only GROUPS` (comma-separated, up_groups.GROUPS), None for the whole platform;
    venues: `--venues NAMES`, the configured venues whose simulator and connectors this up runs."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("httpx").setLevel(logging.WARNING)      # readiness polls are not news
    try:    # from the arguments and the environment alone: refused before the data dir is touched
        groups = select_groups(only, os.environ, dagster=dagster) if only is not None else None
    except ConfigError as e:
        print(f"marketdata up: {e}", file=sys.stderr, flush=True)
        return 2
    lock = own_data_dir()
    if lock is None:
        return 1
    p = Platform(config_path, dagster=dagster, dagster_port=dagster_port, ground_truth=ground_truth,
                 groups=groups, venues=venues)
    prev = {s: signal.signal(s, lambda *_: p.stop_event.set()) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        try:
            p.start()
        except ConfigError as e:
            print(f"marketdata up: config error: {e}", file=sys.stderr)
            return 2
        p.supervise()
    finally:
        p.stop()
        lock.release()
        for s, h in prev.items():
            signal.signal(s, h)
    return p.exit_code


def own_data_dir() -> DataDirLock | None:
    """Take the data dir for this platform before anything starts; None (said why) when another
    live `up` owns it, so nothing of it is touched."""
    try:
        return DataDirLock(settings.data_dir()).acquire()
    except DataDirLocked as e:
        print(f"marketdata up: {e} (each `up --only` group on one machine needs its own data dir)",
              file=sys.stderr, flush=True)
        return None
