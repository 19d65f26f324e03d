"""Quote TRs: current price, daily bars (date-window paging) and intraday minute bars."""
from __future__ import annotations

import datetime as dt

import polars as pl

from broker.kis.rest import RestClient

PRICE = ("/uapi/domestic-stock/v1/quotations/inquire-price", "FHKST01010100")
DAILY = ("/uapi/domestic-stock/v1/quotations/inquire-daily-itemchartprice", "FHKST03010100")
MINUTE = ("/uapi/domestic-stock/v1/quotations/inquire-time-itemchartprice", "FHKST03010200")
DAILY_PAGE_ROWS = 100
MINUTE_PAGE_ROWS = 30
BAR_COLUMNS = ("date", "symbol", "open", "high", "low", "close", "volume")


def num(value) -> float:
    """KIS numbers are decimal strings; '' means no value."""
    if value is None or value == "":
        return float("nan")
    return float(value)


def current_price(rest: RestClient, symbol: str, market: str = "J") -> dict:
    """inquire-price `output` (all fields as KIS strings) for one symbol."""
    _check_symbol(symbol)
    reply = rest.request("GET", PRICE[0], PRICE[1],
                         params={"FID_COND_MRKT_DIV_CODE": market, "FID_INPUT_ISCD": symbol})
    return reply.out("output") or {}


def daily_bars(rest: RestClient, symbol: str, start: dt.date, end: dt.date, adjusted: bool = True,
               period: str = "D", max_pages: int = 1000, with_name: bool = False) -> pl.DataFrame:
    """Bars from `start` to `end` inclusive, oldest first, in the market/ long layout.

    KIS returns at most 100 bars per call, newest first, ending at DATE_2; the next call moves
    DATE_2 to the day before the oldest bar returned, until DATE_1 is reached or nothing comes.
    """
    _check_symbol(symbol)
    if start > end:
        raise ValueError(f"start {start} is after end {end}")
    rows: dict[str, dict] = {}
    name = ""
    upper = end
    for _ in range(max_pages):
        reply = rest.request("GET", DAILY[0], DAILY[1], params={
            "FID_COND_MRKT_DIV_CODE": "J", "FID_INPUT_ISCD": symbol,
            "FID_INPUT_DATE_1": start.strftime("%Y%m%d"), "FID_INPUT_DATE_2": upper.strftime("%Y%m%d"),
            "FID_PERIOD_DIV_CODE": period, "FID_ORG_ADJ_PRC": "0" if adjusted else "1"})
        name = name or (reply.out("output1") or {}).get("hts_kor_isnm", "")
        page = [r for r in (reply.out("output2") or []) if r and r.get("stck_bsop_date")]
        if not page:
            break
        for r in page:
            rows.setdefault(r["stck_bsop_date"], r)
        oldest = min(dt.datetime.strptime(r["stck_bsop_date"], "%Y%m%d").date() for r in page)
        if oldest <= start:
            break
        upper = oldest - dt.timedelta(days=1)
    else:
        raise RuntimeError(f"{symbol}: more than {max_pages} pages of daily bars")
    df = bars_frame(symbol, [rows[k] for k in sorted(rows)], start, end)
    return df.with_columns(pl.lit(name, dtype=pl.Utf8).alias("name")) if with_name else df


def bars_frame(symbol: str, rows: list[dict], start: dt.date | None = None, end: dt.date | None = None) -> pl.DataFrame:
    """output2 rows of the daily chart → date, symbol, open, high, low, close, volume."""
    df = pl.DataFrame({
        "date": [dt.datetime.strptime(r["stck_bsop_date"], "%Y%m%d").date() for r in rows],
        "symbol": [symbol] * len(rows),
        "open": [num(r.get("stck_oprc")) for r in rows],
        "high": [num(r.get("stck_hgpr")) for r in rows],
        "low": [num(r.get("stck_lwpr")) for r in rows],
        "close": [num(r.get("stck_clpr")) for r in rows],
        "volume": [num(r.get("acml_vol")) for r in rows],
    }, schema={"date": pl.Date, "symbol": pl.Utf8, "open": pl.Float64, "high": pl.Float64, "low": pl.Float64,
               "close": pl.Float64, "volume": pl.Float64})
    if start is not None:
        df = df.filter(pl.col("date") >= start)
    if end is not None:
        df = df.filter(pl.col("date") <= end)
    return df.sort("date")


def minute_bars(rest: RestClient, symbol: str, until: str = "153000", pages: int = 1) -> pl.DataFrame:
    """Today's one-minute bars at or before `until` (HHMMSS), newest-first pages of 30, oldest first out."""
    _check_symbol(symbol)
    rows: dict[str, dict] = {}
    hour = until
    for _ in range(pages):
        reply = rest.request("GET", MINUTE[0], MINUTE[1], params={
            "FID_ETC_CLS_CODE": "", "FID_COND_MRKT_DIV_CODE": "J", "FID_INPUT_ISCD": symbol,
            "FID_INPUT_HOUR_1": hour, "FID_PW_DATA_INCU_YN": "Y"})
        page = [r for r in (reply.out("output2") or []) if r and r.get("stck_cntg_hour")]
        if not page:
            break
        for r in page:
            rows.setdefault(r["stck_bsop_date"] + r["stck_cntg_hour"], r)
        oldest = min(r["stck_cntg_hour"] for r in page)
        t = dt.datetime.strptime(oldest, "%H%M%S") - dt.timedelta(minutes=1)
        if t.day != 1:      # went before midnight
            break
        hour = t.strftime("%H%M%S")
        if len(page) < MINUTE_PAGE_ROWS:
            break
    keys = sorted(rows)
    return pl.DataFrame({
        "time": [dt.datetime.strptime(k, "%Y%m%d%H%M%S") for k in keys],
        "symbol": [symbol] * len(keys),
        "open": [num(rows[k].get("stck_oprc")) for k in keys],
        "high": [num(rows[k].get("stck_hgpr")) for k in keys],
        "low": [num(rows[k].get("stck_lwpr")) for k in keys],
        "close": [num(rows[k].get("stck_prpr")) for k in keys],
        "volume": [num(rows[k].get("cntg_vol")) for k in keys],
    }, schema={"time": pl.Datetime, "symbol": pl.Utf8, "open": pl.Float64, "high": pl.Float64, "low": pl.Float64,
               "close": pl.Float64, "volume": pl.Float64})


def _check_symbol(symbol: str) -> None:
    if not isinstance(symbol, str) or not (len(symbol) == 6 and symbol.isalnum() or symbol.startswith("Q")):
        raise ValueError(f"not a KRX stock code (6 characters, ETN 'Q'+6): {symbol!r}")
