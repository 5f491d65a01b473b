"""`marketdata status`: what the platform of this data dir is doing, in one look.

Reads only what the running processes publish (the data dir's ownership lock and
``run/processes.json``, the health hashes in Redis, the persist group's position on each stream,
``system.parts`` in ClickHouse, the Dagster webserver's ``/server_info``) and never changes any of
it. Every source is read on its own, with a short timeout: when one is down the report says so and
goes on with the others. ``collect()`` returns the report as a dict (``--json`` prints it);
``render()`` prints it as text: a table with one row per venue, then the stores and the UI.
"""

from __future__ import annotations

import os
import threading
import time
from pathlib import Path
from typing import Any, Callable

import orjson

from . import settings
from .clock import now_us
from .datadir_lock import current_holder
from .ingest.health import (HealthBounds, evaluate_persist, evaluate_venue, read_persist_health,
                            read_venue_health)
from .stream import PERSIST_GROUP, STREAMS_SET, parse_stream_key, stream_key

SOURCE_TIMEOUT_S = 10.0
_STUCK: list[threading.Thread] = []     # source reads that timed out and may still be blocked


def _with_timeout(fn: Callable[[], Any], timeout: float = SOURCE_TIMEOUT_S) -> Any:
    """fn() in a daemon thread; raises TimeoutError if it does not return in time (a store that
    hangs must not hang the report)."""
    box: dict = {}

    def run() -> None:
        try:
            box["v"] = fn()
        except BaseException as e:  # noqa: BLE001 - handed to the caller
            box["e"] = e
    t = threading.Thread(target=run, daemon=True)
    t.start()
    t.join(timeout)
    if t.is_alive():
        _STUCK.append(t)
        raise TimeoutError(f"no answer within {timeout:g}s")
    if "e" in box:
        raise box["e"]
    return box.get("v")


def _err(e: BaseException) -> str:
    return f"{type(e).__name__}: {e}".strip()[:300]


def _platform(data: Path) -> dict:
    holder = current_holder(data)
    procs: dict = {}
    pf = data / "run" / "processes.json"
    if holder is not None and pf.exists():
        try:
            procs = orjson.loads(pf.read_bytes())
        except (OSError, orjson.JSONDecodeError):
            procs = {}
    return {"running": holder is not None,
            "pid": holder.pid if holder else None,
            "started": holder.started if holder else None,
            "command": holder.command if holder else None,
            "ui": procs.get("ui") or None,
            "children": procs.get("children", {})}


def _ui(url: str | None) -> dict:
    if not url:
        return {"url": None, "answering": False, "error": "not started (no Dagster in this platform)"}
    import httpx
    try:
        ok = httpx.get(f"{url}/server_info", timeout=2.0).status_code == 200
        return {"url": url, "answering": ok, "error": None if ok else "not ready"}
    except httpx.HTTPError as e:
        return {"url": url, "answering": False, "error": _err(e)}


def _configured_venues(config_path: str | None) -> tuple[dict[str, list[str]], str | None]:
    from .config import load_config
    from .errors import ConfigError
    try:
        cfg = load_config(config_path, resolve_endpoints=False)
        return {n: list(v.symbols) for n, v in cfg.venues.items()}, None
    except (ConfigError, OSError) as e:
        return {}, _err(e)


def _stream_persist_lag_s(r, key: str, now_ms: int) -> float | None:
    """Age of the oldest entry of one stream the persist group has not acknowledged (0: all
    persisted; None: the stream or the group does not exist)."""
    try:
        groups = {g["name"].decode() if isinstance(g["name"], bytes) else g["name"]: g
                  for g in r.xinfo_groups(key)}
    except Exception:  # noqa: BLE001 - no such stream
        return None
    g = groups.get(PERSIST_GROUP)
    if g is None:
        return None
    pending = r.xpending(key, PERSIST_GROUP)
    oldest: str | None = None
    if pending and pending.get("pending"):
        mid = pending["min"]
        oldest = mid.decode() if isinstance(mid, bytes) else mid
    else:
        last = g.get("last-delivered-id")
        last = last.decode() if isinstance(last, bytes) else last
        nxt = r.xrange(key, min=f"({last}", max="+", count=1)
        if nxt:
            eid = nxt[0][0]
            oldest = eid.decode() if isinstance(eid, bytes) else eid
    if oldest is None:
        return 0.0
    return round(max(0, now_ms - int(oldest.split("-")[0])) / 1000.0, 3)


