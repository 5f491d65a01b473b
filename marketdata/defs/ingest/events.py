"""Library health/watermark results -> Dagster events (observations, check evaluations,
raw_ticks materializations). Formatting only; the judgement is in marketdata.ingest.health and
marketdata.bars.watermark."""

from __future__ import annotations

from typing import Any

import dagster as dg

from ...ingest.health import HealthBounds, PersistHealth, VenueHealth

RAW_TICKS = dg.AssetKey("raw_ticks")
INGEST_CHECK = "ingest_healthy"
PERSIST_CHECK = "persist_healthy"


def ingest_key(venue: str) -> dg.AssetKey:
    return dg.AssetKey(["ingest", venue])


def _ts(us: int) -> dg.MetadataValue | None:
    return dg.MetadataValue.timestamp(us / 1e6) if us else None


def _clean(md: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in md.items() if v is not None}


def venue_metadata(h: VenueHealth) -> dict[str, Any]:
    """Numeric metadata (plotted over time in the UI) plus the last tick and state."""
    return _clean({
        "ticks_per_s": dg.MetadataValue.float(float(h.ticks_per_s)) if h.ticks_per_s is not None else None,
        "lag_ms": dg.MetadataValue.float(float(h.lag_ms)),
        "heartbeat_age_s": (dg.MetadataValue.float(float(h.heartbeat_age_s))
                            if h.heartbeat_age_s is not None else None),
        "connections": dg.MetadataValue.int(h.connections),
        "open_holes": dg.MetadataValue.int(h.open_holes),
        "reconnects": dg.MetadataValue.int(h.reconnects),
        "malformed": dg.MetadataValue.int(h.malformed),
        "unrecognised": dg.MetadataValue.int(h.unrecognised),
        "unsequenced": dg.MetadataValue.int(h.unsequenced),
        "sequence_fallback": dg.MetadataValue.text(", ".join(h.sequence_fallback)) if h.sequence_fallback else None,
        "queued": dg.MetadataValue.int(h.queued),
        "ticks_in": dg.MetadataValue.int(h.ticks_in),
        "ticks_published": dg.MetadataValue.int(h.ticks_published),
        "gaps_found": dg.MetadataValue.int(h.gaps_found),
        "gaps_repaired": dg.MetadataValue.int(h.gaps_repaired),
        "gaps_unrepairable": dg.MetadataValue.int(h.gaps_unrepairable),
        "last_tick_age_s": (dg.MetadataValue.float(float(h.last_tick_age_s))
                            if h.last_tick_age_s is not None else None),
        "last_tick_received": _ts(h.last_tick_recv_us),
        "last_trade_time": _ts(h.last_trade_ts_us),
        "covered_to": _ts(h.covered_to_us),
        "state": dg.MetadataValue.text(h.state or h.status),
        "pid": dg.MetadataValue.int(h.pid) if h.pid else None,
        "last_error": dg.MetadataValue.text(h.last_error) if h.last_error else None,
        "silent_symbols": dg.MetadataValue.text(", ".join(h.silent_symbols)) if h.silent_symbols else None,
    })


def venue_observation(h: VenueHealth) -> dg.AssetObservation:
    return dg.AssetObservation(ingest_key(h.venue), description=h.summary(), metadata=venue_metadata(h))


def venue_check_result(h: VenueHealth, bounds: HealthBounds) -> dg.AssetCheckEvaluation:
    md = {"status": dg.MetadataValue.text(h.status),
          "stale_bound_s": dg.MetadataValue.float(float(bounds.stale_s)),
          "max_lag_bound_ms": dg.MetadataValue.float(float(bounds.max_lag_ms))}
    if h.reasons:
        md["reasons"] = dg.MetadataValue.md("\n".join(f"- {r}" for r in h.reasons))
    if h.warnings:
        md["warnings"] = dg.MetadataValue.md("\n".join(f"- {w}" for w in h.warnings))
    if h.present:
        for k in ("heartbeat_age_s", "lag_ms", "connections", "ticks_per_s", "state", "pid"):
            v = venue_metadata(h).get(k)
            if v is not None:
                md[k] = v
    return dg.AssetCheckEvaluation(asset_key=ingest_key(h.venue), check_name=INGEST_CHECK, passed=h.healthy,
                                   severity=dg.AssetCheckSeverity.ERROR, description=h.summary(), metadata=md)


