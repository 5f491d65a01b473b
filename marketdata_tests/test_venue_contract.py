"""The venue contract (venues/base.py): every registered venue fills in what its declared
capabilities need, options are typed and validated at config load, and the runtime's consumers
read the same rules from it (the gap repair used to ignore Kraken v1's sequence rules that the
connector honoured)."""

from __future__ import annotations

import pytest

from marketdata import venues
from marketdata.backfill.repair import can_repair_by_time, repair_rules
from marketdata.config import VenueConfig, parse_config
from marketdata.errors import ConfigError
from marketdata.ingest.connector import VenueConnector
from marketdata.tick import EXCHANGES
from marketdata.venues.base import BookVenue, Venue, VenueOptions

# every option variant that changes a venue's behaviour, plus each venue's defaults
OPTION_VARIANTS = [(name, {}) for name in venues.names()] + [
    ("kraken", {"protocol": "v1"}), ("binance", {"trade_stream": "aggTrade"}), ("okx", {"channel": "trades-all"})]


def _given(venue: type, base: type, member: str) -> bool:
    """The venue fills in ``member`` itself (it is not the contract's placeholder)."""
    return getattr(venue, member) is not getattr(base, member)


def test_the_registry_holds_every_platform_venue_and_its_books():
    assert venues.names() == list(EXCHANGES)
    for name in venues.names():
        v = venues.get(name)
        assert issubclass(v, Venue) and v.NAME == name
    assert venues.book_names() == ["binance", "okx", "kucoin", "kraken"]
    for name in venues.book_names():
        b = venues.book(name)
        assert issubclass(b, BookVenue) and b.NAME == name
        assert b.Options is venues.get(name).Options       # one `options:` per venue in the config
    with pytest.raises(ValueError, match="coinbase has no order-book support; venues with books: binance"):
        venues.book("coinbase")
    with pytest.raises(KeyError, match="unknown venue 'nope'"):
        venues.get("nope")


@pytest.mark.parametrize("name", venues.names())
def test_each_venue_fills_in_what_its_capabilities_need(name):
    v = venues.get(name)
    assert v.LIVE_WS_URL.startswith("wss://") and v.LIVE_REST_URL.startswith("https://")
    for member in ("connect_url", "subscribe_messages", "instruments_request", "parse_instruments",
                   "to_venue_symbol", "parse_candles"):
        assert _given(v, Venue, member), member
    assert v.candles_request is not None and isinstance(v.Parser, type)
    assert v.REPAIR_BY in ("id", "time", None)
    if v.REPAIR_BY == "id":
        assert _given(v, Venue, "history_by_id_request") and _given(v, Venue, "parse_history")
    if v.REPAIR_BY == "time":
        assert v.history_by_time_request is not None and _given(v, Venue, "parse_history_page")
    if v.first_id_request is not None:
        assert _given(v, Venue, "first_id_at")
    if v.session_request is not None:
        assert _given(v, Venue, "parse_session")
    if v.server_time_request is not None:
        assert _given(v, Venue, "parse_server_time")
    assert isinstance(v.Options(), VenueOptions)


@pytest.mark.parametrize("name", venues.names())
def test_each_venue_says_how_it_is_backfilled_or_why_not(name):
    v = venues.get(name)
    assert v.BACKFILL_BY in ("id", "time", None)
    if v.BACKFILL_BY == "id":
        assert v.first_id_request is not None or v.head_request is not None
        assert _given(v, Venue, "history_by_id_request") and _given(v, Venue, "parse_history")
    elif v.BACKFILL_BY == "time":
        assert v.history_by_time_request is not None and _given(v, Venue, "parse_history_page")
    else:
        assert v.NO_BACKFILL != Venue.NO_BACKFILL, "a refused venue says why"


@pytest.mark.parametrize("name", venues.book_names())
def test_each_book_venue_fills_in_its_snapshot_source(name):
    b = venues.book(name)
    for member in ("connect_url", "subscribe_messages", "instruments_request", "parse_instruments", "stale",
                   "aligns", "continues"):
        assert _given(b, BookVenue, member), member
    assert b.SNAPSHOT_FROM in ("ws", "rest")
    if b.SNAPSHOT_FROM == "rest":
        assert _given(b, BookVenue, "snapshot_request") and _given(b, BookVenue, "parse_snapshot")
    else:
        assert _given(b, BookVenue, "resubscribe_messages")


def test_a_member_the_contract_does_not_declare_fails_at_import():
    class Newcomer(Venue):
        NAME = "newcomer"

    def conect_url(base, venue_symbols, options, session=None):      # the typo is the point
        return base

    with pytest.raises(TypeError, match="conect_url is not a member of the venue contract"):
        Newcomer.member(conect_url)

    def connect_url(base, venue_symbols, options, session=None):
        return base + "/ws"

    assert Newcomer.member(connect_url) is connect_url
    assert Newcomer.connect_url("wss://x", [], Newcomer.Options()) == "wss://x/ws"
    assert Venue.connect_url is not Newcomer.connect_url


def test_options_are_typed_and_validated_at_config_load():
    venue = {"symbols": ["BTC-USDT"], "ws_url": "ws://x", "rest_url": "http://x"}
    cfg = parse_config({"venues": {"binance": {**venue, "options": {"trade_stream": "aggTrade"}}}},
                       resolve_endpoints=False)
    opts = cfg.venues["binance"].options
    assert opts.trade_stream == "aggTrade" and dict(opts) == {"trade_stream": "aggTrade"}
    assert venues.get("binance").validate_options(dict(opts)) == opts      # travels as a mapping and back
    with pytest.raises(ConfigError, match=r"venues\.binance\.options: unknown option\(s\) \['stream'\]; "
                                          r"valid: \['trade_stream'\]"):
        parse_config({"venues": {"binance": {**venue, "options": {"stream": "trade"}}}}, resolve_endpoints=False)
    with pytest.raises(ConfigError, match=r"venues\.okx\.options: ping_interval must be a number of seconds "
                                          r"in \(0, 30\), not 45"):
        parse_config({"venues": {"okx": {**venue, "options": {"ping_interval": 45}}}}, resolve_endpoints=False)
    with pytest.raises(ConfigError, match=r"venues\.coinbase\.options: unknown option\(s\) \['x'\]; "
                                          r"coinbase takes none"):
        parse_config({"venues": {"coinbase": {**venue, "options": {"x": 1}}}}, resolve_endpoints=False)


@pytest.mark.parametrize("name, options", OPTION_VARIANTS)
def test_repair_reads_the_sequence_rules_the_connector_reads(name, options):
    """The drift this guards: the connector took Kraken v1's rules from ``sequence_rules(options)``
    (no sequential ids) while the gap repair read the module's constants (sequential)."""
    cfg = VenueConfig(name, ["BTC-USDT"], "ws://127.0.0.1:9", "http://127.0.0.1:9", options=options)
    conn = VenueConnector(cfg)
    assert repair_rules(venues.get(name), cfg.options) == (conn.sequential, conn.repair_by)


def test_kraken_v1_rules_in_the_repair():
    kraken = venues.get("kraken")
    v1, v2 = kraken.Options(protocol="v1"), kraken.Options()
    assert repair_rules(kraken, v1) == (False, "time") and repair_rules(kraken, v2) == (True, "time")
    assert can_repair_by_time(kraken, v1) and can_repair_by_time(kraken, v2)
    bitstamp = venues.get("bitstamp")
    assert repair_rules(bitstamp, bitstamp.Options()) == (False, None)
    assert not can_repair_by_time(bitstamp, bitstamp.Options())