def _redis(venues: dict[str, list[str]], bounds: HealthBounds, rate_window_s: float) -> dict:
    from .storage.redis import client
    out: dict[str, Any] = {"url": None, "up": False, "error": None, "used_memory_bytes": None,
                           "venues": {}, "persist": None, "streams": []}
    try:
        url = settings.redis_url()
    except RuntimeError as e:
        out["error"] = str(e)
        return out
    out["url"] = settings.redact(url)
    r = client(url, socket_connect_timeout=2, socket_timeout=5)
    try:
        mem = r.info("memory")
        out["up"] = True
        out["used_memory_bytes"] = int(mem.get("used_memory", 0))
        streams = sorted({(m.decode() if isinstance(m, bytes) else m) for m in r.smembers(STREAMS_SET)})
        out["streams"] = streams
        for key in streams:
            ex, _ = parse_stream_key(key)
            venues.setdefault(ex, [])
        names = sorted(venues)
        first = read_venue_health(r, names)
        t0 = now_us()
        evals = {v: evaluate_venue(v, first[v], t0, bounds) for v in names}
        # ticks/s: a second reading once each live venue has written its next heartbeat (1 s).
        live = [v for v in names if evals[v].status in ("ok", "lagging")]
        second = first
        deadline = time.monotonic() + rate_window_s
        while live and time.monotonic() < deadline:
            time.sleep(0.1)
            second = read_venue_health(r, names)
            if all(second[v].get("heartbeat_us") != first[v].get("heartbeat_us") for v in live):
                break
        t1 = now_us()
        now_ms = t1 // 1000
        for v in names:
            prev = evals[v].sample
            h = evaluate_venue(v, second[v], t1, bounds, prev)
            keys = [stream_key(v, s) for s in venues[v]] + [k for k in streams
                                                            if parse_stream_key(k)[0] == v]
            lags = [x for x in (_stream_persist_lag_s(r, k, now_ms) for k in dict.fromkeys(keys))
                    if x is not None]
            out["venues"][v] = {
                "status": h.status, "healthy": h.healthy, "state": h.state or None, "pid": h.pid or None,
                "connections": h.connections, "ticks_per_s": h.ticks_per_s, "lag_ms": h.lag_ms,
                "open_holes": h.open_holes, "gaps_unrepairable": h.gaps_unrepairable,
                "last_tick_us": h.last_tick_recv_us or None, "last_tick_age_s": h.last_tick_age_s,
                "persist_lag_s": max(lags) if lags else None,
                "reasons": h.reasons, "warnings": h.warnings}
        workers = read_persist_health(r)
        ph = evaluate_persist(workers, t1, bounds)
        out["persist"] = {"healthy": ph.healthy, "reasons": ph.reasons, "live_workers": len(ph.live),
                          "lag_ms": ph.lag_ms, "pending": ph.pending}
    except Exception as e:  # noqa: BLE001 - Redis down or unreachable: say so
        out["error"] = _err(e)
    finally:
        r.close()
    return out


def _clickhouse() -> dict:
    from .storage.clickhouse import ClickHouse
    out: dict[str, Any] = {"url": None, "up": False, "error": None, "tables": {}, "bytes_on_disk": None}
    try:
        url = settings.clickhouse_url()
    except settings.NotConfigured as e:
        out["error"] = str(e)
        return out
    out["url"] = settings.redact(url)
    try:
        ch = ClickHouse(url)

        def query():
            with ch.session() as c:
                return c.query(
                    "SELECT table, sum(rows), sum(bytes_on_disk) FROM system.parts "
                    "WHERE active AND database = {db:String} GROUP BY table ORDER BY table",
                    parameters={"db": ch.database}).result_rows
        rows = _with_timeout(query)
        out["up"] = True
        out["tables"] = {t: {"rows": int(n), "bytes_on_disk": int(b)} for t, n, b in rows}
        out["bytes_on_disk"] = sum(t["bytes_on_disk"] for t in out["tables"].values())
    except Exception as e:  # noqa: BLE001 - down, locked too long, or misconfigured: say so
        out["error"] = _err(e)
    return out


def _dir_bytes(path: Path) -> int:
    total = 0
    for p in path.rglob("*"):
        try:
            if p.is_file() and not p.is_symlink():
                total += p.stat().st_size
        except OSError:
            pass
    return total


def collect(config_path: str | None = None, *, rate_window_s: float = 5.0) -> dict:
    data = settings.data_dir()
    venues, config_error = _configured_venues(config_path)
    platform = _platform(data)
    report: dict[str, Any] = {"data_dir": str(data), "data_dir_bytes": _dir_bytes(data),
                              "platform": platform, "config_error": config_error,
                              "venues_configured": sorted(venues)}
    report["redis"] = _redis(venues, HealthBounds.from_env(), rate_window_s)
    report["clickhouse"] = _clickhouse()
    report["ui"] = _ui(platform["ui"]) if platform["running"] else {
        "url": None, "answering": False, "error": "the platform is not running"}
    report["healthy"] = bool(platform["running"] and report["redis"]["up"] and report["clickhouse"]["up"]
                             and report["redis"]["venues"]
                             and all(v["healthy"] for v in report["redis"]["venues"].values())
                             and (report["redis"]["persist"] or {}).get("healthy"))
    return report


