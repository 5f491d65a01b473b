"""What each simulated venue lists: a model of the real venue's spot listing (well-known assets
against the quote currencies the venue trades them in), so that `marketdata up` -- which asks the
simulator for exactly the configured symbols -- refuses a symbol the real venue would not list
(``NOTREAL-USDT``, Coinbase ``DOGE-USDT``) instead of inventing trades for it.

The simulator itself accepts any well-formed symbol unless run with ``listed_only`` (CLI
``--listed-only``, which `up` passes): it is a test bed, and tests need pairs no venue has.
The model is deliberately coarse (asset x quote), not a copy of any venue's live list; a live
venue's own instruments endpoint is what the connector checks against in production."""

from __future__ import annotations

# Assets every modelled crypto venue lists (large, long-listed spot assets).
COMMON_ASSETS = frozenset({
    "BTC", "ETH", "SOL", "XRP", "DOGE", "ADA", "LTC", "BCH", "DOT", "LINK", "AVAX", "TRX", "XLM", "ATOM",
    "UNI", "ETC", "FIL", "NEAR", "APT", "ARB", "OP", "SHIB", "PEPE", "AAVE", "ALGO", "SUI", "TON", "POL",
})
# Extra assets (exchange tokens, delisted or halted pairs the simulators model) per venue.
VENUE_ASSETS = {
    "binance": {"BNB", "BCC", "FDUSD"},
    "okx": {"OKB", "BSV"},
    "kucoin": {"KCS", "BSV"},
    "kraken": {"XMR", "ZEC", "XTZ"},
    "coinbase": {"UST"},
    "bybit": {"MNT", "LUNA"},
    "bitfinex": {"LEO", "XMR"},
    "gateio": {"GT", "LUNA"},
    "bitstamp": {"LUNA"},
}
# Quote currencies per venue (spot).
QUOTES = {
    "binance": ("USDT", "USDC", "FDUSD", "BTC", "ETH", "EUR"),
    "okx": ("USDT", "USDC", "BTC", "ETH", "EUR"),
    "kucoin": ("USDT", "USDC", "BTC", "ETH"),
    "kraken": ("USD", "EUR", "GBP", "USDT", "USDC", "BTC", "ETH"),
    "coinbase": ("USD", "EUR", "GBP", "USDC", "BTC"),
    "bybit": ("USDT", "USDC", "BTC", "EUR"),
    "bitfinex": ("USD", "USDT", "EUR", "GBP", "BTC", "ETH"),
    "gateio": ("USDT", "USDC", "BTC", "ETH"),
    "bitstamp": ("USD", "EUR", "GBP", "USDT", "USDC", "BTC"),
}
# Fiat and stablecoin pairs the venues list although neither side is a "common asset".
EXTRA_PAIRS = {
    "coinbase": {"USDT-USD", "USDT-EUR", "BTC-USDT", "ETH-USDT", "SOL-USDT"},
    "kraken": {"USDT-USD", "USDC-USD", "EUR-USD", "GBP-USD"},
    "bitstamp": {"EUR-USD", "GBP-USD", "USDT-USD", "USDC-USD", "USDT-EUR"},
    "bitfinex": {"USDT-USD"},
}
_TICKER_CHARS = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZ.")


def is_listed(venue: str, symbol: str) -> bool:
    """Whether the modelled venue lists canonical ``symbol`` (BASE-QUOTE)."""
    base, _, quote = symbol.upper().partition("-")
    if venue == "alpaca":       # US equities quoted in USD: any plausible ticker
        return quote == "USD" and 1 <= len(base) <= 5 and set(base) <= _TICKER_CHARS
    if venue not in QUOTES:
        return True             # a venue without a model lists what it is given
    if symbol.upper() in EXTRA_PAIRS.get(venue, ()):
        return True
    assets = COMMON_ASSETS | VENUE_ASSETS.get(venue, set())
    return base in assets and quote in QUOTES[venue] and base != quote


def unlisted(venue: str, symbols: list[str]) -> list[str]:
    return [s for s in symbols if not is_listed(venue, s)]


def examples(venue: str, n: int = 12) -> list[str]:
    """Some symbols the modelled venue lists, for error messages."""
    if venue == "alpaca":
        return ["AAPL-USD", "MSFT-USD", "NVDA-USD"]
    quotes = QUOTES.get(venue, ("USDT",))
    picks = ["BTC", "ETH", "SOL", "XRP", "DOGE", "ADA"]
    return [f"{b}-{q}" for q in quotes[:2] for b in picks][:n]


def unlisted_message(venue: str, symbols: list[str]) -> str:
    return (f"{venue}: symbol(s) {', '.join(symbols)} not listed by the venue (the simulator lists what the "
            f"real venue would: well-known assets against {', '.join(QUOTES.get(venue, ('USD',)))}); fix "
            f"venues.{venue}.symbols in the config. Listed are e.g. {', '.join(examples(venue))}")