def persist_metadata(p: PersistHealth) -> dict[str, Any]:
    rows = [dg.TableRecord({"consumer": w.consumer, "live": w.live, "phase": w.phase,
                            "heartbeat_age_s": w.heartbeat_age_s if w.heartbeat_age_s is not None else -1.0,
                            "pending": w.pending, "lag_ms": w.lag_ms,
                            "ticks_per_s": w.ticks_per_s if w.ticks_per_s is not None else -1.0,
                            "ticks_persisted": w.ticks_persisted, "deadletters": w.deadletters})
            for w in p.workers[:50]]
    schema = dg.TableSchema(columns=[
        dg.TableColumn("consumer", "string"), dg.TableColumn("live", "bool"), dg.TableColumn("phase", "string"),
        dg.TableColumn("heartbeat_age_s", "float", description="-1: never"),
        dg.TableColumn("pending", "int", description="entries this worker holds unacknowledged"),
        dg.TableColumn("lag_ms", "float"), dg.TableColumn("ticks_per_s", "float", description="-1: unknown yet"),
        dg.TableColumn("ticks_persisted", "int"), dg.TableColumn("deadletters", "int")])
    return _clean({
        "persist_workers_live": dg.MetadataValue.int(len(p.live)),
        "persist_pending": dg.MetadataValue.int(p.pending),
        "persist_lag_ms": dg.MetadataValue.float(float(p.lag_ms)),
        "ticks_persisted_per_s": (dg.MetadataValue.float(float(p.ticks_per_s)) if p.ticks_per_s is not None else None),
        "deadletters": dg.MetadataValue.int(sum(w.deadletters for w in p.live)),
        "workers": dg.MetadataValue.table(rows, schema=schema),
    })


def persist_observation(p: PersistHealth) -> dg.AssetObservation:
    return dg.AssetObservation(RAW_TICKS, description=persist_summary(p), metadata=persist_metadata(p))


def persist_summary(p: PersistHealth) -> str:
    if p.healthy:
        return (f"persist: {len(p.live)} live worker(s), pending {p.pending}, lag {p.lag_ms:.0f} ms")
    return "persist: UNHEALTHY: " + "; ".join(p.reasons)


def persist_check_result(p: PersistHealth, bounds: HealthBounds) -> dg.AssetCheckEvaluation:
    md = {k: v for k, v in persist_metadata(p).items() if k != "workers"}
    md["max_lag_bound_ms"] = dg.MetadataValue.float(float(bounds.persist_max_lag_ms))
    if p.reasons:
        md["reasons"] = dg.MetadataValue.md("\n".join(f"- {r}" for r in p.reasons))
    return dg.AssetCheckEvaluation(asset_key=RAW_TICKS, check_name=PERSIST_CHECK, passed=p.healthy,
                                   severity=dg.AssetCheckSeverity.ERROR, description=persist_summary(p),
                                   metadata=md)


def unreachable_check_results(venues: list[str], error: str) -> list[dg.AssetCheckEvaluation]:
    """Redis itself is unreachable: no process can publish, so every check fails, naming why."""
    md = {"status": dg.MetadataValue.text("redis_unreachable"), "reasons": dg.MetadataValue.md(f"- {error}")}
    out = [dg.AssetCheckEvaluation(asset_key=ingest_key(v), check_name=INGEST_CHECK, passed=False,
                                   severity=dg.AssetCheckSeverity.ERROR,
                                   description=f"{v}: cannot read its heartbeat: {error}", metadata=md)
           for v in venues]
    out.append(dg.AssetCheckEvaluation(asset_key=RAW_TICKS, check_name=PERSIST_CHECK, passed=False,
                                       severity=dg.AssetCheckSeverity.ERROR,
                                       description=f"persist: cannot read heartbeats: {error}", metadata=md))
    return out