# --- text ---------------------------------------------------------------------------------------

def _size(n: int | None) -> str:
    if n is None:
        return "-"
    for unit in ("B", "KB", "MB", "GB", "TB"):
        if n < 1024 or unit == "TB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return "-"


def _age(s: float | None) -> str:
    if s is None:
        return "-"
    return f"{s:.1f}s ago" if s < 120 else f"{s / 60:.0f}m ago" if s < 7200 else f"{s / 3600:.1f}h ago"


def render(rep: dict) -> str:
    lines: list[str] = []
    p = rep["platform"]
    if p["running"]:
        lines.append(f"platform: running (PID {p['pid']}, since {p['started']}); data dir {rep['data_dir']} "
                     f"({_size(rep['data_dir_bytes'])})")
    else:
        lines.append(f"platform: NOT RUNNING (no `marketdata up` owns {rep['data_dir']}); "
                     "showing what Redis and ClickHouse still hold")
    if rep.get("config_error"):
        lines.append(f"config: {rep['config_error']}")
    rd = rep["redis"]
    venues = rd["venues"]
    if venues:
        head = ("venue", "state", "ticks/s", "lag", "open holes", "last tick", "persist lag")
        rows = []
        for name, v in venues.items():
            rows.append((name, v["status"] if v["status"] != "ok" else (v["state"] or "ok"),
                         "-" if v["ticks_per_s"] is None else f"{v['ticks_per_s']:.0f}",
                         f"{v['lag_ms']:.0f} ms" if v["status"] != "missing" else "-",
                         str(v["open_holes"]) if v["status"] != "missing" else "-",
                         _age(v["last_tick_age_s"]),
                         "-" if v["persist_lag_s"] is None else f"{v['persist_lag_s']:.1f}s"))
        widths = [max(len(str(r[i])) for r in [head, *rows]) for i in range(len(head))]
        fmt = "  ".join(f"{{:{'<' if i == 0 else '>'}{w}}}" for i, w in enumerate(widths))
        lines.append("")
        lines.append(fmt.format(*head))
        lines.extend(fmt.format(*r) for r in rows)
        notes = [(n, x) for n, v in venues.items() for x in v["reasons"] + v["warnings"]]
        if notes:
            lines.append("")
            lines.extend(f"  {n}: {x}" for n, x in notes)
    elif rd["up"]:
        lines.append("venues: none configured and no stream in Redis")
    elif rep["venues_configured"]:
        lines.append(f"venues: {', '.join(rep['venues_configured'])}: unknown (their health is in Redis, "
                     "which is down)")
    lines.append("")
    if rd["up"]:
        per = rd["persist"] or {}
        lines.append(f"redis:      up, {rd['url']}, memory {_size(rd['used_memory_bytes'])}, "
                     f"{len(rd['streams'])} stream(s)")
        if per:
            state = "ok" if per["healthy"] else "; ".join(per["reasons"])
            lines.append(f"persist:    {per['live_workers']} live worker(s), lag {per['lag_ms']:.0f} ms, "
                         f"{per['pending']} pending; {state}")
    else:
        lines.append(f"redis:      DOWN ({rd['url'] or 'no URL'}): {rd['error']}")
    ch = rep["clickhouse"]
    if ch["up"]:
        tables = ", ".join(f"{t} {_size(x['bytes_on_disk'])} ({x['rows']:,} rows)" for t, x in ch["tables"].items())
        lines.append(f"clickhouse: up, {ch['url']}, {_size(ch['bytes_on_disk'])}: {tables or 'no tables'}")
    else:
        lines.append(f"clickhouse: DOWN ({ch['url']}): {ch['error']}")
    ui = rep["ui"]
    if ui["answering"]:
        lines.append(f"Dagster UI: {ui['url']}")
    else:
        lines.append(f"Dagster UI: {ui['url'] or '-'} ({ui['error']})")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    import argparse
    import sys
    ap = argparse.ArgumentParser(prog="marketdata status",
                                 description="Per venue: state, ticks/s, receive lag, open holes, last tick and "
                                             "persist lag; store sizes and the UI address. Exit 0 when the "
                                             "platform runs and everything is healthy, 1 otherwise.")
    ap.add_argument("--config", default=None, help="config file (default $MARKETDATA_CONFIG or marketdata.yaml)")
    ap.add_argument("--json", action="store_true", help="print the report as one JSON object")
    a = ap.parse_args(argv)
    rep = collect(a.config)
    if a.json:
        sys.stdout.write(orjson.dumps(rep, option=orjson.OPT_INDENT_2).decode() + "\n")
    else:
        print(render(rep))
    rc = 0 if rep["healthy"] else 1
    if any(t.is_alive() for t in _STUCK):
        # A store read that timed out may still sit in a lock wait or an engine start, and the
        # engine's exit handlers would wait for it: the report is out, so leave now.
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(rc)
    return rc
